"""`run --resume DIR` touches nothing before DIR is proven a run; deletion never follows a
link and removes only what the harness marked; only this run's process groups are signalled."""

from __future__ import annotations

import json
import os
import subprocess
import time

import psutil
import pytest

from connbench import results as R
from connbench.redact import redact_argv
from connbench.services.cleanup import cleanup_recorded
from connbench.services.procs import RUN_ENV, Supervisor, remove_service_dir, service_dir
from tests.support import ROOT, run_cli

SMOKE = str(ROOT / "scenarios" / "smoke.toml")


def tree(path) -> dict:
    """Every path below `path` with its content (files) or link target: what must survive."""
    out = {}
    for root, dirs, files in os.walk(path, followlinks=False):
        for name in dirs + files:
            p = os.path.join(root, name)
            out[os.path.relpath(p, path)] = (os.readlink(p) if os.path.islink(p) else
                                            open(p, "rb").read() if os.path.isfile(p) else "dir")
    return out


@pytest.fixture
def precious(tmp_path):
    """A directory that is no run: a pg/ with data, and a pg link to someone else's directory."""
    plain = tmp_path / "plain"
    (plain / "pg" / "data").mkdir(parents=True)
    (plain / "pg" / "data" / "PG_VERSION").write_text("18\n")
    (plain / "pids.json").write_text(json.dumps({"run": str(plain), "processes": []}))
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "important.txt").write_text("keep me\n")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "pg").symlink_to(theirs)
    return tmp_path


@pytest.mark.parametrize("which", ["plain", "linked"])
def test_resume_on_a_directory_that_is_no_run_touches_nothing(precious, which):
    before = tree(precious)
    res = run_cli("run", SMOKE, "--resume", str(precious / which), timeout=60)
    assert res.returncode == 2, res.stderr
    assert "not a connbench run" in res.stderr and "Traceback" not in res.stderr
    assert tree(precious) == before


@pytest.mark.parametrize("manifest", ["{not json", "[1, 2]", '{"cells": "x"}', "\udcff"])
def test_resume_with_a_corrupt_manifest_is_a_clean_error(precious, manifest):
    target = precious / "plain"
    (target / "manifest.json").write_text(manifest, errors="surrogateescape")
    before = tree(precious)
    res = run_cli("run", SMOKE, "--resume", str(target), timeout=60)
    assert res.returncode == 2 and "manifest" in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert tree(precious) == before


def test_resume_of_another_scenarios_run_touches_nothing(precious):
    target = precious / "plain"
    R.Manifest(run_id="plain", started=0.0, scenario_hash="0" * 16).dump(target / "manifest.json")
    before = tree(precious)
    res = run_cli("run", SMOKE, "--resume", str(target), timeout=60)
    assert res.returncode == 2 and "changed since" in res.stderr, res.stderr
    assert tree(precious) == before


def test_remove_service_dir_deletes_only_what_this_run_marked(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "f").write_text("x")
    (run / "pg").symlink_to(theirs)
    (run / "pgbouncer").mkdir()
    (run / "pgbouncer" / "f").write_text("x")
    remove_service_dir(run, "pg")
    remove_service_dir(run, "pgbouncer")
    assert (theirs / "f").exists() and (run / "pg").is_symlink() and (run / "pgbouncer" / "f").exists()
    with pytest.raises(Exception, match="did not create"):
        service_dir(run, "pg", None)  # nor does it write into someone else's directory
    ours = service_dir(run, "mine", None)
    inner = ours / "link-to-theirs"
    inner.symlink_to(theirs)
    remove_service_dir(run, "mine")
    assert not ours.exists() and (theirs / "f").exists()  # rmtree removed the link, not its target


def test_cleanup_signals_only_this_runs_groups(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    pids = run / "pids.json"
    sup = Supervisor(pids)
    ours = sup.spawn("sleeper", ["sleep", "60"], log=run / "sleep.log")
    foreign = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        doc = json.loads(pids.read_text())
        doc["processes"].append({"name": "foreign", "pgid": foreign.pid,
                                 "create_time": psutil.Process(foreign.pid).create_time()})
        pids.write_text(json.dumps(doc))  # as if the file had been edited or the pid reused
        killed = cleanup_recorded(pids)
        assert killed == [f"sleeper (pgid {ours.pid})"]
        ours.wait(timeout=10)
        time.sleep(0.2)
        assert foreign.poll() is None  # not this run's: left alone
    finally:
        foreign.kill()
        foreign.wait()
        ours.kill() if ours.poll() is None else None


def test_cleanup_finds_a_child_spawned_just_before_the_kill_by_its_mark(tmp_path):
    """The harness SIGKILLed between starting a process and recording it: the run's mark still finds it."""
    run = tmp_path / "run"
    run.mkdir()
    pids = run / "pids.json"
    Supervisor(pids)._record()  # pids.json of this run, with nothing recorded in it
    mark = json.loads(pids.read_text())["run"]
    unrecorded = subprocess.Popen(["sleep", "60"], start_new_session=True, env={**os.environ, RUN_ENV: mark})
    other_run = subprocess.Popen(["sleep", "60"], start_new_session=True,
                                 env={**os.environ, RUN_ENV: str(tmp_path / "another-run")})
    try:
        psutil.Process(unrecorded.pid).environ()  # exec done: its environment is readable
        killed = cleanup_recorded(pids)
        assert killed == [f"sleep (pgid {unrecorded.pid})"]
        unrecorded.wait(timeout=10)
        time.sleep(0.2)
        assert other_run.poll() is None  # another run's mark: left alone
    finally:
        for p in (unrecorded, other_run):
            if p.poll() is None:
                p.kill()
            p.wait()


@pytest.mark.parametrize("given, shown", [
    ("postgresql://app:s3cr%40t@127.0.0.1:5432/db", "postgresql://app:***@127.0.0.1:5432/db"),
    ("host=127.0.0.1 user=app password=hunter2 dbname=x", "host=127.0.0.1 user=app password=*** dbname=x"),
    ("host=h password='a b c' user=app", "host=h password=*** user=app"),
    ("postgresql://app@127.0.0.1/db?password=hunter2&sslmode=disable",
     "postgresql://app@127.0.0.1/db?password=***&sslmode=disable"),
])
def test_passwords_on_the_command_line_never_reach_the_manifest(given, shown):
    assert redact_argv(["connbench", "probe", "--database-url", given])[-1] == shown


def test_stop_all_also_stops_a_child_it_never_registered(tmp_path):
    """Ctrl-C between Popen and the registration: the run's mark still lets stop_all find the child."""
    run = tmp_path / "run"
    run.mkdir()
    sup = Supervisor(run / "pids.json")
    known = sup.spawn("sleeper", ["sleep", "60"], log=run / "sleep.log")
    unregistered = subprocess.Popen(["sleep", "60"], start_new_session=True,
                                    env={**os.environ, RUN_ENV: sup.run_mark})
    try:
        psutil.Process(unregistered.pid).environ()
        sup.stop_all()
        assert known.poll() is not None
        assert unregistered.wait(timeout=10) is not None
    finally:
        for p in (known, unregistered):
            if p.poll() is None:
                p.kill()
                p.wait()
