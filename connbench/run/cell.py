"""The lifecycle of one cell: start services -> verify -> warm-up -> measure -> cool-down -> stop.

The PostgreSQL server is the matrix's (shared across cells with equal server settings); the
cell's Stack starts and stops everything else, and Locust is started here: all of it is stopped
on every path out: success, exception, Ctrl-C.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from typing import TypedDict, Unpack

from connbench import results as R
from connbench.contract import GENERATOR_BROKEN, GENERATOR_END, GENERATOR_LOST
from connbench.results import CellPaths, append_event, write_csv_atomic
from connbench.results.schema import CellStatus
from connbench.run.calibrate import calibrate, wait_quiet
from connbench.run.faults import FaultInjector
from connbench.run.stack import ConnPath, Stack, load_config, load_shares, locust_config
from connbench.scenario.expand import Cell
from connbench.scenario.knobs import Fault
from connbench.scenario.model import GeneratorSpec
from connbench.scenario.predict import predict
from connbench.scenario.project import Project
from connbench.services import gunicorn, locust
from connbench.services.database import DatabaseServer
from connbench.services.procs import RunAs, ServiceError, Supervisor

PhaseCallback = Callable[[str, float], None]


class CellRunner:
    def __init__(self, cell: Cell, paths: CellPaths, server: DatabaseServer, sup: Supervisor,
                 user: RunAs | None, on_phase: PhaseCallback | None = None, sample_interval: float = 0.1,
                 faults: list[Fault] | None = None, seed: int = 0,
                 calibration: dict[str, R.ConnectCost] | None = None, project: Project | None = None,
                 generator: GeneratorSpec | None = None):
        self.project = project or Project()
        self.generator = generator or GeneratorSpec()
        self.calibration = {} if calibration is None else calibration  # shared by the run's cells
        self.cell = cell
        self.k = cell.knobs
        self.paths = paths
        self.sup = sup
        self.on_phase = on_phase or (lambda name, seconds: None)
        self.faults = faults or []
        self.seed = seed  # the open model's schedule: scenario.seed + repeat, so repeats differ but rerun alike
        self.stack = Stack(self.k, server, sup, user, paths, sample_interval, project=self.project,
                           host=self.generator.bind)
        self.server = server
        self.doc = _doc(cell, "running", predict(self.k, app_slots=server.app_slots))
        self._locust: locust.LocustRun | None = None

    # -- bookkeeping --------------------------------------------------------------------
    def _event(self, kind: str, detail: str = "", t: float | None = None) -> float:
        t = time.time() if t is None else t
        append_event(self.paths.events, t, kind, detail)
        return t

    def _phase(self, name: R.Phase, t0: float, t1: float) -> None:
        t1 = max(t0, t1)  # a load that died before its warm-up ended has an empty measure window, not a negative one
        self.doc.phases[name] = [t0, t1]
        self._event(f"phase_end:{name}", "", t1)

    def _begin(self, name: str, seconds: float = 0.0) -> float:
        self.on_phase(name, seconds)
        return self._event(f"phase_begin:{name}")

    def _save(self) -> None:
        self.doc.dump(self.paths.json)

    # -- the lifecycle ------------------------------------------------------------------
    def run(self) -> R.CellDoc:
        self.paths.root.mkdir(parents=True, exist_ok=True)
        for stale in (self.paths.requests, self.paths.connections, self.paths.db, self.paths.pgbouncer,
                      self.paths.processes, self.paths.events, self.paths.backends):
            stale.unlink(missing_ok=True)  # a rerun of a failed cell starts clean
        for raw in self.paths.locust_raw.glob("*.csv"):
            raw.unlink()  # an earlier attempt's request logs and worker reports would be merged with this one's
        t_cell = time.time()
        self._save()
        measured = 0.0
        try:
            t0 = self._begin("start_services")
            self.doc.services = R.Services(**self.stack.start())
            self._phase("start_services", t0, time.time())

            t0 = self._begin("verify")
            # before the app's first connection: a session-mode PgBouncer whose pool the app's persistent
            # connections pin would make the calibration wait for a server connection that never frees
            if self.k.calibrate_n:
                self.doc.connect_cost = self._connect_cost()
            gunicorn.verify(self.stack.dynos, self.project.verify_paths)
            self._phase("verify", t0, time.time())

            measured = self._load()

            t0 = self._begin("cooldown", self.k.cooldown)
            time.sleep(self.k.cooldown)
            self._phase("cooldown", t0, time.time())
            measured += self.k.cooldown
            self.doc.status = "completed"
        except KeyboardInterrupt:
            self.doc.status, self.doc.error = "interrupted", "interrupted (Ctrl-C)"
            raise
        except Exception as e:  # noqa: BLE001 - any failure fails this cell only
            self.doc.status, self.doc.error = "failed", f"{type(e).__name__}: {e}"
        finally:
            t0 = self._begin("stop")
            self._stop_load()
            self.stack.stop()
            self._phase("stop", t0, time.time())
            n = locust.merge_request_logs(self.paths.locust_raw, self.paths.requests) \
                if self.paths.locust_raw.exists() else 0
            locust.merge_generators(self.paths)
            self._server_setup()
            self.doc.memory = self._memory()
            self.doc.requests = n
            if self.doc.status == "completed" and n == 0:
                self.doc.status, self.doc.error = "failed", "no requests were recorded (see locust/locust.log)"
            self.doc.overhead_s = round(time.time() - t_cell - measured, 3)
            self._save()
        return self.doc

    def _server_setup(self) -> None:
        """PostgreSQL 18's log of each connection's setup while the cell ran, as server_setup.csv (raw rows)."""
        rows = self.server.read_setup_durations()  # None: your server (--database-url) or before PostgreSQL 18
        if rows is not None:
            write_csv_atomic(self.paths.server_setup, R.SERVER_SETUP_COLUMNS, rows)

    def _memory(self) -> str | None:
        """What the sampler said of backends' memory (events.csv's "memory" event), for cell.json."""
        try:
            with open(self.paths.events, newline="", encoding="utf-8") as fh:
                said = [r["detail"] for r in csv.DictReader(fh) if r.get("kind") == "memory"]
        except OSError:
            return None
        return said[-1] if said else None

    def _connect_cost(self) -> dict[ConnPath, R.ConnectCost]:
        """Each path's cost: known from an earlier cell with this server, auth and tls, else timed now."""
        out: dict[ConnPath, R.ConnectCost] = {}
        for path, info in self.stack.app_paths().items():
            key = R.calibration_key(self.doc.params, path)
            if key not in self.calibration:
                quiet, cpu = wait_quiet(lambda: [p for d in self.stack.dynos for p in gunicorn.worker_pids(d)],
                                        expected=self.k.dynos * self.k.workers)
                self.calibration[key] = calibrate(info, self.k.calibrate_n, quiet, cpu).model_copy(
                    update={"cell_id": self.cell.cell_id})
            out[path] = self.calibration[key]
        return out

    def _load(self) -> float:
        k, gen = self.k, self.generator
        t_begin = self._begin("warmup", k.warmup)
        shares = load_shares(gen)
        load = load_config(k, [d.url for d in self.stack.dynos], self.paths, shares, self.seed, self.project,
                           self.faults)
        cfg = locust_config(k, self.project, gen)
        run = self._locust = locust.start(cfg, load, self.sup, self.paths, self.stack.root)
        self.stack.track("locust", [{"pid": p.pid, "tree": True} for p in run.procs])
        # processes: Locust's load-generating processes on this machine (the sampler's locust CPU is theirs)
        self.doc.services.locust = {"processes": max(1, gen.local), **({"workers": gen.workers, "remote": gen.remote,
                                                                        "master": run.address} if gen.workers else {})}
        if gen.remote:
            self.on_phase(f"waiting for {gen.remote} remote Locust worker(s): `connbench worker --master "
                          f"{run.address}`", gen.wait_s)
        t0 = locust.wait_started(run, self.paths, cfg)
        self._phase("warmup", t0, t0 + k.warmup)
        self.on_phase("measure", k.duration)
        self._event("phase_begin:measure", "", t0 + k.warmup)
        injector = FaultInjector(self.faults, t0 + k.warmup, self.stack, self._event) if self.faults else None
        if injector:
            injector.start()
        try:
            rc = self._wait_load(run, t0 + k.warmup + k.duration + 60)
        finally:
            if injector:
                injector.stop()
        t_end = time.time()
        self._phase("measure", t0 + k.warmup, min(t_end, t0 + k.warmup + k.duration))
        for proc in run.procs:
            self.sup.stop(proc, timeout=0 if proc is run.master else 10)  # the workers quit with their master
        self._locust = None
        self.stack.track("locust", None)
        if rc != 0:
            raise ServiceError(f"locust exited with code {rc} (log: {self.paths.locust_log})")
        return t_end - t_begin

    def _wait_load(self, run: locust.LocustRun, deadline: float) -> int:
        """Wait for the master to finish. What it says of its workers becomes events: a worker lost on the way
        fails the cell unless the scenario says to go on ([generator] on_worker_lost); workers not as expected, or
        rows missing at the end, always fail it, and so does a master that ended before it ended the run."""
        seen, ended = 0, not self.generator.workers
        while True:
            rc = self.sup.wait(run.master, timeout=0.25)
            news = locust.generator_events(self.paths, seen)
            seen += len(news)
            for t, kind, detail in news:
                if kind != GENERATOR_END:
                    self._event(kind, detail, t)
                ended = ended or kind == GENERATOR_END
                if kind == GENERATOR_BROKEN:
                    raise ServiceError(f"Locust's workers: {detail}")
                if kind == GENERATOR_LOST and self.generator.on_worker_lost == "fail":
                    raise ServiceError(f"Locust worker {detail} mid-test; the cell fails "
                                       "([generator] on_worker_lost = \"continue\" goes on without it)")
            if rc is not None:
                if rc == 0 and not ended:
                    raise ServiceError("the Locust master stopped before the run time was over (every worker "
                                       f"gone?); log: {self.paths.locust_log}")
                return rc
            if time.time() > deadline:
                raise ServiceError(f"locust did not finish within its run time + 60 s (log: {self.paths.locust_log})")

    def _stop_load(self) -> None:
        if self._locust is not None:
            for proc in self._locust.procs:
                self.sup.stop(proc, timeout=5)
            self._locust = None


class _Outcome(TypedDict, total=False):
    """What a cell that did not run records (CellDoc's fields)."""

    error: str | None
    skip_reason: str | None
    overhead_s: float
    requests: int


def _doc(cell: Cell, status: CellStatus, predicted: R.Predicted, **outcome: Unpack[_Outcome]) -> R.CellDoc:
    return R.CellDoc(cell_id=cell.cell_id, group=cell.group, repeat=cell.repeat, params=cell.params(),
                     axes=cell.axes, predicted=predicted, status=status, **outcome)


def _not_run(cell: Cell, paths: CellPaths, status: CellStatus, error: str | None, reason: str | None) -> R.CellDoc:
    doc = _doc(cell, status, predict(cell.knobs), error=error, skip_reason=reason, overhead_s=0.0, requests=0)
    doc.dump(paths.json)
    return doc


def skipped(cell: Cell, paths: CellPaths, reason: str) -> R.CellDoc:
    return _not_run(cell, paths, "skipped", None, reason)


def failed_to_start(cell: Cell, paths: CellPaths, error: str) -> R.CellDoc:
    return _not_run(cell, paths, "failed", error, None)


def load_cell_doc(paths: CellPaths) -> R.CellDoc | None:
    """A cell's earlier outcome (for --resume); None when there is none or it cannot be read."""
    try:
        return R.CellDoc.load(paths.json)
    except (FileNotFoundError, R.ResultsError):
        return None
