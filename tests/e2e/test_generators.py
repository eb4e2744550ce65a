"""Locust's master/worker mode as the generator, on real processes.

One run, two cells (closed and open model), [generator] workers = 2 with one of them remote: the harness starts
the master and one local worker per cell, and a `connbench worker` started here (as on another machine) rejoins
each cell's master at the fixed port. Every row travels to the master with Locust's messaging: requests.csv's
rows equal Locust's own total, both workers contributed, and the open model's total offered rate holds.
Then a worker killed mid-measure: an event, and the cell fails (or goes on, when the scenario says so), and
no process is left.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.support import CLI, ROOT, cell_data, read_json

pytestmark = [pytest.mark.e2e, pytest.mark.beside_others]

RATE, WARMUP, DURATION = 150.0, 1.0, 6.0

SCENARIO = """
[scenario]
name = "generators"
[defaults]
dynos = 1
workers = 2
conn_max_age = 60
warmup = {warmup}
duration = {duration}
cooldown = 0.5
[generator]
workers = 2
remote = 1
port = {port}
wait_s = 60

[[matrix.include]]
id = "closed"
users = 4

[[matrix.include]]
id = "open"
arrival_rate = {rate}
arrival = "uniform"

# every user waits 1.5 s on the database when the run time ends: Locust's own end (quit, then 0.5 s) would
# lose those requests' rows and statistics
[[matrix.include]]
id = "slow"
users = 8
mix = {{ read = 0, slow = 1, slow_ms = 1500 }}
"""


def fixed_port() -> int:
    """A free port outside the ephemeral range: a worker retrying an unused ephemeral port can connect to itself
    (TCP simultaneous open) and hold it, and the master could not bind it then."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for port in random.Random().sample(range(20000, min(30000, low)), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise AssertionError("no free port in 20000-30000")


def locust_total(cell_dir: Path) -> int:
    return sum(s["num_requests"] for s in json.loads((cell_dir / "locust" / "stats.json").read_text()))


def request_rows(cell_dir: Path) -> list[dict]:
    with open(cell_dir / "requests.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def run(run_factory, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("generators")
    port = fixed_port()
    # the remote worker: joins the first cell's master, then the next one's, until stopped
    worker = subprocess.Popen([*CLI, "worker", "--master", f"127.0.0.1:{port}", "--name", "far",
                               "--reports", str(tmp / "reports")], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        proc, run_dir = run_factory.spawn(SCENARIO.format(port=port, rate=RATE, warmup=WARMUP, duration=DURATION),
                                          "--no-charts", name="generators")
        try:
            proc.wait(timeout=600)
        finally:
            proc.kill() if proc.poll() is None else None
    finally:
        worker.send_signal(signal.SIGINT)
        out, _ = worker.communicate(timeout=60)
    run_factory.finish(proc, run_dir)
    return run_dir, out


@pytest.mark.parametrize("cell_id", ["closed", "open", "slow"])
def test_rows_travel_to_the_master_and_equal_locusts_total(run, cell_id):
    run_dir, worker_out = run
    cell_dir = run_dir / "cells" / cell_id
    rows = request_rows(cell_dir)
    assert len(rows) == locust_total(cell_dir) > 0  # no row lost on the way, none counted twice
    by = {g: sum(r["generator"] == g for r in rows) for g in {r["generator"] for r in rows}}
    assert set(by) == {"w0", "far"} or set(by) == {"w1", "far"}, by  # one local worker (by index), one remote
    assert min(by.values()) > 0.3 * len(rows), by  # both carried a share
    assert "worker far: test 3 ended" in worker_out  # it rejoined each cell's master
    doc = read_json(cell_dir / "cell.json")
    assert doc["services"]["locust"]["workers"] == 2 and doc["services"]["locust"]["remote"] == 1
    procs = cell_data(run_dir, cell_id).csv("processes.csv")
    own = procs[procs["component"] == "locust-worker"]
    assert set(own["generator"]) == set(by) and (own["cpu_seconds"] > 0).all()  # each worker's own CPU


def test_open_model_offers_the_total_rate_split_over_workers(run):
    run_dir, _ = run
    cell = cell_data(run_dir, "open")
    m0, m1 = cell.phase("measure")
    req = cell.requests.df
    scheduled = req[(req["t_intended"] >= m0) & (req["t_intended"] < m1)]
    offered = len(scheduled) / (m1 - m0)
    assert abs(offered - RATE) <= 0.05 * RATE, offered
    per = scheduled.groupby("generator").size()
    assert len(per) == 2 and abs(per.iloc[0] - per.iloc[1]) <= 2, per  # every other arrival each
    with open(run_dir / "summary_generators.csv", newline="") as fh:
        gens = [r for r in csv.DictReader(fh) if r["cell_id"] == "open"]
    assert {r["generator"] for r in gens} == set(per.index) and all(r["cpu_pct"] for r in gens)


LOST = """
[scenario]
name = "lost"
[defaults]
dynos = 1
workers = 2
conn_max_age = 60
users = 4
warmup = 0.5
duration = {duration}
cooldown = 0.5
[generator]
workers = {workers}
on_worker_lost = "{policy}"
"""


def _kill_a_worker_mid_measure(proc: subprocess.Popen, run_dir: Path, expected: int) -> tuple[int, float]:
    """Wait (with a deadline) for the measure window and every worker's first rows, then SIGKILL one worker."""
    cell_dir, deadline = run_dir / "cells" / "default", time.monotonic() + 120
    while time.monotonic() < deadline:
        measure = _measure_begins(cell_dir)
        workers = [p for p in psutil.Process(proc.pid).children(recursive=True) if _is_worker(p)]
        gens = cell_dir / "locust" / "raw" / "generators.csv"
        named = {r[1] for r in csv.reader(gens.read_text().splitlines()[1:]) if len(r) == 6} if gens.exists() else set()
        if measure is not None and time.time() > measure + 1 and len(workers) == expected and len(named) == expected:
            victim = workers[0].pid
            os.kill(victim, signal.SIGKILL)
            return victim, time.time()
        assert proc.poll() is None, "the run ended before the measure window"
        time.sleep(0.1)
    raise AssertionError(f"no measure window with {expected} workers within 120 s")


def _measure_begins(cell_dir: Path) -> float | None:
    """When the measure window begins (events.csv: written when Locust starts, with the warm-up's end)."""
    path = cell_dir / "events.csv"
    rows = list(csv.reader(path.read_text().splitlines())) if path.exists() else []
    return next((float(r[0]) for r in rows if len(r) == 3 and r[1] == "phase_begin:measure"), None)


def _is_worker(p: psutil.Process) -> bool:
    try:
        return "--worker" in p.cmdline()
    except psutil.Error:  # gone meanwhile
        return False


def _name_of(run_dir: Path, pid: int) -> str:
    with open(run_dir / "cells" / "default" / "locust" / "raw" / "generators.csv", newline="") as fh:
        return next(r["generator"] for r in csv.DictReader(fh) if int(r["pid"]) == pid)


@pytest.mark.parametrize("policy, workers", [("fail", 2), ("continue", 2), ("fail", 1)])
def test_a_worker_killed_mid_measure_is_an_event_and_fails_the_cell_unless_told(run_factory, policy, workers):
    # long enough that Locust's heartbeat check (3 missed beats, 1 s apart) sees it well inside the window
    proc, run_dir = run_factory.spawn(LOST.format(duration=20 if policy == "fail" else 12, policy=policy,
                                                  workers=workers), "--no-charts", name=f"lost-{policy}-{workers}")
    try:
        victim, killed_at = _kill_a_worker_mid_measure(proc, run_dir, workers)
        r = run_factory.finish(proc, run_dir, expect=None, timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = r.stdout + r.stderr
    name = _name_of(run_dir, victim)
    cell = cell_data(run_dir, "default")
    lost = cell.csv("events.csv")
    lost = lost[lost["kind"] == "generator_lost"]
    assert len(lost) == 1 and lost["detail"].iloc[0].startswith(f"{name} ") and lost["t"].iloc[0] > killed_at
    if policy == "fail":
        assert proc.returncode == 1, out
        assert cell.status == "failed" and f"Locust worker {name} " in cell.error
    else:
        assert proc.returncode == 0, out
        assert cell.status == "completed"
        survivor = cell.requests.df[cell.requests.df["generator"] != name]
        assert survivor["t_start"].max() > lost["t"].iloc[0] + 1  # the other one went on
        summary = next(csv.DictReader(open(run_dir / "summary.csv", newline="")))
        assert summary["generators_lost"] == "1" and name in summary["generators_lost_names"]
        assert f"Locust worker(s) lost mid-test: {name}" in (run_dir / "index.html").read_text()


def test_workers_that_never_come_fail_the_cell_saying_how_to_start_them(run_factory):
    """A remote worker nobody starts: the master gives up after wait_s, and the message says what to run."""
    port = fixed_port()
    run = run_factory(f"""
[scenario]
name = "alone"
[defaults]
users = 2
warmup = 0.5
duration = 2
cooldown = 0.5
[generator]
workers = 2
remote = 1
port = {port}
wait_s = 3
""", "--no-report", name="alone", expect=1, timeout=300)
    cell = cell_data(run.dir, "default")
    assert cell.status == "failed" and "gave up waiting for its 2 workers after 3 s" in cell.error
    assert "1 of 2 connected" in cell.error and f"connbench worker --master 127.0.0.1:{port}" in cell.error


def test_a_killed_connbench_worker_takes_its_locust_with_it(tmp_path):
    """SIGKILL leaves no handler to run: the Locust child (waiting for a master that never comes, which it does for
    5 minutes) must still go, by the parent-death signal it was started with."""
    worker = subprocess.Popen([*CLI, "worker", "--master", f"127.0.0.1:{fixed_port()}", "--name", "doomed",
                               "--reports", str(tmp_path)], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    child = None
    try:
        deadline = time.monotonic() + 60
        while child is None and time.monotonic() < deadline:
            kids = psutil.Process(worker.pid).children()
            child = next((k for k in kids if "locust" in " ".join(k.cmdline())), None)
            time.sleep(0.2)
        assert child is not None, "connbench worker never started its Locust"
        worker.kill()
        worker.wait(timeout=10)
        gone, alive = psutil.wait_procs([child], timeout=20)
        assert not alive, f"Locust {child.pid} outlived its killed connbench worker"
    finally:  # whatever is left, so that no test leaks a process
        for p in ([child] if child is not None else []):
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        if worker.poll() is None:
            worker.kill()
