"""The lifecycle of one cell: start services -> verify -> warm-up -> measure -> cool-down -> stop.

The PostgreSQL server is the matrix's (shared across cells with equal server settings);
everything else -- PgBouncer, the gunicorn dynos, the sampler, Locust -- is started and
stopped here, and stopped on every path out: success, exception, Ctrl-C.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from connbench import faults as faults_mod
from connbench.expand import Cell
from connbench.predict import predict
from connbench.results import (
    SCHEMA_VERSION,
    CellPaths,
    append_event,
    write_json_atomic,
)
from connbench.services import gunicorn, locust
from connbench.services.pgbouncer import PgBouncer
from connbench.services.postgres import PostgresServer, app_db_env, project_root
from connbench.services.procs import RunAs, ServiceError, Supervisor, remove_service_dir, service_dir
from connbench.spec import PGBOUNCER_MODES

PhaseCallback = Callable[[str, float], None]


class CellRunner:
    def __init__(self, cell: Cell, paths: CellPaths, server: PostgresServer, sup: Supervisor,
                 user: RunAs | None, on_phase: PhaseCallback | None = None, sample_interval: float = 0.1,
                 locust_processes: int = 1, faults: list | None = None):
        self.cell = cell
        self.k = cell.knobs
        self.paths = paths
        self.server = server
        self.sup = sup
        self.user = user
        self.on_phase = on_phase or (lambda name, seconds: None)
        self.sample_interval = sample_interval
        self.locust_processes = locust_processes
        self.faults = faults or []
        self.root = project_root()
        self.doc: dict = {
            "schema_version": SCHEMA_VERSION,
            "cell_id": cell.cell_id,
            "group": cell.group,
            "repeat": cell.repeat,
            "params": cell.params(),
            "axes": cell.axes,
            "predicted": predict(self.k, app_slots=server.app_slots),
            "status": "running",
            "error": None,
            "skip_reason": None,
            "phases": {},
            "services": {},
            "overhead_s": None,
        }
        self._procs: dict[str, list] = {}
        self.bouncer: PgBouncer | None = None
        self.dynos: list[gunicorn.Dyno] = []
        self._sampler = None
        self._locust = None

    # -- bookkeeping --------------------------------------------------------------------
    def _event(self, kind: str, detail: str = "", t: float | None = None) -> float:
        t = time.time() if t is None else t
        append_event(self.paths.events, t, kind, detail)
        return t

    def _phase(self, name: str, t0: float, t1: float) -> None:
        self.doc["phases"][name] = [t0, t1]
        self._event(f"phase_end:{name}", "", t1)

    def _begin(self, name: str, seconds: float = 0.0) -> float:
        self.on_phase(name, seconds)
        return self._event(f"phase_begin:{name}")

    def _save(self) -> None:
        write_json_atomic(self.paths.json, self.doc)

    def track(self, component: str, pid: int) -> None:
        """A component was restarted (a fault): point the sampler's CPU accounting at the new pid."""
        tree = component == "postgres"
        self._procs[component] = [{"pid": pid, "tree": tree}]
        self._write_procs()

    def _write_procs(self) -> None:
        tmp = self.paths.root / ".procs.json.tmp"
        tmp.write_text(json.dumps(self._procs))
        os.replace(tmp, self.paths.root / "procs.json")

    # -- the lifecycle ------------------------------------------------------------------
    def run(self) -> dict:
        self.paths.root.mkdir(parents=True, exist_ok=True)
        for stale in (self.paths.requests, self.paths.connections, self.paths.db, self.paths.pgbouncer,
                      self.paths.processes, self.paths.events):
            stale.unlink(missing_ok=True)  # a rerun of a failed cell starts clean
        t_cell = time.time()
        self._save()
        measured = 0.0
        try:
            t0 = self._begin("start_services")
            self.start_services()
            self._phase("start_services", t0, time.time())

            t0 = self._begin("verify")
            gunicorn.verify(self.dynos)
            self._phase("verify", t0, time.time())

            measured = self._load()

            t0 = self._begin("cooldown", self.k.cooldown)
            time.sleep(self.k.cooldown)
            self._phase("cooldown", t0, time.time())
            measured += self.k.cooldown
            self.doc["status"] = "completed"
        except KeyboardInterrupt:
            self.doc["status"] = "interrupted"
            self.doc["error"] = "interrupted (Ctrl-C)"
            raise
        except Exception as e:  # noqa: BLE001 - any failure fails this cell only
            self.doc["status"] = "failed"
            self.doc["error"] = f"{type(e).__name__}: {e}"
        finally:
            t0 = self._begin("stop")
            self.stop_services()
            self._phase("stop", t0, time.time())
            n = locust.merge_request_logs(self.paths.locust, self.paths.requests) \
                if (self.paths.locust / "raw").exists() else 0
            self.doc["requests"] = n
            if self.doc["status"] == "completed" and n == 0:
                self.doc["status"] = "failed"
                self.doc["error"] = "no requests were recorded (see locust/locust.log)"
            self.doc["overhead_s"] = round(time.time() - t_cell - measured, 3)
            self._save()
        return self.doc

    def start_services(self) -> None:
        db_env = app_db_env(self.server.conn)
        self._procs["postgres"] = [{"pid": self.server.pid, "tree": True}]
        self.doc["services"]["postgres"] = {**self.server.conn.public(), "version": self.server.version,
                                            "max_connections": self.server.max_connections,
                                            "app_slots": self.server.app_slots}
        if self.k.pooling in PGBOUNCER_MODES:
            where = service_dir(self.paths.root, "pgbouncer", self.user)
            self.bouncer = PgBouncer(where, self.k, self.server.conn, self.sup, self.user, self.sup.private)
            self.bouncer.start()
            db_env = self.bouncer.app_db_env()
            self._procs["pgbouncer"] = [{"pid": self.bouncer.proc.pid}]
            self.doc["services"]["pgbouncer"] = self.bouncer.public()
        app_env = gunicorn.app_environment(self.k, db_env)
        self.dynos = gunicorn.start_dynos(self.k, app_env, self.sup, self.paths.logs, self.root)
        self._procs["gunicorn-master"] = [{"pid": d.proc.pid, "dyno": d.index, "tree": True} for d in self.dynos]
        self.doc["services"]["dynos"] = [{"dyno": d.index, "port": d.port} for d in self.dynos]
        self._write_procs()
        self._start_sampler()

    def _start_sampler(self) -> None:
        conf = {
            "cell_dir": str(self.paths.root),
            "pg": self.server.conn.super_kwargs(),
            "app_role": self.server.conn.app_user,
            "interval": self.sample_interval,
            "procs_file": str(self.paths.root / "procs.json"),
            "pgbouncer": self.bouncer.admin_conninfo() if self.bouncer else None,
            "pgbouncer_database": self.server.conn.dbname,
        }
        # it holds passwords: outside the run directory
        conf_path = self.sup.private.write(f"sampler-{self.cell.cell_id}.json", json.dumps(conf))
        self._sampler = self.sup.spawn("sampler", [sys.executable, "-m", "connbench.sampler", str(conf_path)],
                                       log=self.paths.logs / "sampler.log", cwd=self.root)
        # The first rows must exist before load starts, or the plateau misses its baseline.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.paths.db.exists() and self.paths.db.stat().st_size > 80:
                break
            if self._sampler.poll() is not None:
                raise ServiceError(f"sampler exited early (log: {self.paths.logs / 'sampler.log'})")
            time.sleep(0.05)

    def _load(self) -> float:
        k = self.k
        t_begin = self._begin("warmup", k.warmup)
        self._locust, started = locust.start(k, [d.url for d in self.dynos], self.sup, self.paths.locust,
                                             self.root, self.locust_processes)
        self._procs["locust"] = [{"pid": self._locust.pid, "tree": True}]
        self.doc["services"]["locust"] = {"processes": self.locust_processes}
        self._write_procs()
        t0 = locust.wait_started(self._locust, started)
        self._phase("warmup", t0, t0 + k.warmup)
        self.on_phase("measure", k.duration)
        self._event("phase_begin:measure", "", t0 + k.warmup)
        injector = faults_mod.FaultInjector(self.faults, t0 + k.warmup, self) if self.faults else None
        if injector:
            injector.start()
        try:
            rc = self._locust.wait(timeout=k.warmup + k.duration + 60)
        finally:
            if injector:
                injector.stop()
        t_end = time.time()
        self._phase("measure", t0 + k.warmup, min(t_end, t0 + k.warmup + k.duration))
        self._locust = None
        self._procs.pop("locust", None)
        self._write_procs()
        if rc != 0:
            raise ServiceError(f"locust exited with code {rc} (log: {self.paths.locust / 'locust.log'})")
        return t_end - t_begin

    def stop_services(self) -> None:
        # Load first, then the app, then its pooler; the sampler last so it sees them go.
        if self._locust is not None:
            self.sup.stop(self._locust, timeout=5)
            self._locust = None
        for d in self.dynos:
            self.sup.stop(d.proc, timeout=10)
        self.dynos = []
        if self.bouncer is not None:
            self.bouncer.stop()
            # keep its log and ini beside the cell's other logs
            self.paths.logs.mkdir(parents=True, exist_ok=True)
            for name in ("pgbouncer.log", "pgbouncer.ini"):
                if (self.bouncer.base_dir / name).exists():
                    shutil.copy(self.bouncer.base_dir / name, self.paths.logs / name)
            remove_service_dir(self.paths.root, "pgbouncer")
            self.bouncer = None
        if self._sampler is not None:
            self.sup.stop(self._sampler, timeout=5)
            self._sampler = None
        (self.sup.private.path / f"sampler-{self.cell.cell_id}.json").unlink(missing_ok=True)


def _not_run(cell: Cell, paths: CellPaths, status: str, error: str | None, reason: str | None) -> dict:
    doc = {
        "schema_version": SCHEMA_VERSION, "cell_id": cell.cell_id, "group": cell.group, "repeat": cell.repeat,
        "params": cell.params(), "axes": cell.axes, "predicted": predict(cell.knobs),
        "status": status, "error": error, "skip_reason": reason, "phases": {}, "services": {},
        "overhead_s": 0.0, "requests": 0,
    }
    write_json_atomic(paths.json, doc)
    return doc


def skipped(cell: Cell, paths: CellPaths, reason: str) -> dict:
    return _not_run(cell, paths, "skipped", None, reason)


def failed_to_start(cell: Cell, paths: CellPaths, error: str) -> dict:
    return _not_run(cell, paths, "failed", error, None)


def load_cell_doc(paths: CellPaths) -> dict | None:
    try:
        return json.loads(Path(paths.json).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
