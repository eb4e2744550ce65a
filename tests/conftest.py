"""Shared test helpers: run the real CLI, and prove no harness process outlived a test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "connbench.cli"]
# Command-line marks of every process the harness starts.
MARKS = ("target_app.wsgi:application", "target_app.asgi:application", "locustfiles/app.py", "connbench.sampler",
         "pgbouncer.ini", "connbench.services.gunicorn_hooks", "locustfiles/logonly.py")


def harness_processes(extra_marks: tuple[str, ...] = ()) -> list[str]:
    me = os.getpid()
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        if p.info["pid"] == me:
            continue
        cmd = " ".join(p.info["cmdline"] or [])
        if any(m in cmd for m in MARKS + extra_marks) and "pytest" not in cmd:
            found.append(f"{p.info['pid']}: {cmd[:160]}")
    return found


def assert_no_leftovers(run_dir: Path, timeout: float = 10.0) -> None:
    """Nothing started for this run survives: postgres (its -D is under run_dir) and the rest."""
    deadline = time.monotonic() + timeout
    while True:
        left = harness_processes((str(run_dir),))
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not left, "processes left behind:\n" + "\n".join(left)


def run_cli(*args: str, timeout: float = 600, check: bool = False) -> subprocess.CompletedProcess:
    res = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if check and res.returncode != 0:
        raise AssertionError(f"connbench {' '.join(args)} exited {res.returncode}\n{res.stdout}\n{res.stderr}")
    return res


def write_scenario(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def cell_data(run_dir: Path, cell_id: str):
    """A cell's documents and raw files as analysis reads them (analysis.load): one reader, not one per test."""
    from analysis.load import load_run

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


@pytest.fixture
def run_dir(tmp_path: Path):
    d = tmp_path / "run"
    yield d
    assert_no_leftovers(d)


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
