"""A cell's services together: PgBouncer (when the cell has one), the gunicorn dynos and the sampler,
in front of the matrix's PostgreSQL. Started, stopped and restarted here only: the cell, the probe
and fault injection all go through a Stack.

It also translates a cell's Knobs into each service's own small configuration, so a service knows
nothing of scenarios.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from subprocess import Popen
from typing import Any, Literal, NotRequired, TypedDict

import psycopg

from connbench import results as R
from connbench.contract import AppConfig, Database, LoadConfig
from connbench.results import CellPaths, write_json_atomic
from connbench.scenario.knobs import PGBOUNCER_MODES, Fault, Knobs
from connbench.scenario.model import GeneratorSpec
from connbench.scenario.project import Project
from connbench.services import gunicorn
from connbench.services.database import DatabaseServer
from connbench.services.django_app import DjangoApp, package_root
from connbench.services.external import ExternalServer
from connbench.services.locust import LocustConfig
from connbench.services.pgbouncer import PgBouncer, PgBouncerConfig
from connbench.services.postgres import ConnKwargs
from connbench.services.procs import (
    RunAs,
    ServiceError,
    Supervisor,
    exited,
    remove_service_dir,
    service_dir,
    wait_until,
)

ConnPath = Literal["direct", "pgbouncer"]  # how the app's connections reach PostgreSQL (CellDoc.connect_cost)


class ProcEntry(TypedDict):
    """A process the sampler accounts CPU to (its procs file: component -> entries)."""

    pid: int
    tree: NotRequired[bool]  # its children too
    dyno: NotRequired[int]


class StartedServices(TypedDict):
    """What Stack.start() started, as the cell records it (connbench.results.Services)."""

    postgres: dict[str, Any]
    pgbouncer: NotRequired[dict[str, object]]
    dynos: NotRequired[list[dict[str, int]]]  # set once the dynos are up


class _Distributed(TypedDict, total=False):
    """LocustConfig's master/worker fields."""

    local_workers: int
    expect_workers: int
    bind: str
    port: int
    wait_s: float


def app_config(k: Knobs, db: Database, host: str = "127.0.0.1") -> AppConfig:
    return AppConfig(
        db=db, conn_max_age=None if k.conn_max_age == "none" else k.conn_max_age, health_checks=k.health_checks,
        pooling=k.pooling, view=k.view, host=host, server_side_cursors=k.server_side_cursors,
        touch_db_at_import=k.app_touch_db_at_import, close_pools_before_fork=k.close_pools_before_fork,
        session_settings={name: str(ms) for name, ms in (
            ("idle_session_timeout", k.idle_session_timeout_ms),
            ("idle_in_transaction_session_timeout", k.idle_in_transaction_session_timeout_ms)) if ms},
        pool={"min_size": k.pool_min_size, "max_size": k.pool_max_size, "timeout": k.pool_timeout},
        dbcp={"POOL_SIZE": k.dbcp_pool_size, "MAX_OVERFLOW": k.dbcp_max_overflow, "RECYCLE": k.dbcp_recycle,
              "PRE_PING": k.dbcp_pre_ping, "TIMEOUT": k.dbcp_timeout},
    )


def gunicorn_config(k: Knobs, host: str = "127.0.0.1") -> gunicorn.GunicornConfig:
    return gunicorn.GunicornConfig(dynos=k.dynos, workers=k.workers, threads=k.threads,
                                   worker_class=k.worker_class, worker_connections=k.gevent_connections, host=host,
                                   preload=k.preload)


def django_app(project: Project) -> DjangoApp:
    """What the services need of the project: its entry points, its environment, and how to prepare a database."""
    prepare: list[tuple[str, ...]] = [("migrate", "--no-input", "-v", "0")] if project.migrate else []
    if project.bundled:
        prepare.append(("seed",))
    elif project.fixtures:
        prepare.append(("loaddata", *project.fixtures))
    return DjangoApp(wsgi=project.wsgi, asgi=project.asgi, env=project.app_env(), path=project.path,
                     prepare=tuple(prepare))


def external_prune_reason(server: ExternalServer, knobs: Knobs, faults: list[Fault]) -> str | None:
    """Why a cell cannot run on this server (it would need another server setting), or None."""
    set_ = knobs.model_fields_set
    if "max_connections" in set_ and knobs.max_connections != server.max_connections:
        return (f"max_connections = {knobs.max_connections}, but the server is yours (--database-url): "
                f"its max_connections is {server.max_connections}")
    for knob in ("server", "auth"):
        if knob in set_:
            return f"{knob} = {getattr(knobs, knob)!r} needs connbench's own server, not --database-url"
    if knobs.tls and not server.ssl:
        return "tls = true, but the server (--database-url) has ssl = off"
    if knobs.pooling.startswith("pgbouncer-") and not server.superuser:
        return ("PgBouncer needs the role's password secret from pg_authid: connect --database-url as a "
                "superuser, or leave PgBouncer out")
    if any(f.action == "restart_postgres" for f in faults):
        return "a restart_postgres fault needs connbench's own server, not --database-url"
    return None


def pgbouncer_config(k: Knobs) -> PgBouncerConfig:
    return PgBouncerConfig(pool_mode=k.pooling.removeprefix("pgbouncer-"), pool_size=k.pgbouncer_pool_size,
                           reserve_pool=k.pgbouncer_reserve_pool, max_client_conn=k.pgbouncer_max_client_conn,
                           query_wait_timeout=k.pgbouncer_query_wait_timeout, auth=k.auth,
                           server_idle_timeout=k.pgbouncer_server_idle_timeout,
                           client_idle_timeout=k.pgbouncer_client_idle_timeout)


def load_config(k: Knobs, targets: list[str], paths: CellPaths, processes: int = 1, seed: int = 0,
                project: Project | None = None, faults: Sequence[Fault] = ()) -> LoadConfig:
    pauses = [(k.warmup + f.at, k.warmup + f.at + f.seconds) for f in faults if f.action == "pause"]
    return LoadConfig(pauses=pauses, targets=targets, mix=k.mix.model_dump(), rate=k.rate,
                      paths=project.load_paths if project else None,
                      request_log_dir=str(paths.locust_raw), started_file=str(paths.locust_started),
                      arrival_rate=k.arrival_rate, arrival=k.arrival, max_in_flight=k.max_in_flight,
                      schedule_s=k.warmup + k.duration, seed=seed, processes=processes)


def load_shares(gen: GeneratorSpec | None) -> int:
    """How many Locust processes generate load (the open model's schedule is split over them)."""
    return gen.workers if gen is not None and gen.workers else 1


def locust_config(k: Knobs, project: Project | None = None, gen: GeneratorSpec | None = None) -> LocustConfig:
    mine = project.locustfile if project else None
    run_time = max(1, math.ceil(k.warmup + k.duration))  # never shorter than the windows it covers
    shares = load_shares(gen)
    # [generator] workers: a master and its workers; else one Locust process
    dist: _Distributed = {"local_workers": gen.local, "expect_workers": gen.workers, "bind": gen.bind,
                          "port": gen.port, "wait_s": gen.wait_s} if gen is not None and gen.workers else {}
    if k.open_model:  # one dispatcher per process; the schedule, not users, sets the load
        return LocustConfig(users=shares, spawn_rate=shares, run_time_s=run_time, user_class="OpenUser",
                            stop_timeout_s=LoadConfig.drain_s + 5, **dist)
    return LocustConfig(users=k.users, spawn_rate=k.spawn_rate, run_time_s=run_time, locustfile=mine,
                        user_class=None if mine else "AppUser", **dist)


class Stack:
    def __init__(self, k: Knobs, server: DatabaseServer, sup: Supervisor, user: RunAs | None, paths: CellPaths,
                 sample_interval: float = 0.1, project: Project | None = None, host: str = "127.0.0.1"):
        self.k, self.server, self.sup, self.user, self.paths = k, server, sup, user, paths
        self.host = host  # the dynos' address: loopback unless [generator] bind says otherwise
        self.project = project or Project()
        self.sample_interval = sample_interval
        self.root = package_root()
        self.bouncer: PgBouncer | None = None
        self.dynos: list[gunicorn.Dyno] = []
        self.sampler: Popen[bytes] | None = None
        self._procs: dict[str, list[ProcEntry]] = {}

    # -- what the sampler accounts CPU to ----------------------------------------------------
    def track(self, component: str, entries: list[ProcEntry] | None) -> None:
        """Point the sampler's CPU accounting at a component's processes (None: it is gone)."""
        if entries is None:
            self._procs.pop(component, None)
        else:
            self._procs[component] = entries
        self._write_procs()

    def _write_procs(self) -> None:
        write_json_atomic(self.paths.procs, self._procs)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> StartedServices:
        """Start PgBouncer (if any), the dynos and the sampler; returns what the cell records of them."""
        conn = self.server.connection  # the matrix (or the probe) started it before building the stack
        services: StartedServices = {"postgres": {**conn.public(), "version": self.server.version,
                                     "max_connections": self.server.max_connections,
                                     "app_slots": self.server.app_slots}}
        if self.server.pid is not None:  # your server (--database-url): not ours to account
            self._procs["postgres"] = [{"pid": self.server.pid, "tree": True}]
        db = conn.app_database()
        if self.k.pooling in PGBOUNCER_MODES:
            where = service_dir(self.paths.root, "pgbouncer", self.user)
            assert self.sup.private is not None  # the runner makes its PrivateDir before any stack starts
            self.bouncer = PgBouncer(where, pgbouncer_config(self.k), conn, self.sup, self.user,
                                     self.sup.private, self.server.role_secret(conn.app_user),
                                     self.server.tls_files)
            self.bouncer.start()
            db = self.bouncer.app_database()
            assert self.bouncer.proc is not None  # set by start()
            self._procs["pgbouncer"] = [{"pid": self.bouncer.proc.pid}]
            services["pgbouncer"] = self.bouncer.public()
        self.dynos = gunicorn.start_dynos(gunicorn_config(self.k, self.host), app_config(self.k, db, self.host),
                                          self.sup, self.paths.logs, django_app(self.project))
        self._procs["gunicorn-master"] = [{"pid": d.proc.pid, "dyno": d.index, "tree": True} for d in self.dynos]
        services["dynos"] = [{"dyno": d.index, "port": d.port} for d in self.dynos]
        self._write_procs()
        self._start_sampler()
        return services

    def app_paths(self) -> dict[ConnPath, ConnKwargs]:
        """How the app's role reaches the database, per path its connections take (for calibration)."""
        def kwargs(db: Database) -> ConnKwargs:
            return {"host": db.host, "port": db.port, "dbname": db.name, "user": db.user, "password": db.password,
                    "sslmode": db.sslmode}
        paths: dict[ConnPath, ConnKwargs] = {"direct": kwargs(self.server.connection.app_database())}
        if self.bouncer is not None:
            paths["pgbouncer"] = kwargs(self.bouncer.app_database())
        return paths

    def _start_sampler(self) -> None:
        conn = self.server.connection
        assert self.sup.private is not None  # the runner makes its PrivateDir before any stack starts
        conf = R.SamplerConfig(
            cell_dir=str(self.paths.root), pg=R.ConnInfo(**conn.super_kwargs()), app_role=conn.app_user,
            interval=self.sample_interval, procs_file=str(self.paths.procs),
            memory=self.server.kind != "external",  # embedded and system servers run here: /proc shows their backends
            pgbouncer=R.ConnInfo(**self.bouncer.admin_conninfo()) if self.bouncer else None,
            pgbouncer_database=conn.dbname)
        # it holds passwords: outside the run directory
        self._sampler_conf = self.sup.private.path / R.SamplerConfig.file_name(self.paths.root.name)
        conf.dump(self._sampler_conf)
        log = self.paths.sampler_log
        self.sampler = self.sup.spawn("sampler", [sys.executable, "-m", "connbench.sampler", str(self._sampler_conf)],
                                      log=log, cwd=self.root)

        # The first rows must exist before load starts, or the plateau misses its baseline.
        def first_rows() -> bool:  # a sample, not just the header: the baseline before any load
            exited(self.sampler, f"the sampler (log: {log})")
            return self.paths.db.exists() and self.paths.db.read_bytes().count(b"\n") >= 2

        if not wait_until(first_rows, 10):
            raise ServiceError(f"the sampler wrote nothing within 10 s (log: {log})")

    def stop(self) -> None:
        # The app, then its pooler; the sampler last so it sees them go. The load is over, so no request is
        # waited for: gthread and gevent workers get gunicorn's quick shutdown (SIGQUIT; on SIGTERM gthread waits
        # for its 1 s poll, gevent for its greenlets: measured 1.14 s and 0.45 s vs 0.25 s), sync and ASGI get
        # SIGTERM (sync exits at once, 0.13 s; uvicorn leaves SIGQUIT at its default, a core dump). A thread
        # still blocked in a query (PgBouncer's queued clients) holds its worker's exit: after 2 s it is killed.
        quick = self.k.worker_class in ("gthread", "gevent")
        sig = signal.SIGQUIT if quick else signal.SIGTERM
        for d in self.dynos:
            self.sup.send(d.proc, sig)
        for d in self.dynos:
            self.sup.stop(d.proc, sig=sig, timeout=2)
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
        if self.sampler is not None:
            self.sup.stop(self.sampler, timeout=5)
            self.sampler = None
            self._sampler_conf.unlink(missing_ok=True)

    # -- what fault injection may do (each returns what happened, for events.csv) --------------
    def terminate_backends(self) -> str:
        conn = self.server.connection
        with psycopg.connect(**conn.super_kwargs(), autocommit=True, application_name="connbench-fault") as c:
            row = c.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE usename = %s AND backend_type = 'client backend' AND pid <> pg_backend_pid() "
                "AND datname = current_database() "  # your server (--database-url): only the app's database
                "AND application_name <> 'connbench-sampler'",  # on your server the sampler is the app's role
                [conn.app_user],
            ).fetchone()
            assert row is not None  # an aggregate always returns one row
            n = row[0]
        return f"terminated {n} backends"

    def restart_postgres(self) -> str:
        t0 = time.monotonic()
        self.server.restart()
        pid = self.server.pid
        assert pid is not None  # restarted: running (your server's restart() raises; it is never ours to restart)
        self.track("postgres", [{"pid": pid, "tree": True}])
        return f"postgres fast shutdown + start ({time.monotonic() - t0:.2f} s)"

    def restart_pgbouncer(self) -> str:
        if self.bouncer is None:
            return "no PgBouncer in this cell"
        t0 = time.monotonic()
        self.bouncer.restart()
        assert self.bouncer.proc is not None  # set by restart()
        self.track("pgbouncer", [{"pid": self.bouncer.proc.pid}])
        return f"pgbouncer stopped + started ({time.monotonic() - t0:.2f} s)"

    def kill_worker(self, dyno: int) -> str:
        d = self.dynos[min(dyno, len(self.dynos) - 1)]
        pids = gunicorn.worker_pids(d)
        if not pids:
            return f"dyno {d.index}: no worker to kill"
        os.kill(pids[0], signal.SIGKILL)
        return f"dyno {d.index}: SIGKILL worker pid {pids[0]}"
