"""One real cell end to end, and nothing left running on success, exception or Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from connbench.run.matrix import MatrixRunner
from connbench.scenario import expand as sc
from connbench.services.cleanup import cleanup_recorded
from tests.support import CLI, ROOT, assert_no_leftovers, read_json, scenario_text, write_scenario

pytestmark = [pytest.mark.e2e, pytest.mark.beside_others]


STOP_BOUND_S = 60


def test_ctrl_c_mid_cell_stops_everything(tmp_path, run_dir):
    scen = write_scenario(tmp_path / "long.toml", scenario_text(duration=60, warmup=0))
    # PYTHONFAULTHANDLER: should the harness hang, SIGABRT makes it print where every thread is
    proc = subprocess.Popen([*CLI, "run", str(scen), "--run-dir", str(run_dir), "--no-report"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONFAULTHANDLER": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    events = run_dir / "cells" / "default" / "events.csv"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "phase_begin:measure" not in (events.read_text() if events.exists() else ""):
        time.sleep(0.2)
    time.sleep(1.0)
    began = "phase_begin:measure" in (events.read_text() if events.exists() else "")
    t_sigint = time.monotonic()
    proc.send_signal(signal.SIGINT)
    # Sent from a process that ignores SIGINT (a shell's background job, as CI may be): the harness
    # must still take it (its first CI rehearsals ran the 60 s cell to its end instead).
    try:
        out, err = proc.communicate(timeout=STOP_BOUND_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        out, err = proc.communicate(timeout=30)
        cleanup_recorded(run_dir / "pids.json")  # the aborted harness could not stop its children
        pytest.fail(f"no clean stop within {STOP_BOUND_S} s of SIGINT (measure had begun: {began}); "
                    f"where it hung:\n{err[-8000:]}")
    print(f"stopped {time.monotonic() - t_sigint:.1f} s after SIGINT")
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert_no_leftovers(run_dir)
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["status"] == "interrupted" and manifest["ended"]
    assert read_json(run_dir / "cells" / "default" / "cell.json")["status"] == "interrupted"
    assert not (run_dir / "pids.json").exists()


def test_exception_in_a_cell_fails_it_and_stops_its_processes(tmp_path, run_dir, monkeypatch):
    from connbench.services import locust

    def boom(*_a, **_kw):
        raise RuntimeError("injected failure after services started")

    monkeypatch.setattr(locust, "wait_started", boom)
    scen = sc.load(write_scenario(tmp_path / "s.toml", scenario_text()))
    code = MatrixRunner(scen, run_dir).run()
    assert code == 1
    doc = read_json(run_dir / "cells" / "default" / "cell.json")
    assert doc["status"] == "failed" and "injected failure" in doc["error"]
    assert "start_services" in doc["phases"] and "stop" in doc["phases"]
    assert read_json(run_dir / "manifest.json")["cells"][0]["status"] == "failed"
    assert_no_leftovers(run_dir)


def test_harness_crash_outside_a_cell_stops_everything(tmp_path, run_dir, monkeypatch):
    def boom(self, doc):
        raise RuntimeError("harness bug")

    monkeypatch.setattr(MatrixRunner, "_record", boom)
    scen = sc.load(write_scenario(tmp_path / "s.toml", scenario_text(duration=2)))
    with pytest.raises(RuntimeError, match="harness bug"):
        MatrixRunner(scen, run_dir).run()
    assert read_json(run_dir / "manifest.json")["status"] == "crashed"
    assert_no_leftovers(run_dir)
