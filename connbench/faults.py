"""Injected failures on a schedule: at t seconds into the measure phase, do X. Each goes to events.csv."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import TYPE_CHECKING

import psycopg

from connbench.spec import Fault

if TYPE_CHECKING:
    from connbench.cell import CellRunner


def terminate_backends(runner: CellRunner) -> str:
    conn = runner.server.conn
    with psycopg.connect(**conn.super_kwargs(), autocommit=True, application_name="connbench-fault") as c:
        n = c.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE usename = %s AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
            [conn.app_user],
        ).fetchone()[0]
    return f"terminated {n} backends"


def kill_worker(runner: CellRunner, dyno: int) -> str:
    from connbench.services.gunicorn import worker_pids

    d = runner.dynos[min(dyno, len(runner.dynos) - 1)]
    pids = worker_pids(d)
    if not pids:
        return f"dyno {d.index}: no worker to kill"
    os.kill(pids[0], signal.SIGKILL)
    return f"dyno {d.index}: SIGKILL worker pid {pids[0]}"


def apply(fault: Fault, runner: CellRunner) -> str:
    if fault.action == "terminate_backends":
        return terminate_backends(runner)
    if fault.action == "restart_postgres":
        t0 = time.monotonic()
        runner.server.restart()
        runner.track("postgres", runner.server.pid)
        return f"postgres fast shutdown + start ({time.monotonic() - t0:.2f} s)"
    if fault.action == "restart_pgbouncer":
        if runner.bouncer is None:
            return "no PgBouncer in this cell"
        t0 = time.monotonic()
        runner.bouncer.restart()
        runner.track("pgbouncer", runner.bouncer.proc.pid)
        return f"pgbouncer stopped + started ({time.monotonic() - t0:.2f} s)"
    return kill_worker(runner, fault.dyno)


class FaultInjector(threading.Thread):
    def __init__(self, faults: list[Fault], t_measure: float, runner: CellRunner):
        super().__init__(name="faults", daemon=True)
        self.faults = sorted(faults, key=lambda f: f.at)
        self.t_measure = t_measure
        self.runner = runner
        self._stop_evt = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        for fault in self.faults:
            delay = self.t_measure + fault.at - time.time()
            if delay > 0 and self._stop_evt.wait(delay):
                return
            t = time.time()
            try:
                detail = apply(fault, self.runner)
            except Exception as e:  # noqa: BLE001 - a failed injection is recorded, not fatal
                detail = f"injection failed: {type(e).__name__}: {e}"
                self.errors.append(detail)
            self.runner._event(f"fault:{fault.action}", detail, t)

    def stop(self) -> None:
        self._stop_evt.set()
        self.join(timeout=60)
