"""Injected failures on a schedule: at t seconds into the measure phase, do X. Each goes to events.csv."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from connbench import results as R
from connbench.scenario.knobs import Fault

if TYPE_CHECKING:
    from connbench.run.stack import Stack

Record = Callable[[str, str, float], object]  # (kind, detail, t): the cell's events.csv


def apply(fault: Fault, stack: Stack) -> str:
    if fault.action == "pause":  # the locustfile holds its requests (LoadConfig.pauses): only recorded here
        return f"no request sent for {fault.seconds:g} s"
    if fault.action == "terminate_backends":
        return stack.terminate_backends()
    if fault.action == "restart_postgres":
        return stack.restart_postgres()
    if fault.action == "restart_pgbouncer":
        return stack.restart_pgbouncer()
    return stack.kill_worker(fault.dyno)


class FaultInjector(threading.Thread):
    def __init__(self, faults: list[Fault], t_measure: float, stack: Stack, record: Record):
        super().__init__(name="faults", daemon=True)
        self.faults = sorted(faults, key=lambda f: f.at)
        self.t_measure = t_measure
        self.stack = stack
        self.record = record
        self._stop_evt = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        # a pause is two marks: its start, and fault:resume when requests flow again (what the next ones see)
        steps = sorted([(f.at, f) for f in self.faults]
                       + [(f.at + f.seconds, None) for f in self.faults if f.action == "pause"], key=lambda s: s[0])
        for at, fault in steps:
            delay = self.t_measure + at - time.time()
            if delay > 0 and self._stop_evt.wait(delay):
                return
            t = time.time()
            if fault is None:
                self.record(R.FAULT_RESUME, "requests sent again after a pause", t)
                continue
            try:
                detail = apply(fault, self.stack)
            except Exception as e:  # noqa: BLE001 - a failed injection is recorded, not fatal
                detail = f"injection failed: {type(e).__name__}: {e}"
                self.errors.append(detail)
            self.record(f"fault:{fault.action}", detail, t)

    def stop(self) -> None:
        self._stop_evt.set()
        self.join(timeout=60)
