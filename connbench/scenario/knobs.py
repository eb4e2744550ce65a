"""What a scenario may say: the driver-free models (Knobs, Mix, Expect, Fault, ProbeSettings).

Strict everywhere: TOML has types, so "2" for an integer is a mistake to report, not to coerce;
inf and nan are refused; knob values given in `where`, `exclude` and `include` are validated and
normalised like the knobs themselves, so a misspelt value is an error rather than a rule that
silently matches nothing. Imports nothing that talks to a database.
"""

from __future__ import annotations

import re
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from connbench.contract import ERROR_CLASSES
from connbench.text import clip

Pooling = Literal["direct", "django-pool", "pgbouncer-session", "pgbouncer-transaction", "dj-db-conn-pool"]
WorkerClass = Literal["sync", "gthread", "gevent", "asgi"]
View = Literal["sync", "async"]
Server = Literal["embedded", "system"]
Auth = Literal["scram-sha-256", "md5", "trust"]
FaultAction = Literal["terminate_backends", "restart_postgres", "restart_pgbouncer", "kill_worker", "pause"]
POOLINGS: tuple[str, ...] = get_args(Pooling)
WORKER_CLASSES: tuple[str, ...] = get_args(WorkerClass)
PGBOUNCER_MODES = ("pgbouncer-session", "pgbouncer-transaction")
NONE_SPELLINGS = ("none", "null", "unlimited")
# Which knobs set the load (settings are compared only under the same load), and which load model uses each.
LOAD_KNOBS = ("users", "rate", "spawn_rate", "arrival_rate", "arrival", "max_in_flight")
OPEN_ONLY = ("arrival_rate", "arrival", "max_in_flight")  # only an open-model cell (arrival_rate) uses these
CLOSED_ONLY = ("users", "spawn_rate", "rate")  # only a closed-model cell (users) uses these
# A name that becomes a path component: no "." / "..", no separators, bounded.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,79}")

STRICT = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class Mix(BaseModel):
    """Endpoint weights for the Locust user, and the slow query's duration."""

    model_config = STRICT
    health: float = Field(0, ge=0, le=1e6)
    read: float = Field(1, ge=0, le=1e6)
    write: float = Field(0, ge=0, le=1e6)
    slow: float = Field(0, ge=0, le=1e6)
    slow_ms: int = Field(50, ge=0, le=60_000)
    # the eight /hazard/<kind> endpoints (target_app/hazard_views.py), this weight shared equally among them
    hazards: float = Field(0, ge=0, le=1e6)

    @model_validator(mode="after")
    def _some_weight(self) -> Mix:
        if self.health + self.read + self.write + self.slow + self.hazards <= 0:
            raise ValueError("at least one endpoint weight (health, read, write, slow, hazards) must be > 0")
        return self


class Knobs(BaseModel):
    """Everything one cell is: app shape, Django connection settings, pooling, database, load."""

    model_config = STRICT
    # app shape
    dynos: int = Field(1, ge=1, le=32, description="gunicorn masters, one port each (one simulated dyno)")
    workers: int = Field(2, ge=1, le=64, description="gunicorn workers per dyno")
    threads: int = Field(1, ge=1, le=64, description="threads per worker (worker_class = \"gthread\")")
    worker_class: WorkerClass = Field("sync", description="gunicorn worker class; asgi: uvicorn's worker")
    gevent_connections: int = Field(100, ge=1, le=10_000, description="gunicorn worker_connections")
    view: View = Field("sync", description="the database views: sync, or async (Django's async ORM)")
    # Django
    conn_max_age: int | Literal["none"] = Field(0, description="Django CONN_MAX_AGE: seconds, or \"none\" (unlimited)")
    health_checks: bool = Field(False, description="Django CONN_HEALTH_CHECKS")
    pooling: Pooling = Field("direct", description="how the app reaches PostgreSQL: direct, a pool, or PgBouncer")
    # stale connections: the server reaps a session idle (or idle in a transaction) this long; 0 = never
    idle_session_timeout_ms: int = Field(0, ge=0, le=86_400_000, description="PostgreSQL idle_session_timeout "
                                         "for the app's sessions, ms (0: off)")
    idle_in_transaction_session_timeout_ms: int = Field(0, ge=0, le=86_400_000, description="PostgreSQL "
                                                        "idle_in_transaction_session_timeout for the app's sessions, "
                                                        "ms (0: off)")
    # fork safety: gunicorn's --preload loads the app in the master; a project that touches the database at import
    # (a startup check, a cache warm-up) then opens a connection, or Django's pool, that every worker inherits
    preload: bool = Field(False, description="gunicorn --preload: the app is imported once, in the master")
    app_touch_db_at_import: bool = Field(False, description="the bundled app runs a query at import (a startup "
                                         "check): with preload, in the master, before the fork")
    close_pools_before_fork: bool = Field(False, description="the fix: gunicorn's pre_fork closes the master's "
                                          "connections and Django's pools, so each worker opens its own")
    server_side_cursors: Literal["auto", "on", "off"] = Field(
        "auto", description="Django's named cursors (QuerySet.iterator()): auto = off (DISABLE_SERVER_SIDE_CURSORS) "
                            "under pgbouncer-transaction, Django's default elsewhere")
    # Django's native psycopg pool (pooling = "django-pool")
    pool_min_size: int = Field(1, ge=0, le=1000, description="Django's pool: connections kept open")
    pool_max_size: int = Field(4, ge=1, le=1000, description="Django's pool: connections at most, per worker")
    pool_timeout: float = Field(5.0, gt=0, le=600, description="Django's pool: seconds to wait for one")
    # PgBouncer (pooling = "pgbouncer-*")
    pgbouncer_pool_size: int = Field(4, ge=1, le=10_000, description="PgBouncer default_pool_size")
    pgbouncer_max_client_conn: int = Field(200, ge=1, le=100_000, description="PgBouncer max_client_conn")
    pgbouncer_reserve_pool: int = Field(0, ge=0, le=10_000, description="PgBouncer reserve_pool_size")
    pgbouncer_query_wait_timeout: int = Field(10, ge=1, le=3600, description="seconds (PgBouncer takes whole seconds)")
    pgbouncer_server_idle_timeout: float = Field(600, ge=0, le=86_400, description="PgBouncer server_idle_timeout, "
                                                 "seconds: a server connection idle longer is closed (0: never)")
    pgbouncer_client_idle_timeout: float = Field(0, ge=0, le=86_400, description="PgBouncer client_idle_timeout, "
                                                 "seconds: a client (the app's connection) idle longer is "
                                                 "disconnected (0: never)")
    # django-db-connection-pool (pooling = "dj-db-conn-pool")
    dbcp_pool_size: int = Field(2, ge=1, le=1000, description="SQLAlchemy pool_size, per worker")
    dbcp_max_overflow: int = Field(2, ge=0, le=1000, description="SQLAlchemy max_overflow")
    dbcp_recycle: int = Field(3600, ge=-1, le=10**7, description="SQLAlchemy pool_recycle, seconds (-1: never)")
    dbcp_pre_ping: bool = Field(False, description="SQLAlchemy pool_pre_ping")
    dbcp_timeout: float = Field(5.0, gt=0, le=600, description="SQLAlchemy pool_timeout, seconds")
    # database server, and how connections to it are set up (as in production: SCRAM, TLS)
    max_connections: int = Field(100, ge=5, le=10_000, description="PostgreSQL max_connections")
    server: Server = Field("embedded", description="embedded: the wheel's PostgreSQL; system: Debian's (TLS)")
    auth: Auth = Field("scram-sha-256", description="pg_hba method and how passwords are stored")
    tls: bool = Field(False, description="PostgreSQL ssl=on, sslmode=require (PgBouncer: both sides)")
    calibrate_n: int = Field(50, ge=0, le=10_000, description="connections opened to time one (0: none)")
    # load
    users: int = Field(8, ge=1, le=2000, description="Locust users (closed model)")
    spawn_rate: float = Field(8, gt=0, le=10_000, description="users started per second")
    rate: float | None = Field(None, gt=0, le=100_000, description="requests/s per user (constant throughput)")
    # open model: requests sent on a schedule, latency from when each should have been sent
    arrival_rate: float | None = Field(None, gt=0, le=100_000, description="requests/s offered in total (open model)")
    arrival: Literal["poisson", "uniform"] = Field("poisson", description="open model: inter-arrival gaps")
    max_in_flight: int = Field(1000, ge=1, le=100_000, description="open model: cap on requests out at once")
    duration: float = Field(10, gt=0, le=3600, description="seconds measured")
    warmup: float = Field(2, ge=0, le=600, description="seconds of load before the measure window")
    cooldown: float = Field(3, ge=0, le=600, description="seconds after the load: what stays open")
    mix: Mix = Field(Mix(), description="the bundled app's endpoint weights")

    @field_validator("conn_max_age", mode="before")
    @classmethod
    def _cma(cls, v: Any) -> Any:
        # "None", "unlimited" and "none" are one setting: normalised here so they make one cell
        if isinstance(v, str) and v.strip().lower() in NONE_SPELLINGS:
            return "none"
        if isinstance(v, bool) or (isinstance(v, int) and not 0 <= v <= 10**7):
            raise ValueError('conn_max_age must be seconds (integer 0..10000000) or "none"')
        return v

    @model_validator(mode="after")
    def _one_load_model(self) -> Knobs:
        both = sorted({"users", "rate"} & self.model_fields_set)
        if self.arrival_rate is not None and both:
            raise ValueError(f"arrival_rate makes the cell open-model: {' and '.join(both)} do not apply; "
                             "give either arrival_rate or users (and rate)")
        return self

    @property
    def open_model(self) -> bool:
        return self.arrival_rate is not None

    @property
    def persistent(self) -> bool:
        return self.conn_max_age == "none" or self.conn_max_age > 0

    @property
    def concurrency(self) -> int:
        """Requests one worker can run at once."""
        if self.worker_class == "asgi":  # an event loop: as many as the load sends
            return self.max_in_flight if self.open_model else self.users
        if self.worker_class == "gthread":
            return self.threads
        if self.worker_class == "gevent":
            return self.gevent_connections
        return 1

    def server_key(self) -> tuple[int, str, str, bool]:
        """Cells with equal server keys share one PostgreSQL server."""
        return (self.max_connections, self.server, self.auth, self.tls)


KNOB_NAMES: tuple[str, ...] = tuple(Knobs.model_fields)


def allowed(field: str) -> str:
    """What a knob accepts, in words, for error messages."""
    f = Knobs.model_fields.get(field)
    if f is None:
        return "one of: " + ", ".join(KNOB_NAMES)
    if field == "conn_max_age":
        return 'seconds (integer >= 0) or "none"'
    if field == "mix":
        return "a table with health, read, write, slow, hazards (weights >= 0) and slow_ms"
    args = getattr(f.annotation, "__args__", None)
    if args and all(isinstance(a, str) for a in args):
        return "one of: " + ", ".join(repr(a) for a in args)
    kind = getattr(f.annotation, "__name__", None) or str(f.annotation).replace("typing.", "")
    bounds = []
    for m in f.metadata:
        for attr, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if getattr(m, attr, None) is not None:
                bounds.append(f"{sym} {getattr(m, attr)}")
    return kind + (" " + " and ".join(bounds) if bounds else "")


def normalize_knob(key: str, value: Any) -> Any:
    """The canonical form of one knob value (what Knobs stores); ValueError says what is allowed."""
    if key not in Knobs.model_fields:
        raise ValueError(f"{clip(key, 80)} is not a knob; allowed: {', '.join(KNOB_NAMES)}")
    try:
        v = getattr(Knobs(**{key: value}), key)
    except ValidationError as e:
        raise ValueError(f"{clip(value)} is not a valid {key} ({e.errors()[0]['msg']}); "
                         f"allowed: {allowed(key)}") from None
    return v.model_dump() if isinstance(v, BaseModel) else v


def normalize_rule(rule: dict[str, Any]) -> dict[str, list[Any]]:
    """A `where`/`exclude` rule: knob -> value or [values], each checked and normalised."""
    out: dict[str, list[Any]] = {}
    for key, want in rule.items():
        options = want if isinstance(want, list) else [want]
        if not options:
            raise ValueError(f"{key}: an empty list matches nothing")
        out[key] = [normalize_knob(key, o) for o in options]
    return out


def rule_matches(rule: dict[str, list[Any]], knobs: dict[str, Any]) -> bool:
    """Every key of a normalised rule has one of its values in the cell's knobs."""
    return all(knobs.get(key) in options for key, options in rule.items())


class Selector(BaseModel):
    """Which cells an expectation or a fault applies to: cell ids or groups, and knob values."""

    model_config = STRICT
    cells: list[str] = Field(default_factory=list, description="cell ids (or groups)")
    where: dict[str, Any] = Field(default_factory=dict, description="knob = value or [values], like exclude")

    @field_validator("where", mode="after")
    @classmethod
    def _where(cls, v: dict[str, Any]) -> dict[str, Any]:
        return normalize_rule(v)

    def selects(self, cell_id: str, group: str | None, knobs: dict[str, Any]) -> bool:
        if self.cells and cell_id not in self.cells and group not in self.cells:
            return False
        return rule_matches(self.where, knobs)


class Expect(Selector):
    """A checked claim, like a k6 threshold: every limit given must hold in every selected cell."""

    name: str | None = Field(None, max_length=200)
    p95_ms_max: float | None = Field(None, gt=0)
    p99_ms_max: float | None = Field(None, gt=0)
    error_rate_max: float | None = Field(None, ge=0, le=1)
    errors_max: dict[str, int] = Field(default_factory=dict, description="error class -> most allowed")
    errors_min: dict[str, int] = Field(default_factory=dict, description="error class -> fewest expected")
    connections: Literal["predicted"] | int | None = Field(None, description="plateau equals")
    connections_max: Literal["predicted"] | int | None = Field(None, description="plateau at most")
    pgbouncer_server_max: int | None = Field(None, ge=0)
    held_after_cooldown_max: int | None = Field(None, ge=0)
    connections_bounded: bool | None = Field(
        None, description="true: the count settles; false: it keeps growing with requests (a leak)")
    transaction_pooling_safe: bool | None = Field(
        None, description="true: no request ran a statement that relies on session state (hazards.csv)")

    @model_validator(mode="after")
    def _check(self) -> Expect:
        for table in (self.errors_max, self.errors_min):
            for cls, n in table.items():
                if cls not in ERROR_CLASSES or not cls:
                    raise ValueError(f"unknown error class {clip(cls)}; allowed: {', '.join(ERROR_CLASSES)}")
                if n < 0:
                    raise ValueError(f"errors bound for {cls} must be >= 0 (got {n})")
        for name in ("connections", "connections_max"):
            v = getattr(self, name)
            if isinstance(v, int) and v < 0:
                raise ValueError(f"{name} must be >= 0 or \"predicted\" (got {v})")
        checks = [self.p95_ms_max, self.p99_ms_max, self.error_rate_max, self.connections, self.connections_max,
                  self.pgbouncer_server_max, self.held_after_cooldown_max, self.connections_bounded,
                  self.transaction_pooling_safe]
        if all(c is None for c in checks) and not self.errors_max and not self.errors_min:
            raise ValueError("an expectation needs at least one limit (e.g. p95_ms_max, connections)")
        return self


class Fault(Selector):
    """At `at` seconds into the measure phase, do `action` (recorded in events.csv)."""

    at: float = Field(ge=0, le=3600, description="seconds after the measure phase begins")
    action: FaultAction
    dyno: int = Field(0, ge=0, le=31, description="kill_worker: which dyno")
    seconds: float = Field(0, ge=0, le=3600, description="pause: how long no request is sent (idle timeouts fire)")

    @model_validator(mode="after")
    def _seconds(self) -> Fault:
        if self.action == "pause" and self.seconds <= 0:
            raise ValueError("a pause needs seconds > 0 (how long no request is sent)")
        if self.action != "pause" and self.seconds:
            raise ValueError(f"seconds is for action = \"pause\" only (this fault's action is {self.action})")
        return self


class ProbeSettings(BaseModel):
    model_config = STRICT
    mode: Literal["ramp", "sequential", "both"] = "ramp"
    stable_steps: int = Field(3, ge=1, le=100, description="stop after K steps without a rise")
    max_steps: int = Field(30, ge=1, le=1000)
    max_seconds: float = Field(120, gt=0, le=3600)
    step_requests: int = Field(20, ge=1, le=100_000, description="sequential: requests per step")
    step_seconds: float = Field(1.0, gt=0, le=60, description="ramp: seconds of load per step")
    ramp_start: int = Field(1, ge=1, le=1000)
    ramp_increment: int = Field(1, ge=1, le=1000)
    path: str = Field("/db/read", pattern=r"^/[\x21-\x7e]{0,500}$")
    settle_seconds: float = Field(0.3, ge=0, le=10, description="pause after a step before counting")
    leak_steps: int = Field(3, ge=2, le=100, description="a leak: the count rose over this many steps, "
                                                         "beyond what lazy opening explains")
    limit: int | None = Field(None, ge=1, le=1_000_000, description="connections the app's role may open")
    preboot: bool = Field(False, description="headroom: a Heroku Preboot deploy runs two sets of dynos")
    one_off: int = Field(0, ge=0, le=1000, description="headroom: one-off dynos (consoles, release phase)")


class ScenarioMeta(BaseModel):
    model_config = STRICT
    name: str = Field(description="letters, digits, '_', '.', '-'; it names the run directory")
    description: str = Field("", max_length=10_000)
    repeats: int = Field(1, ge=1, le=100)
    seed: int = Field(0, ge=0, le=2**63 - 1)
    allow_gevent_persistent: bool = Field(
        False, description="keep gevent cells with persistent connections (they pile up per greenlet)"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not SAFE_NAME.fullmatch(v):
            raise ValueError("must be 1-80 letters, digits, '_', '.' or '-', starting with a letter or digit")
        return v


# Knob combinations that cannot run, each with why (the matrix lists them as pruned).
PGBOUNCER_IDLE = {"pgbouncer_server_idle_timeout", "pgbouncer_client_idle_timeout"}


def prune_reason(k: Knobs, meta: ScenarioMeta) -> str | None:
    if k.pooling == "django-pool" and k.conn_max_age != 0:
        return "Django's pool requires CONN_MAX_AGE=0 (Django raises ImproperlyConfigured otherwise)"
    if k.pooling == "django-pool" and k.pool_min_size > k.pool_max_size:
        return f"pool_min_size {k.pool_min_size} > pool_max_size {k.pool_max_size} (psycopg_pool refuses it)"
    if k.worker_class == "gevent" and k.persistent and not meta.allow_gevent_persistent:
        return ("gevent with persistent connections holds one connection per greenlet that ever served a "
                "request (they pile up); set scenario.allow_gevent_persistent = true to show it")
    if k.tls and k.server == "embedded":
        return ('tls = true needs a PostgreSQL built with OpenSSL; the embedded wheel\'s is not: use '
                'server = "system" (Debian\'s postgresql package, installed by make)')
    if k.pooling.startswith("pgbouncer") and (k.idle_session_timeout_ms or k.idle_in_transaction_session_timeout_ms):
        return "idle session timeouts are sent as connection options, which PgBouncer refuses: use them without it"
    if not k.pooling.startswith("pgbouncer") and PGBOUNCER_IDLE & k.model_fields_set:
        return "PgBouncer's idle timeouts need a PgBouncer: pooling = \"pgbouncer-session\" or \"-transaction\""
    if k.app_touch_db_at_import and k.worker_class == "asgi":
        return "app_touch_db_at_import is the bundled app's WSGI module's (worker_class = \"asgi\" loads its ASGI one)"
    if k.worker_class != "gthread" and k.threads != 1:
        return f"threads={k.threads} only applies to worker_class='gthread'"
    return None
