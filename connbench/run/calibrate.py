"""What one new connection costs here: open it, run SELECT 1, close it; sequentially, n times.

Run before a cell's load (its verify phase), once the machine is quiet (wait_quiet: every gunicorn worker
booted and idle, the machine's CPU under QUIET_CPU_PCT), for each path its app uses: straight to PostgreSQL, and
through PgBouncer when it is in the path. With the cell's own auth and TLS, so the figure is what the
app pays per new connection (the client's PBKDF2 for SCRAM, the TLS handshake), the report multiplies
it by the cell's connections opened per second.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import psutil
import psycopg

from connbench import results as R
from connbench.services.postgres import ConnKwargs

QUIET_CPU_PCT = 30.0  # the machine's CPU (percent of all its cores) under which a calibration may start
IDLE_WORKER_CPU_S = 0.01  # a booted, idle gunicorn worker uses less CPU than this in QUIET_SAMPLE_S
QUIET_SAMPLE_S = 0.25
QUIET_WAIT_S = 15.0  # then it calibrates anyway, and says the machine was not quiet


def wait_quiet(workers: Callable[[], list[int]], expected: int, timeout: float = QUIET_WAIT_S) -> tuple[bool, float]:
    """Wait until every gunicorn worker has booted (`expected` of them, none using CPU: the app imported) and
    the machine's CPU is under QUIET_CPU_PCT, so that a calibration measures a connection, not the boot of
    the workers beside it. Returns (quiet, the machine's CPU % at the last sample)."""
    deadline, cpu = time.monotonic() + timeout, 100.0
    procs: dict[int, psutil.Process] = {}
    while True:
        alive = []
        for pid in workers():  # asked again each time: the master may still be forking them
            try:
                p = procs.setdefault(pid, psutil.Process(pid))
                alive.append((p, sum(p.cpu_times()[:2])))
            except psutil.Error:
                continue
        cpu = psutil.cpu_percent(interval=QUIET_SAMPLE_S)
        idle = 0
        for p, before in alive:
            try:
                idle += sum(p.cpu_times()[:2]) - before < IDLE_WORKER_CPU_S
            except psutil.Error:
                continue
        if idle >= expected and cpu < QUIET_CPU_PCT:
            return True, cpu
        if time.monotonic() >= deadline:
            return False, cpu


def calibrate(conninfo: ConnKwargs, n: int, quiet: bool | None = None, cpu_pct: float | None = None) -> R.ConnectCost:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        with psycopg.connect(**conninfo, connect_timeout=10, autocommit=True) as conn:
            conn.execute("SELECT 1").fetchone()
        times.append((time.perf_counter() - t0) * 1000.0)
    times.sort()
    return R.ConnectCost(n=n, mean_ms=statistics.fmean(times), p50_ms=statistics.median(times),
                         p95_ms=times[min(n - 1, int(round(0.95 * (n - 1))))], min_ms=times[0], quiet=quiet,
                         machine_cpu_pct=None if cpu_pct is None else round(cpu_pct, 1))
