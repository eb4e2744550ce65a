"""What the harness, the app under test and the locustfile share: nothing more.

Standard library only: target_app and locustfiles import this module (and errorclass, which
classifies with the names below) and nothing else of connbench. The harness hands each side its
whole configuration as one JSON environment variable, so a setting is named once, here, and the
app has no defaults of its own: a missing or malformed configuration is an error, not a guess.
"""

from __future__ import annotations

import json
import os
import random
import secrets
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, Self, TypeVar
from urllib.parse import quote, unquote

from connbench.errors import ComponentError

APP_ENV = "CONNBENCH_APP"  # AppConfig as JSON, for target_app/settings.py
LOAD_ENV = "CONNBENCH_LOAD"  # LoadConfig as JSON, for locustfiles/app.py
GENERATOR_ENV = "CONNBENCH_GENERATOR"  # a Locust worker's name in requests.csv (`connbench worker --name`)
DYNO_ENV = "CONNBENCH_DYNO"  # which simulated dyno a gunicorn master is (gunicorn_hooks)
APPNAME_PREFIX = "cb"  # application_name = "cb:d<dyno>:w<worker>": every connection attributed

# The response header that carries a failed request's error class from the app to the client.
ERROR_HEADER = "X-Connbench-Error"

# Every class a failed request can get; "" is a request that succeeded.
OK = ""
TOO_MANY_CLIENTS = "too_many_clients"
DJANGO_POOL_TIMEOUT = "django_pool_timeout"
DBCP_POOL_TIMEOUT = "dbcp_pool_timeout"
PGBOUNCER_WAIT_TIMEOUT = "pgbouncer_wait_timeout"
PGBOUNCER_MAX_CLIENT_CONN = "pgbouncer_max_client_conn"
CONNECTION_LOST = "connection_lost"
DB_UNAVAILABLE = "db_unavailable"
GUNICORN_WORKER_TIMEOUT = "gunicorn_worker_timeout"
CONNECTION_REFUSED = "connection_refused"
CLIENT_TIMEOUT = "client_timeout"
HTTP_5XX = "http_5xx"
# A view raised something outside the database and connection layers (a bug, a missing template):
# Django answered it with its own 500, untouched; the class only says it was not a connection failure.
APP_EXCEPTION = "app_exception"
CLIENT_ERROR = "client_error"
# Session state missing on the server connection a transaction pooler gave this transaction: a held cursor
# (Django's QuerySet.iterator(), DECLARE ... WITH HOLD) or a prepared statement declared on another one;
# or left on it by another client: Django names its cursors by thread id and counter, the same in every
# forked worker, so one worker's leftover cursor collides with another's on a shared server connection.
INVALID_CURSOR = "invalid_cursor"
PREPARED_STATEMENT_MISSING = "prepared_statement_missing"
DUPLICATE_CURSOR = "duplicate_cursor"
# Open model: the schedule said to send, but max_in_flight requests were already out. Never sent, so
# never a failure of the app: counted apart (k6's dropped_iterations), never silently skipped.
DROPPED = "dropped"
# Open model: sent, but still unanswered when the drain after the schedule ended; its latency_ms and
# service_ms are lower bounds (the time waited so far). A failure: the queue it stood in is the finding.
UNANSWERED = "unanswered"
ERROR_CLASSES = (
    TOO_MANY_CLIENTS, DJANGO_POOL_TIMEOUT, DBCP_POOL_TIMEOUT, PGBOUNCER_WAIT_TIMEOUT, PGBOUNCER_MAX_CLIENT_CONN,
    CONNECTION_LOST, DB_UNAVAILABLE, GUNICORN_WORKER_TIMEOUT, CONNECTION_REFUSED, CLIENT_TIMEOUT, HTTP_5XX,
    APP_EXCEPTION, CLIENT_ERROR, DROPPED, UNANSWERED, INVALID_CURSOR, PREPARED_STATEMENT_MISSING,
    DUPLICATE_CURSOR,
)  # fmt: skip

# requests.csv: one row per request, written by the locustfile's request hook. Unix seconds and
# milliseconds at full precision. t_intended: when the schedule said to send (open model; = t_start in a
# closed loop); t_start: when it was sent; latency_ms: response time, from t_intended to the response
# (free of coordinated omission); service_ms: from t_start to the response. A dropped request has
# t_start = t_intended, blank latency_ms and service_ms, status 0 and error_class "dropped".
# connect_ms, pool_ms, db_ms, app_ms, new_conn: the app's Server-Timing header (SERVER_TIMING), blank when the
# response carried none (no response, a dropped request, a server that is not the test app). backend_pid: the
# PostgreSQL backend the request's last query ran on (through PgBouncer: PgBouncer's server connection is not
# visible to the app, so it is the backend PgBouncer gave that query); worker_pid: the gunicorn worker that
# answered; thread: the native id (threading.get_native_id) of the thread that ran the queries, under ASGI the
# executor thread; conn_close: 1 when Django's rule (CONN_MAX_AGE expired or 0, errors, autocommit changed) had
# the connection due to close at request end, 0 when it was kept. backend_pid, thread and conn_close are blank
# when no query ran, never 0. hazards: the session-state hazard kinds (connbench.sqlhazards.KINDS) the request's
# statements had, space-separated, blank for none; hazard_examples: for a kind this worker sends the first time
# on this path, {kind: example statement} as JSON (literals as ?, at most 200 characters), else blank.
# check_ms: the ms of Django's health check (CONN_HEALTH_CHECKS' SELECT 1 on a reused connection; part of db_ms),
# blank when none ran in the request.
# generator: the Locust process that sent it: "local" (one process), or a worker's name (GENERATOR_ENV, else
# "w<worker index>").
# The bundled app's /hazard/<name> endpoints, one per session-state hazard (target_app/hazard_views.py), which
# the mix's `hazards` weight spreads over.
HAZARD_ENDPOINTS = ("set", "set_config", "advisory", "listen", "temp", "hold", "prepare", "iterator")
HAZARD_COLUMNS = ("hazards", "hazard_examples")  # text; the other timing columns are numbers
TIMING_COLUMNS = ("connect_ms", "pool_ms", "db_ms", "app_ms", "new_conn", "backend_pid", "worker_pid", "thread",
                  "conn_close", *HAZARD_COLUMNS, "check_ms")
REQUESTS_COLUMNS = ("t_intended", "t_start", "endpoint", "latency_ms", "service_ms", "status", "error_class",
                    "dyno", *TIMING_COLUMNS, "generator")

# Locust's master/worker mode: every worker, local or remote, sends its rows to the master in ROWS_MESSAGE
# batches ({"v": ROWS_PROTOCOL, "generator", "pid", "rows", "usage": [t, cpu_seconds, rss_bytes], "final"}); the
# master hands each worker its share of the schedule (SHARE_MESSAGE: {"share", "shares"}) when the test starts and
# ends the run (STOP_MESSAGE); it writes the rows beside the rows of request_log_dir, the workers' own CPU to
# GENERATORS_FILE and what happened to its workers to GENERATOR_EVENTS_FILE (events.csv's columns: t, kind,
# detail), which the harness reads as the test runs.
ROWS_MESSAGE, SHARE_MESSAGE, STOP_MESSAGE = "connbench_rows", "connbench_share", "connbench_stop"
ROWS_PROTOCOL = 1
GENERATORS_FILE = "generators.csv"
GENERATORS_COLUMNS = ("t", "generator", "pid", "cpu_seconds", "rss_bytes", "t_master")
GENERATOR_EVENTS_FILE = "generator-events.csv"
GENERATOR_LOST = "generator_lost"  # a worker stopped answering or quit mid-test: [generator] on_worker_lost decides
GENERATOR_BROKEN = "generator_broken"  # the cell fails: not the workers expected, rows of another shape, no final
GENERATOR_END = "generator_end"  # the master ended the run itself, every worker's last rows in

# The W3C Server-Timing header: `connect;dur=1.2, pool;dur=0, db;dur=0.4, app;dur=0.3, conn;desc=new,
# backend;desc=4242, worker;desc=311, thread;desc=312, close;desc=keep`. connect: ms opening a physical connection
# in this request; pool: ms waiting for a pooled one; db: ms executing queries; app: the rest of the request inside
# the app; conn: "new" if it opened one, else "reused"; backend, thread: the backend pid and native thread id of
# its last query (absent when none ran); worker: the answering process's pid; close: "due" or "keep" (Django's
# rule at request end, absent when no connection was open); check: ms of Django's health check (absent: none
# ran). With session-state hazards (connbench.sqlhazards):
# `hazard;desc="set_session listen"` and, the first time a worker sees a kind on a path, one
# `hazard_example;desc=<kind>:<example, percent-encoded>` per kind (percent-encoding keeps commas and quotes out).
SERVER_TIMING = "Server-Timing"
_TIMING_METRICS = ("connect", "pool", "db", "app")
_IDS = ("backend", "worker", "thread")


def server_timing_header(connect: float, pool: float, db: float, app: float, new_conn: bool,
                         backend: int | None = None, worker: int | None = None, thread: int | None = None,
                         close_due: bool | None = None, hazards: Iterable[str] = (),
                         examples: dict[str, str] | None = None, check: float | None = None) -> str:
    durs = ", ".join(f"{name};dur={ms:.3f}" for name, ms in zip(_TIMING_METRICS, (connect, pool, db, app), strict=True))
    ids = "".join(f", {name};desc={v}" for name, v in zip(_IDS, (backend, worker, thread), strict=True) if v)
    close = "" if close_due is None else f', close;desc={"due" if close_due else "keep"}'
    kinds = " ".join(sorted(hazards))
    extra = f', hazard;desc="{kinds}"' if kinds else ""
    extra += "".join(f", hazard_example;desc={k}:{quote(v, safe='')}" for k, v in sorted((examples or {}).items()))
    extra += "" if check is None else f", check;dur={check:.3f}"
    return f'{durs}, conn;desc={"new" if new_conn else "reused"}{ids}{close}{extra}'


def _positive(value: str) -> str:
    """An id as requests.csv keeps it: a positive integer, else blank (never 0, never text)."""
    return value if value.isdigit() and int(value) > 0 else ""


def parse_server_timing(header: str | None) -> tuple[str, ...]:
    """TIMING_COLUMNS' cells (connect_ms, pool_ms, db_ms, app_ms, new_conn, backend_pid, worker_pid, thread,
    conn_close, hazards, hazard_examples, check_ms) as requests.csv writes them; blanks for what is absent."""
    found: dict[str, str] = {}
    examples: dict[str, str] = {}
    for entry in (header or "").split(","):
        name, _, params = entry.strip().partition(";")
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            value = value.strip().strip('"')
            if key == "dur" and name in _TIMING_METRICS:
                found[name] = value
            elif key == "desc" and name == "conn":
                found["conn"] = {"new": "1", "reused": "0"}.get(value, "")
            elif key == "desc" and name in _IDS:
                found[name] = _positive(value)
            elif key == "desc" and name == "close":
                found["close"] = {"due": "1", "keep": "0"}.get(value, "")
            elif key == "desc" and name == "hazard":
                found["hazard"] = " ".join(k for k in value.split() if k.isidentifier())
            elif key == "dur" and name == "check":
                found["check"] = value
            elif key == "desc" and name == "hazard_example":
                kind, _, text = value.partition(":")
                if kind.isidentifier():
                    examples[kind] = unquote(text)[:200]
    return (*(found.get(m, "") for m in _TIMING_METRICS), found.get("conn", ""),
            *(found.get(i, "") for i in _IDS), found.get("close", ""), found.get("hazard", ""),
            json.dumps(examples, sort_keys=True) if examples else "", found.get("check", ""))


class ContractError(ComponentError, RuntimeError):
    """A side was started without (or with a malformed) configuration from the harness."""


class _FromDict(Protocol):
    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self: ...


_Config = TypeVar("_Config", bound=_FromDict)


def _from_env(name: str, cls: type[_Config]) -> _Config:
    raw = os.environ.get(name)
    if not raw:
        raise ContractError(f"{name} is not set: this process is meant to be started by connbench")
    try:
        return cls.from_dict(json.loads(raw))
    except (ValueError, TypeError, KeyError) as e:
        raise ContractError(f"{name} is malformed ({type(e).__name__}: {e})") from None


@dataclass(frozen=True)
class Database:
    host: str
    port: int
    name: str
    user: str
    password: str
    sslmode: str = "disable"  # libpq's: "require" when the cell runs with tls = true


@dataclass(frozen=True)
class AppConfig:
    """The Django connection settings of one cell, as the harness decided them."""

    db: Database
    conn_max_age: int | None  # None: unlimited persistent connections
    health_checks: bool
    pooling: str  # one of connbench.scenario.knobs.POOLINGS
    pool: dict[str, Any] = field(default_factory=dict)  # Django's native pool: min_size, max_size, timeout
    dbcp: dict[str, Any] = field(default_factory=dict)  # django-db-connection-pool's POOL_OPTIONS
    # Django's SECRET_KEY: random per configuration (nothing here signs anything anyone keeps)
    secret_key: str = field(default_factory=lambda: secrets.token_hex(16))
    connect_timeout: int = 10
    view: str = "sync"  # "async": the database endpoints are async views using Django's async ORM
    host: str = "127.0.0.1"  # the address the app is served on: Django's ALLOWED_HOSTS holds it
    server_side_cursors: str = "auto"  # Django's named cursors: auto (off under transaction pooling), on, off
    touch_db_at_import: bool = False  # the bundled app's wsgi/asgi module runs a query when imported
    close_pools_before_fork: bool = False  # gunicorn's pre_fork closes the master's connections and pools
    # PostgreSQL settings for the app's sessions, sent at connect time (libpq options): the server enforces
    # them as if set on the server, e.g. idle_session_timeout reaping idle persistent connections
    session_settings: dict[str, str] = field(default_factory=dict)

    def allowed_hosts(self) -> list[str]:
        return list(dict.fromkeys(["127.0.0.1", "localhost", "[::1]", f"[{self.host}]" if ":" in self.host
                                   else self.host]))

    def to_env(self) -> dict[str, str]:
        return {APP_ENV: json.dumps(asdict(self))}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AppConfig:
        return cls(**{**d, "db": Database(**d["db"])})

    @classmethod
    def from_env(cls) -> AppConfig:
        return _from_env(APP_ENV, cls)

    def django_database(self) -> dict[str, Any]:
        """settings.DATABASES["default"] for this configuration."""
        db: dict[str, Any] = {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": self.db.host, "PORT": str(self.db.port), "NAME": self.db.name,
            "USER": self.db.user, "PASSWORD": self.db.password,
            "CONN_MAX_AGE": self.conn_max_age,
            "CONN_HEALTH_CHECKS": self.health_checks,
            "OPTIONS": {"connect_timeout": self.connect_timeout, "sslmode": self.db.sslmode},
        }
        if self.session_settings:
            db["OPTIONS"]["options"] = " ".join(f"-c {k}={v}" for k, v in sorted(self.session_settings.items()))
        if self.pooling == "django-pool":
            db["OPTIONS"]["pool"] = dict(self.pool)
        elif self.pooling == "dj-db-conn-pool":
            db["ENGINE"] = "dj_db_conn_pool.backends.postgresql"
            db["POOL_OPTIONS"] = dict(self.dbcp)
        # Transaction pooling hands each transaction any server connection: named cursors (server-side) would not
        # survive, so by default Django's documented setting turns them off there; "on" shows what they do.
        if {"on": False, "off": True}.get(self.server_side_cursors, self.pooling == "pgbouncer-transaction"):
            db["DISABLE_SERVER_SIDE_CURSORS"] = True
        return db


@dataclass(frozen=True)
class LoadConfig:
    """What the locustfile needs: where the dynos are, what to request, how fast, where to log."""

    targets: list[str]  # base URLs, one per dyno; users (closed) or requests (open) spread round-robin
    mix: dict[str, float]  # weights for health, read, write, slow; and slow_ms
    rate: float | None  # closed model: requests/s per user (constant throughput); None = as fast as possible
    request_log_dir: str | None  # the raw per-request log (None: not logged)
    started_file: str | None  # written with the unix time the test started
    # open model (arrival_rate set): the schedule, split over `processes` Locust processes
    arrival_rate: float | None = None  # requests/s offered in total
    arrival: str = "poisson"  # poisson | uniform
    max_in_flight: int = 1000  # per process: beyond it a scheduled request is dropped (and logged)
    schedule_s: float = 0.0  # how long the schedule runs (warm-up + measure)
    seed: int = 0
    processes: int = 1
    drain_s: float = 10.0  # after the schedule: how long requests in flight may still be answered
    paths: dict[str, float] | None = None  # [load] paths: GET path -> weight, instead of the mix's endpoints
    run_time_s: float | None = None  # a Locust master ends the test itself after this (MasterLog.end_after)
    # `pause` faults: [start, end) seconds from the test's start in which no request is sent (the open model's
    # schedule has no arrival there: not offered, so never dropped)
    pauses: list[tuple[float, float]] = field(default_factory=list)

    def to_env(self) -> dict[str, str]:
        return {LOAD_ENV: json.dumps(asdict(self))}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoadConfig:
        return cls(**{**d, "pauses": [tuple(p) for p in d.get("pauses", [])]})

    def paused_until(self, since_start: float) -> float | None:
        """The end of the pause `since_start` (s from the test's start) falls in, else None."""
        return next((end for start, end in self.pauses if start <= since_start < end), None)

    @classmethod
    def from_env(cls) -> LoadConfig:
        return _from_env(LOAD_ENV, cls)


def arrival_times(rate: float, seconds: float, arrival: str, seed: int, share: int = 0, shares: int = 1) -> list[float]:
    """Offsets (s from the schedule's start) at which requests are to be sent.

    The whole schedule is drawn once from the seed, and process `share` of `shares` takes every
    shares-th arrival: the total offered rate holds however the load is split, and a run repeats.
    Poisson: exponential gaps (independent arrivals, as from many users); uniform: 1/rate apart.
    """
    rng = random.Random(seed)
    out: list[float] = []
    t, i = 0.0, 0
    while True:
        # uniform: i / rate, not a running sum, so a window of D seconds holds exactly D x rate arrivals
        t = t + rng.expovariate(rate) if arrival == "poisson" else i / rate
        if t >= seconds:
            return out
        if i % shares == share:
            out.append(t)
        i += 1
