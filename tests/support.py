"""Shared test helpers: run the real CLI, and prove that nothing a run started or made outlived it.

Every e2e run goes through `RunFactory` (tests/e2e/conftest.py hands one out per session): it writes the
scenario, runs the real CLI, checks the exit code, then asserts that no harness process and no private
directory (the run's credentials) is left, and returns the parsed run.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "connbench.cli"]
# Command-line marks of every process the harness starts.
MARKS = ("connbench.target_app.wsgi:application", "connbench.target_app.asgi:application", "locustfiles/app.py",
         "connbench.sampler",
         "pgbouncer.ini", "connbench.services.gunicorn_hooks", "locustfiles/logonly.py")


def harness_processes(extra_marks: tuple[str, ...] = ()) -> list[str]:
    """Harness processes started by this test session: every process the harness spawns inherits the
    session's private root in its environment, so a module running beside this one (make test runs some two
    at a time) is never taken for a leftover of this one."""
    me, mine = os.getpid(), os.environ.get(PRIVATE_ENV)
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        if p.info["pid"] == me:
            continue
        cmd = " ".join(p.info["cmdline"] or [])
        if not any(m in cmd for m in MARKS + extra_marks) or "pytest" in cmd:
            continue
        if mine and not _session_of(p, mine):
            continue
        found.append(f"{p.info['pid']}: {cmd[:160]}")
    return found


def _session_of(proc: psutil.Process, mine: str) -> bool:
    try:
        return proc.environ().get(PRIVATE_ENV) == mine
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # not ours to read: count it, a leftover must not hide
        return True


PRIVATE_ENV = "CONNBENCH_PRIVATE_ROOT"  # where runs make their private directories; the e2e session watches one


def watched_private_root() -> Path:
    """A directory every run of the session makes its private directory in, so leftovers can be seen.
    Under /tmp and 0755: the service user must get into it (pytest's own tmp is 0700)."""
    root = Path(tempfile.mkdtemp(prefix="cbtest-private-"))
    os.chmod(root, 0o755)
    return root


def private_leftovers() -> list[str]:
    root = os.environ.get(PRIVATE_ENV)
    return [str(p) for p in Path(root).glob("connbench-private-*")] if root else []


def assert_no_leftovers(run_dir: Path, timeout: float = 10.0) -> None:
    """Nothing started or made for this run survives: postgres (its -D is under run_dir), the rest of the
    processes, and the private directory with the run's credentials."""
    deadline = time.monotonic() + timeout
    while True:
        left = harness_processes((str(run_dir),))
        private = private_leftovers()
        if not (left or private) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not left, "processes left behind:\n" + "\n".join(left)
    assert not private, "private directories left behind: " + ", ".join(private)


def run_cli(*args: str, timeout: float = 600, check: bool = False, env: dict | None = None,
            cwd: Path = ROOT) -> subprocess.CompletedProcess:
    res = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                         env=None if env is None else {**os.environ, **env})
    if check and res.returncode != 0:
        raise AssertionError(f"connbench {' '.join(args)} exited {res.returncode}\n{res.stdout}\n{res.stderr}")
    return res


def write_scenario(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def cell_data(run_dir: Path, cell_id: str):
    """A cell's documents and raw files as analysis reads them (analysis/load.py): one reader, not one per test."""
    from connbench.analysis.load import load_run

    cell = next((c for c in load_run(run_dir).cells if c.cell_id == cell_id), None)
    assert cell is not None, f"no cell {cell_id} in {run_dir}"
    return cell


def held_from(series: pd.Series, value) -> float | None:
    """The first sample time from which `series` (indexed by sample time) equals `value` to its end."""
    series = series.sort_index()
    if len(series) == 0 or series.iloc[-1] != value:
        return None
    off = series.index[(series != value).to_numpy()]
    return float(series.index[0] if len(off) == 0 else series.index[series.index > off[-1]][0])


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


SMOKE = """
[scenario]
name = "{name}"
[defaults]
dynos = {dynos}
workers = {workers}
threads = {threads}
worker_class = "{worker_class}"
conn_max_age = {conn_max_age}
pooling = "{pooling}"
users = {users}
spawn_rate = {users}
warmup = {warmup}
duration = {duration}
cooldown = {cooldown}
"""


def scenario_text(**kw) -> str:
    base = dict(name="t", dynos=1, workers=2, threads=1, worker_class="sync", conn_max_age=60, pooling="direct",
                users=4, warmup=1, duration=5, cooldown=1)
    base.update(kw)
    if isinstance(base["conn_max_age"], str):
        base["conn_max_age"] = f'"{base["conn_max_age"]}"'
    return SMOKE.format(**base)


def assert_smoke_run(run_dir, stdout: str) -> None:
    """What one completed smoke cell leaves: the manifest, the cell's phases, every request logged raw and
    answered, Locust's own files, the summary and the report (its path the last line on stdout), and no
    cluster or credential left behind."""
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["status"] == "completed"
    assert [c["status"] for c in manifest["cells"]] == ["completed"]
    assert manifest["versions"]["postgresql"].startswith("postgres (PostgreSQL) 18")
    cell_dir = run_dir / "cells" / manifest["cells"][0]["cell_id"]
    doc = read_json(cell_dir / "cell.json")
    assert doc["status"] == "completed" and doc["params"]["workers"] == 2
    assert set(doc["phases"]) == {"start_services", "verify", "warmup", "measure", "cooldown", "stop"}
    with open(cell_dir / "requests.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) > 50
    assert all(r["status"] == "200" and r["error_class"] == "" for r in rows)
    assert (cell_dir / "locust" / "report.html").stat().st_size > 10_000
    assert (cell_dir / "locust" / "stats_stats.csv").exists()
    assert (cell_dir / "locust" / "stats.json").exists()
    last = stdout.strip().splitlines()[-1]
    assert last.endswith("index.html") and (run_dir / "index.html").exists()
    summary = (run_dir / "summary.csv").read_text().strip().splitlines()
    assert len(summary) == 1 + len(manifest["cells"]) and ",completed," in summary[1]
    # the throwaway cluster, and every credential, are gone with the run (tests/e2e/test_secrets.py greps for them)
    assert not (run_dir / "pg").exists() and not list(run_dir.rglob("*secret*"))


@dataclass
class Run:
    """A finished run: its directory, the CLI's result, and readers for what it wrote."""

    dir: Path
    result: subprocess.CompletedProcess
    _cells: dict = field(default_factory=dict)

    @property
    def stdout(self) -> str:
        return self.result.stdout

    @property
    def stderr(self) -> str:
        return self.result.stderr

    @property
    def manifest(self) -> dict:
        return read_json(self.dir / "manifest.json")

    def summary(self) -> pd.DataFrame:
        return pd.read_csv(self.dir / "summary.csv")

    def cell(self, cell_id: str):
        if cell_id not in self._cells:
            self._cells[cell_id] = cell_data(self.dir, cell_id)
        return self._cells[cell_id]

    def cell_doc(self, cell_id: str) -> dict:
        return read_json(self.dir / "cells" / cell_id / "cell.json")


class RunFactory:
    """Scenario text in, a checked run out: the one recipe of every e2e module."""

    def __init__(self, base: Path):
        self.base = base
        self._n = 0

    def path(self, name: str) -> Path:
        self._n += 1
        d = self.base / f"{self._n:02d}-{name}"
        d.mkdir(parents=True)
        return d

    def _args(self, scenario: str, name: str, args: tuple[str, ...]) -> tuple[list[str], Path]:
        where = self.path(name)
        target = scenario if "\n" not in scenario else str(write_scenario(where / "scenario.toml", scenario))
        run_dir = where / "run"
        return ["run", target, "--run-dir", str(run_dir), *args], run_dir

    def __call__(self, scenario: str, *args: str, name: str = "run", expect: int | None = 0,
                 timeout: float = 600, env: dict | None = None) -> Run:
        """Run `connbench run` on `scenario` (TOML text, or a scenario's path or name) and check what it left.

        `expect`: the exit code the run must end with (None: any; the caller asserts it)."""
        argv, run_dir = self._args(scenario, name, args)
        res = run_cli(*argv, timeout=timeout, env=env)
        return self._checked(run_dir, res, expect)

    def spawn(self, scenario: str, *args: str, name: str = "run") -> tuple[subprocess.Popen, Path]:
        """Start the run and return at once, for a test that acts on it meanwhile (a kill, a Ctrl-C, a worker)."""
        argv, run_dir = self._args(scenario, name, args)
        proc = subprocess.Popen([*CLI, *argv], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return proc, run_dir

    def finish(self, proc: subprocess.Popen, run_dir: Path, expect: int | None = 0, timeout: float = 600,
               output: tuple[str, str] | None = None) -> Run:
        """`output`: the run's stdout and stderr, when the caller has read them already (Secrets.watch)."""
        out, err = output if output is not None else proc.communicate(timeout=timeout)
        return self._checked(run_dir, subprocess.CompletedProcess(proc.args, proc.returncode, out, err), expect)

    @staticmethod
    def _checked(run_dir: Path, res: subprocess.CompletedProcess, expect: int | None) -> Run:
        assert_no_leftovers(run_dir)
        if expect is not None:
            assert res.returncode == expect, (f"connbench run exited {res.returncode}, not {expect}\n"
                                              f"{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
        return Run(run_dir, res)


class Secrets:
    """Every secret a run keeps while it runs, harvested from its private directory (postgres-*.json's passwords,
    PgBouncer's auth_file, a TLS key), then looked for in everything the run left: it must be in nothing."""

    def __init__(self) -> None:
        self.found: set[str] = set()
        self.auth_entries: dict[str, str] = {}

    def harvest(self, private_root: Path) -> None:
        for d in private_root.glob("connbench-private-*"):
            for f in list(d.glob("*")):
                try:
                    text = f.read_text()
                except OSError:
                    continue  # removed under us: the run is moving on
                if f.name.startswith("postgres-"):
                    try:
                        self.found.update(json.loads(text).values())
                    except ValueError:
                        continue
                elif f.name.endswith("server.key"):
                    self.found.update(line for line in text.splitlines()[1:3] if len(line) > 40)  # the key's bytes
                elif f.name.endswith("userlist.txt"):
                    entries = dict(line.split('"')[1::2] for line in text.splitlines() if line.count('"') == 4)
                    self.found.update(entries.values())
                    self.auth_entries.update(entries)

    def watch(self, proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
        """Harvest until the run ends; its stdout and stderr."""
        root = Path(os.environ[PRIVATE_ENV])
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            self.harvest(root)
            time.sleep(0.05)
        return proc.communicate(timeout=60)

    def assert_none_left(self, run_dir: Path, out: str, err: str, at_least: int) -> None:
        # postgres: app + superuser per server; PgBouncer: its admin user and the app role's secret; TLS keys
        assert len(self.found) >= at_least, self.found
        if self.auth_entries:  # PgBouncer's auth_file holds the secret as PostgreSQL stores it, never a password
            assert self.auth_entries["app"].startswith("SCRAM-SHA-256$4096:"), "plain password in the auth_file"
        leaks = []
        for root, _dirs, files in os.walk(run_dir):
            for name in files:
                data = open(os.path.join(root, name), "rb").read()
                leaks += [os.path.join(root, name) for pw in self.found if pw.encode() in data]
                leaks += [f"{os.path.join(root, name)}: a private key"] * (b"PRIVATE KEY" in data)
        assert not leaks, leaks
        assert not [p for p in run_dir.rglob("*") if "secret" in p.name or p.name == "pg"]
        for pw in self.found:
            assert pw not in out and pw not in err
