"""TOML scenario -> validated Scenario -> list of Cells (matrix expansion, exclusion, pruning).

Every error names the file, the key and what is allowed, and happens before anything starts.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from connbench.faults import Fault

Pooling = Literal["direct", "django-pool", "pgbouncer-session", "pgbouncer-transaction", "dj-db-conn-pool"]
WorkerClass = Literal["sync", "gthread", "gevent"]
POOLINGS: tuple[str, ...] = Pooling.__args__  # type: ignore[attr-defined]
PGBOUNCER_MODES = ("pgbouncer-session", "pgbouncer-transaction")


class ScenarioError(Exception):
    """A scenario that cannot run; the message says where and what is allowed."""


class Mix(BaseModel):
    """Endpoint weights for the Locust user, and the slow query's duration."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    health: float = Field(0, ge=0)
    read: float = Field(1, ge=0)
    write: float = Field(0, ge=0)
    slow: float = Field(0, ge=0)
    slow_ms: int = Field(50, ge=0, le=60_000)

    @model_validator(mode="after")
    def _some_weight(self) -> Mix:
        if self.health + self.read + self.write + self.slow <= 0:
            raise ValueError("at least one endpoint weight (health, read, write, slow) must be > 0")
        return self


class Knobs(BaseModel):
    """Everything one cell is: app shape, Django connection settings, pooling, database, load."""

    # strict: TOML has types, so "2" for workers is a mistake to report, not to coerce
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    # app shape
    dynos: int = Field(1, ge=1, le=32)
    workers: int = Field(2, ge=1, le=64)
    threads: int = Field(1, ge=1, le=64)
    worker_class: WorkerClass = "sync"
    gevent_connections: int = Field(100, ge=1, le=10_000, description="gunicorn worker_connections")
    # Django
    conn_max_age: int | Literal["none"] = 0
    health_checks: bool = False
    pooling: Pooling = "direct"
    # Django's native psycopg pool (pooling = "django-pool")
    pool_min_size: int = Field(1, ge=0, le=1000)
    pool_max_size: int = Field(4, ge=1, le=1000)
    pool_timeout: float = Field(5.0, gt=0, le=600)
    # PgBouncer (pooling = "pgbouncer-*")
    pgbouncer_pool_size: int = Field(4, ge=1, le=10_000)
    pgbouncer_max_client_conn: int = Field(200, ge=1, le=100_000)
    pgbouncer_reserve_pool: int = Field(0, ge=0, le=10_000)
    pgbouncer_query_wait_timeout: float = Field(10, gt=0, le=3600)
    # django-db-connection-pool (pooling = "dj-db-conn-pool")
    dbcp_pool_size: int = Field(2, ge=1, le=1000)
    dbcp_max_overflow: int = Field(2, ge=0, le=1000)
    dbcp_recycle: int = Field(3600, ge=-1)
    dbcp_pre_ping: bool = False
    dbcp_timeout: float = Field(5.0, gt=0, le=600)
    # database server
    max_connections: int = Field(100, ge=5, le=10_000)
    # load
    users: int = Field(8, ge=1, le=2000)
    spawn_rate: float = Field(8, gt=0)
    rate: float | None = Field(None, gt=0, description="requests/s per user (constant throughput)")
    duration: float = Field(10, gt=0, le=3600)
    warmup: float = Field(2, ge=0, le=600)
    cooldown: float = Field(3, ge=0, le=600)
    mix: Mix = Mix()

    @field_validator("conn_max_age", mode="before")
    @classmethod
    def _cma(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip().lower() in ("none", "null", "unlimited"):
            return "none"
        if isinstance(v, bool):
            raise ValueError('conn_max_age must be seconds (integer >= 0) or "none"')
        if isinstance(v, int) and v < 0:
            raise ValueError('conn_max_age must be seconds (integer >= 0) or "none"')
        return v

    @property
    def persistent(self) -> bool:
        return self.conn_max_age == "none" or (isinstance(self.conn_max_age, int) and self.conn_max_age > 0)

    @property
    def concurrency(self) -> int:
        """Requests one worker can run at once."""
        if self.worker_class == "gthread":
            return self.threads
        if self.worker_class == "gevent":
            return self.gevent_connections
        return 1

    def server_key(self) -> tuple:
        """Cells with equal server keys share one PostgreSQL server."""
        return (self.max_connections,)


class ScenarioMeta(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    description: str = ""
    repeats: int = Field(1, ge=1, le=100)
    seed: int = 0
    allow_gevent_persistent: bool = Field(
        False, description="keep gevent cells with persistent connections (they pile up per greenlet)"
    )


class Expect(BaseModel):
    """A checked claim, like a k6 threshold: every limit given must hold in every selected cell."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: str | None = None
    where: dict[str, Any] = Field(default_factory=dict, description="knob = value or [values], like exclude")
    cells: list[str] = Field(default_factory=list, description="cell ids (or groups)")
    p95_ms_max: float | None = Field(None, gt=0)
    p99_ms_max: float | None = Field(None, gt=0)
    error_rate_max: float | None = Field(None, ge=0, le=1)
    errors_max: dict[str, int] = Field(default_factory=dict, description="error class -> most allowed")
    errors_min: dict[str, int] = Field(default_factory=dict, description="error class -> fewest expected")
    connections: Literal["predicted"] | int | None = Field(None, description="plateau equals")
    connections_max: Literal["predicted"] | int | None = Field(None, description="plateau at most")
    pgbouncer_server_max: int | None = Field(None, ge=0)
    held_after_cooldown_max: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _check(self) -> Expect:
        from connbench.errorclass import CLASSES

        for key in self.where:
            if key not in Knobs.model_fields:
                raise ValueError(f"where.{key} is not a knob; allowed: {', '.join(Knobs.model_fields)}")
        for table in (self.errors_max, self.errors_min):
            for cls in table:
                if cls not in CLASSES or not cls:
                    raise ValueError(f"unknown error class {cls!r}; allowed: {', '.join(c for c in CLASSES if c)}")
        checks = [self.p95_ms_max, self.p99_ms_max, self.error_rate_max, self.connections, self.connections_max,
                  self.pgbouncer_server_max, self.held_after_cooldown_max]
        if all(c is None for c in checks) and not self.errors_max and not self.errors_min:
            raise ValueError("an expectation needs at least one limit (e.g. p95_ms_max, connections)")
        return self


class ScenarioFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scenario: ScenarioMeta
    defaults: dict[str, Any] = Field(default_factory=dict)
    matrix: dict[str, Any] = Field(default_factory=dict)
    faults: list[Fault] = Field(default_factory=list)
    probe: dict[str, Any] = Field(default_factory=dict)
    expect: list[Expect] = Field(default_factory=list)


@dataclass(frozen=True)
class Cell:
    cell_id: str
    group: str
    repeat: int
    knobs: Knobs
    axes: dict[str, Any] = field(default_factory=dict)

    def params(self) -> dict[str, Any]:
        return self.knobs.model_dump()


@dataclass
class Pruned:
    axes: dict[str, Any]
    reason: str


@dataclass
class Scenario:
    path: Path
    meta: ScenarioMeta
    defaults: dict[str, Any]
    axes: dict[str, list[Any]]
    exclude: list[dict[str, Any]]
    cells: list[Cell]
    pruned: list[Pruned]
    raw: dict[str, Any]
    faults: list[Fault] = field(default_factory=list)
    probe: dict[str, Any] = field(default_factory=dict)
    expect: list[Expect] = field(default_factory=list)

    @property
    def hash(self) -> str:
        blob = json.dumps(self.raw, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# Short names keep cell ids readable: "pool-direct_cma-none_w2".
SHORT = {
    "pooling": "pool",
    "conn_max_age": "cma",
    "health_checks": "hc",
    "workers": "w",
    "threads": "t",
    "dynos": "d",
    "worker_class": "k",
    "max_connections": "maxc",
    "users": "u",
}


def predict(k: Knobs, app_slots: int | None = None) -> dict[str, Any]:
    """Connections the parameters predict, with the reasoning stated.

    connections: what the server should hold at plateau under sustained load;
    connections_max: an upper bound (None = unbounded); pgbouncer_server_max for PgBouncer.
    """
    per_worker_conc = k.concurrency
    procs = k.dynos * k.workers
    out: dict[str, Any] = {"connections": None, "connections_max": None, "at_rest": None,
                           "pgbouncer_server_max": None, "pgbouncer_clients": None, "basis": ""}
    if k.pooling == "django-pool":
        # psycopg_pool adds a connection whenever a request has to wait -- even the first, while
        # min_size connections are still opening -- and keeps idle ones for max_idle (10 min):
        # measured here, one sync worker with min 1 / max 2 holds 2.
        out.update(connections=procs * k.pool_max_size, connections_max=procs * k.pool_max_size,
                   basis=f"{procs} processes x max_size {k.pool_max_size} (the pool grows whenever a "
                         f"request waits, from min_size {k.pool_min_size})")
    elif k.pooling == "dj-db-conn-pool":
        cap = k.dbcp_pool_size + k.dbcp_max_overflow
        per = min(per_worker_conc, k.dbcp_pool_size)
        out.update(connections=procs * per, connections_max=procs * min(per_worker_conc, cap),
                   basis=f"{procs} processes x min(concurrency {per_worker_conc}, POOL_SIZE {k.dbcp_pool_size})"
                         f"; at most +MAX_OVERFLOW {k.dbcp_max_overflow} while busy")
    else:
        app_side = procs * per_worker_conc
        if k.worker_class == "gevent":
            app_side = min(app_side, k.users)  # one connection per greenlet serving a request
        if k.pooling in PGBOUNCER_MODES:
            server_max = k.pgbouncer_pool_size + k.pgbouncer_reserve_pool
            clients = app_side if k.persistent else None
            out.update(pgbouncer_clients=clients, pgbouncer_server_max=server_max,
                       connections=min(app_side, server_max) if k.persistent or k.pooling.endswith("transaction")
                       else None,
                       connections_max=server_max,
                       basis=f"PgBouncer pool {k.pgbouncer_pool_size} + reserve {k.pgbouncer_reserve_pool} "
                             f"server connections; app side {app_side} clients")
        elif k.persistent:
            out.update(connections=app_side, connections_max=app_side,
                       basis=f"{k.dynos} dynos x {k.workers} workers x {per_worker_conc} "
                             f"{'greenlets' if k.worker_class == 'gevent' else 'threads'}, one connection each")
        else:
            out.update(connections=None, connections_max=app_side, at_rest=0,
                       basis="CONN_MAX_AGE=0: a connection per request, closed at its end: 0 at rest, "
                             f"one per request in flight under load, at most {app_side}")
    if out["at_rest"] is None and k.pooling not in PGBOUNCER_MODES:
        out["at_rest"] = out["connections"]
    if app_slots is not None and out["connections_max"] is not None:
        out["exceeds_app_slots"] = out["connections_max"] > app_slots
    return out


def _fmt_loc(loc: tuple) -> str:
    return ".".join(str(x) for x in loc if x != "__root__")


def _allowed(field: str) -> str:
    f = Knobs.model_fields.get(field)
    if f is None:
        return "one of: " + ", ".join(Knobs.model_fields)
    args = getattr(f.annotation, "__args__", None)
    if args and all(isinstance(a, str) for a in args):
        return "one of: " + ", ".join(repr(a) for a in args)
    if field == "conn_max_age":
        return 'seconds (integer >= 0) or "none"'
    if field == "mix":
        return "a table with health, read, write, slow (weights >= 0) and slow_ms"
    kind = getattr(f.annotation, "__name__", None) or str(f.annotation).replace("typing.", "")
    bounds = []
    for m in f.metadata:
        for attr, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if getattr(m, attr, None) is not None:
                bounds.append(f"{sym} {getattr(m, attr)}")
    return kind + (" " + " and ".join(bounds) if bounds else "")


def knobs_from(path: Path, where: str, values: dict[str, Any]) -> Knobs:
    try:
        return Knobs(**values)
    except ValidationError as e:
        msgs = []
        for err in e.errors():
            key = _fmt_loc(err["loc"])
            top = str(err["loc"][0]) if err["loc"] else ""
            if err["type"] == "extra_forbidden":
                msgs.append(f"unknown key '{key}' in {where}; allowed keys: {', '.join(Knobs.model_fields)}")
            else:
                msgs.append(f"{where}.{key}: {err['msg']} (got {err.get('input')!r}; allowed: {_allowed(top)})")
        raise ScenarioError(f"{path}: " + "; ".join(msgs)) from None


def prune_reason(k: Knobs, meta: ScenarioMeta) -> str | None:
    if k.pooling == "django-pool" and k.conn_max_age != 0:
        return "Django's pool requires CONN_MAX_AGE=0 (Django raises ImproperlyConfigured otherwise)"
    if k.worker_class == "gevent" and k.persistent and not meta.allow_gevent_persistent:
        return ("gevent with persistent connections holds one connection per greenlet that ever served a "
                "request (they pile up); set scenario.allow_gevent_persistent = true to show it")
    if k.worker_class != "gthread" and k.threads != 1:
        return f"threads={k.threads} only applies to worker_class='gthread'"
    return None


def _matches(rule: dict[str, Any], assignment: dict[str, Any]) -> bool:
    for key, want in rule.items():
        have = assignment.get(key)
        options = want if isinstance(want, list) else [want]
        if have not in options and str(have) not in [str(o) for o in options]:
            return False
    return True


def faults_for(scenario: Scenario, cell: Cell) -> list[Fault]:
    return [f for f in scenario.faults if expect_selects(f, cell)]


def selects(e: Expect | Fault, cell_id: str, group: str | None, knobs: dict[str, Any]) -> bool:
    """Does an expectation or fault apply to this cell? (its `cells` ids/groups, then `where` knobs)"""
    if e.cells and cell_id not in e.cells and group not in e.cells:
        return False
    return _matches(e.where, knobs) if e.where else True


def expect_selects(e: Expect | Fault, cell: Cell) -> bool:
    return selects(e, cell.cell_id, cell.group, cell.knobs.model_dump())


def _value_id(v: Any) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, dict):
        return "-".join(f"{k}{_value_id(x)}" for k, x in sorted(v.items()))
    return str(v).replace(".", "p").replace("/", "-").replace(" ", "")


_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,80}")


def cell_id_for(axes: dict[str, Any]) -> str:
    if not axes:
        return "default"
    return "_".join(f"{SHORT.get(k, k)}-{_value_id(v)}" for k, v in axes.items())


def load(path: Path | str) -> Scenario:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file") from None
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{path}: not valid TOML: {e}") from None
    return from_dict(raw, path)


def from_dict(raw: dict[str, Any], path: Path | str = Path("<scenario>")) -> Scenario:
    path = Path(path)
    try:
        sf = ScenarioFile(**raw)
    except ValidationError as e:
        msgs = []
        for err in e.errors():
            key = _fmt_loc(err["loc"])
            if err["type"] == "extra_forbidden":
                section = {"scenario": ScenarioMeta, "expect": Expect, "faults": Fault}.get(str(err["loc"][0]))
                allowed = (section or ScenarioFile).model_fields if len(err["loc"]) > 1 else ScenarioFile.model_fields
                msgs.append(f"unknown key '{key}'; allowed: {', '.join(allowed)}")
            elif err["type"] == "missing":
                msgs.append(f"missing required key '{key}'")
            else:
                msgs.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
        raise ScenarioError(f"{path}: " + "; ".join(msgs)) from None
    defaults = dict(sf.defaults)
    knobs_from(path, "[defaults]", defaults)  # defaults alone must be valid
    matrix = dict(sf.matrix)
    exclude = matrix.pop("exclude", [])
    include = matrix.pop("include", [])
    for name, rules in (("exclude", exclude), ("include", include)):
        if not isinstance(rules, list) or not all(isinstance(r, dict) and r for r in rules):
            raise ScenarioError(f"{path}: matrix.{name} must be a list of non-empty tables, e.g. "
                                f'[[matrix.{name}]] pooling = "django-pool"')
    axes: dict[str, list[Any]] = {}
    for key, values in matrix.items():
        if key not in Knobs.model_fields:
            raise ScenarioError(f"{path}: unknown key 'matrix.{key}'; allowed axes: {', '.join(Knobs.model_fields)}")
        if not isinstance(values, list):
            raise ScenarioError(f"{path}: matrix.{key} must be a list of values (got {values!r})")
        if not values:
            raise ScenarioError(f"{path}: matrix.{key} is an empty axis; give at least one value")
        axes[key] = values
    include = [dict(r) for r in include]
    explicit_ids = [r.pop("id", None) for r in include]
    for i, cid in enumerate(explicit_ids):
        if cid is not None and not (isinstance(cid, str) and _ID_RE.fullmatch(cid)):
            raise ScenarioError(f"{path}: matrix.include[{i}].id must be letters, digits, '-', '_' or '.' "
                                f"(got {cid!r})")
    for name, rules in (("exclude", exclude), ("include", include)):
        for i, rule in enumerate(rules):
            for key in rule:
                if key not in Knobs.model_fields:
                    raise ScenarioError(f"{path}: unknown key 'matrix.{name}[{i}].{key}'; "
                                        f"allowed: {', '.join(Knobs.model_fields)}")
    cells: list[Cell] = []
    pruned: list[Pruned] = []
    seen: set[str] = set()
    # no axes: the defaults are the one cell, unless include lists the cells explicitly
    combos = [dict(zip(axes.keys(), combo, strict=True)) for combo in itertools.product(*axes.values())] \
        if axes else ([] if include else [{}])
    # include (like asv): extra cells over [defaults], not subject to exclude
    combos += include
    for n, assignment in enumerate(combos):
        included = n >= len(combos) - len(include)
        where = "[matrix] " + ", ".join(f"{k}={v!r}" for k, v in assignment.items()) if assignment else "[defaults]"
        knobs = knobs_from(path, where, {**defaults, **assignment})
        if not included and any(_matches(rule, {**knobs.model_dump(), **assignment}) for rule in exclude):
            pruned.append(Pruned(assignment, "excluded by matrix.exclude"))
            continue
        reason = prune_reason(knobs, sf.scenario)
        if reason:
            pruned.append(Pruned(assignment, reason))
            continue
        explicit = explicit_ids[n - (len(combos) - len(include))] if included else None
        group = explicit or cell_id_for(assignment)
        if group in seen:
            raise ScenarioError(f"{path}: two matrix cells share the id '{group}'; make axis values distinct")
        seen.add(group)
        for r in range(sf.scenario.repeats):
            cid = group if sf.scenario.repeats == 1 else f"{group}_r{r + 1}"
            cells.append(Cell(cid, group, r, knobs, assignment))
    for i, e in enumerate(sf.expect):
        if not any(expect_selects(e, c) for c in cells):
            raise ScenarioError(f"{path}: expect[{i}] ({e.name or 'unnamed'}) selects no cell; "
                                f"cells: {', '.join(c.cell_id for c in cells)}")
    if not cells:
        why = "; ".join(sorted({p.reason for p in pruned})) or "the matrix is empty"
        raise ScenarioError(f"{path}: no cells left to run after exclusion and pruning ({why})")
    return Scenario(path, sf.scenario, defaults, axes, exclude, cells, pruned, raw, list(sf.faults), dict(sf.probe),
                    list(sf.expect))
