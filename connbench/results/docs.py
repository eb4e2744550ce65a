"""The models of a run's JSON documents: manifest.json, cell.json, probe.json, and the sampler's
configuration. Writers build them and readers load them, so neither can drift from the other:
a wrong shape is an error naming the file and the field, when built and when loaded.

Strict types (a "2" is not 2; a list is not a dict); extra="allow", so a key a writer adds without a schema bump
survives a load -> dump (a resume). Stored Knobs (params) stay as written: never re-validated against today's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from connbench.results.files import json_kind, read_json_doc, write_atomic, write_json_atomic
from connbench.results.migrate import upgrade
from connbench.results.schema import (
    CELL_JSON,
    MANIFEST_JSON,
    PROBE_JSON,
    SCHEMA_VERSION,
    CellStatus,
    Phase,
    ResultsError,
    RunStatus,
)


def _problems(e: ValidationError, limit: int = 5) -> str:
    # loc and message only: never the input, which may be a password or megabytes of text
    parts = [f"{'.'.join(map(str, err['loc'])) or '(top level)'}: {err['msg']}" for err in e.errors()]
    return "; ".join(parts[:limit]) + (f"; ... and {len(parts) - limit} more" if len(parts) > limit else "")


class _Part(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", validate_assignment=True, allow_inf_nan=False)


class _Doc(_Part):
    """A JSON document of a run: validated when built and when loaded; old schemas go through upgrade()."""

    FILE: ClassVar[str]
    schema_version: int = SCHEMA_VERSION
    _written: int = PrivateAttr(SCHEMA_VERSION)

    @field_validator("schema_version")
    @classmethod
    def _current(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(f"must be {SCHEMA_VERSION}; older documents are read through upgrade()")
        return v

    @property
    def written_version(self) -> int:
        """The schema the file was written with (before upgrade())."""
        return self._written

    @classmethod
    def from_dict(cls, doc: Any, name: str | None = None) -> Self:
        name = name or cls.FILE
        if not isinstance(doc, dict):
            raise ResultsError(f"{name} holds {json_kind(doc)}, not a JSON object")
        version = doc.get("schema_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ResultsError(f"{name} has no valid schema_version (got {str(version)[:40]!r})")
        try:
            model = cls.model_validate(upgrade(cls.FILE, doc, version))
        except ValidationError as e:
            raise ResultsError(f"{name} does not match schema {SCHEMA_VERSION}: {_problems(e)}") from None
        model._written = version
        return model

    @classmethod
    def load(cls, path: Path | str) -> Self:
        return cls.from_dict(read_json_doc(path), Path(path).name)

    def dump(self, path: Path | str) -> None:
        """Validate what is written (an in-place edit of a nested dict or list bypasses validate_assignment),
        then write it atomically."""
        data = self.model_dump(mode="json")
        try:
            type(self).model_validate(data)
        except ValidationError as e:
            raise ResultsError(f"{self.FILE} not written: {_problems(e)}") from None
        write_json_atomic(Path(path), data)


Window = Annotated[list[float], Field(min_length=2, max_length=2)]  # [begin, end], unix seconds


class Predicted(_Part):
    """connbench/scenario/predict.py predict(): connections the parameters predict, and why."""

    connections: int | None = None  # at plateau under sustained load; None: no steady figure
    connections_max: int | None = None
    at_rest: int | None = None
    pgbouncer_server_max: int | None = None
    pgbouncer_clients: int | None = None
    basis: str = ""
    exceeds_app_slots: bool | None = None  # connections_max > the slots the app's role has (None: unknown)
    bounded: bool | None = None  # False: the count grows with requests (ASGI's leak); None: not stated (older file)
    pool_wait: str | None = None  # a worker runs more requests at once than its pool has connections: what follows


class Services(_Part):
    postgres: dict[str, Any] | None = None  # host, port, dbname, app_user, version, max_connections, app_slots
    pgbouncer: dict[str, Any] | None = None  # port, pool_mode, version, pool sizes
    dynos: list[dict[str, Any]] = []  # {"dyno", "port"}
    locust: dict[str, Any] | None = None  # {"processes": n}: load-generating Locust processes


class ConnectCost(_Part):
    """Opening a connection and running SELECT 1, sequentially, n times (connbench/run/calibrate.py)."""
    n: int = Field(ge=1)
    mean_ms: float
    p50_ms: float
    p95_ms: float
    min_ms: float
    cell_id: str | None = None  # the cell whose verify phase measured it (the first of its setting)
    quiet: bool | None = None  # taken on a quiet machine (run/calibrate.py wait_quiet); None: not recorded
    machine_cpu_pct: float | None = None  # the machine's CPU, % of all cores, just before it was taken


def calibration_key(params: dict[str, Any], path: str) -> str:
    """manifest.json calibration's key: "<server> <auth> tls=<on|off> <direct|pgbouncer>"."""
    tls = "on" if params.get("tls") else "off"
    return f"{params.get('server', 'embedded')} {params.get('auth', 'scram-sha-256')} tls={tls} {path}"


class CellDoc(_Doc):
    """cell.json: one cell's parameters, prediction, phase timestamps and outcome."""

    FILE = CELL_JSON
    cell_id: str
    group: str  # the cell id without the repeat suffix
    repeat: int = Field(ge=0)  # 0-based
    params: dict[str, Any]  # every knob (connbench/scenario/knobs.py Knobs), as stored: never re-validated on reading
    axes: dict[str, Any] = {}
    predicted: Predicted
    status: CellStatus
    error: str | None = None
    skip_reason: str | None = None
    phases: dict[Phase, Window] = {}
    services: Services = Field(default_factory=Services)
    overhead_s: float | None = None  # setup + teardown beyond warm-up/measure/cool-down
    requests: int | None = None  # rows of requests.csv, once merged
    # the cost of a new connection on each path the app uses: timed in this cell's verify phase, or in the
    # first earlier cell with the same server, auth and tls (cell_id says which)
    connect_cost: dict[Literal["direct", "pgbouncer"], ConnectCost] = {}
    memory: str | None = Field(None, exclude_if=lambda v: v is None)  # backends' memory: "measured", or why not

    @field_validator("phases")
    @classmethod
    def _ordered(cls, v: dict[str, list[float]]) -> dict[str, list[float]]:
        for name, (begin, end) in v.items():
            if end < begin:
                raise ValueError(f"phase {name} ends before it begins")
        return v

    @property
    def locust_processes(self) -> int | None:
        n = (self.services.locust or {}).get("processes")
        return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


class ManifestCell(_Part):
    cell_id: str
    group: str
    repeat: int = Field(0, ge=0)
    axes: dict[str, Any] = {}
    status: CellStatus = "pending"
    error: str | None = None
    skip_reason: str | None = None
    overhead_s: float | None = None
    requests: int | None = None
    memory: str | None = Field(None, exclude_if=lambda v: v is None)  # CellDoc.memory: read, or why not


class Pruned(_Part):
    axes: dict[str, Any]
    reason: str  # connbench/scenario/expand.py prune_reason(), or "excluded by matrix.exclude"


class Git(_Part):
    commit: str | None = None
    dirty: bool = False


class Overhead(_Part):
    per_cell_mean_s: float | None = None
    per_cell_max_s: float | None = None
    definition: str = "cell wall time minus warm-up, measure and cool-down (services start/verify/stop)"


class Resume(_Part):
    at: float
    argv: list[str] = []


class ServerInfo(_Part):
    version: str | None = None
    max_connections: int
    app_slots: int
    settings: dict[str, Any] = {}
    kind: str = "embedded"  # embedded (the wheel's PostgreSQL) | system (Debian's)
    auth: str = "scram-sha-256"
    tls: bool = False
    build: dict[str, Any] = {}  # bin_dir, configure flags, with_openssl
    verified: dict[str, Any] = {}  # what the server said at start: pg_hba methods, password scheme, ssl


class Manifest(_Doc):
    """manifest.json: what ran (scenario, versions, host), when, and each cell's outcome."""

    FILE = MANIFEST_JSON
    kind: Literal["matrix", "probe"] = "matrix"
    run_id: str
    argv: list[str] = []  # passwords redacted
    scenario_file: str | None = None
    scenario: dict[str, Any] = {}  # the scenario file's TOML as read (its [[expect]] are evaluated from here)
    scenario_hash: str | None = None
    project: dict[str, Any] | None = None  # the Django project served (connbench/scenario/project.py Project.public())
    scenario_name: str = ""
    description: str = ""
    pruned: list[Pruned] = []
    git: Git = Field(default_factory=Git)
    versions: dict[str, str | None] = {}
    host: dict[str, Any] = {}  # hostname, platform, cpus, memory_bytes, python
    run_as: str | None = None
    sample_interval_s: float | None = None
    started: float
    ended: float | None = None
    status: RunStatus = "running"
    cells: list[ManifestCell] = []
    overhead: Overhead = Field(default_factory=Overhead)
    servers: dict[str, ServerInfo] = {}  # one PostgreSQL per server setting
    # connection cost per "<server> <auth> tls=<on|off> <direct|pgbouncer>" (calibration_key), timed once per run
    calibration: dict[str, ConnectCost] = {}
    resumes: list[Resume] = []

    def record(self, doc: CellDoc) -> None:
        """A cell's outcome, from its cell.json, into its entry."""
        for entry in self.cells:
            if entry.cell_id == doc.cell_id:
                for key in ("status", "error", "skip_reason", "overhead_s", "requests", "memory"):
                    setattr(entry, key, getattr(doc, key))
        for path, cost in doc.connect_cost.items():
            self.calibration.setdefault(calibration_key(doc.params, path), cost)
        done = [c.overhead_s for c in self.cells if c.status == "completed" and c.overhead_s]
        self.overhead = Overhead(per_cell_mean_s=round(sum(done) / len(done), 3) if done else None,
                                 per_cell_max_s=max(done) if done else None)


class ProbeStep(_Part):
    step: int
    load: int  # ramp: concurrent clients; sequential: requests in this step
    requests: int
    requests_total: int
    errors: int
    count: int  # the article's query, after the step
    opened: int | None = None  # server sessions started during the step (pg_stat_database.sessions; PG >= 14)
    peak_during: int
    by_dyno: dict[str, int] = {}
    by_worker: dict[str, int] = {}


class ProbePlateau(_Part):
    """connbench/probe/rules.py Plateau.as_dict()."""

    plateau: int | None
    reached_at_step: int | None
    steps: int
    stable_steps: int
    settled: bool
    still_rising: bool


class ProbeLeak(_Part):
    """connbench/probe/rules.py Leak.as_dict(): connections left behind by requests."""

    kind: Literal["rising", "left-open"]
    at_step: int
    requests: int
    count: int
    per_requests: float
    server_full: bool


ProbeStop = Literal["settled", "time", "steps", "leak", "server"]


class ProbeMode(_Part):
    mode: Literal["sequential", "ramp"]
    baseline_count: int
    steps: list[ProbeStep] = Field(min_length=1)  # the probe always takes a first step
    plateau: ProbePlateau
    requests_to_plateau: int
    per_dyno_at_plateau: int
    peak_during_load: int
    limited_by: ProbeStop  # server: the count neared the limit
    leak: ProbeLeak | None = None

    @model_validator(mode="after")
    def _reached_a_step(self) -> Self:
        at = self.plateau.reached_at_step
        if at is not None and not 0 <= at < len(self.steps):
            raise ValueError(f"plateau.reached_at_step {at} is not one of the {len(self.steps)} steps")
        return self


class ProbeServer(_Part):
    max_connections: int
    reserved_slots: int
    probe_sessions: int
    app_slots: int
    superuser_reserved_by_harness: int | None = None


class HeadroomRow(_Part):
    """connbench/probe/rules.py headroom(): dynos of this shape against the limit."""

    dynos: int | None
    connections: int
    limit: int
    fits: bool
    preboot: bool = False  # counted twice: a Preboot deploy runs the old and the new dynos together
    one_off: int = 0  # one-off dynos counted, one connection each
    note: str | None = None
    memory_mib: float | None = None  # the app's connections' server memory at this count (per backend x count)
    memory_measure: Literal["pss", "rss"] | None = None  # PSS when the sampler read it, else RSS (overstated)


class ProbeDoc(_Doc):
    """probe.json: `connbench probe`'s steps per mode, plateau, prediction and headroom."""

    FILE = PROBE_JSON
    kind: Literal["probe"] = "probe"
    query: str  # the article's count query, verbatim
    params: dict[str, Any]  # Knobs of the app probed (started by connbench or not)
    settings: dict[str, Any]  # ProbeSettings
    target: str
    database: dict[str, Any] | None = None  # where the count ran, password removed
    server: ProbeServer
    predicted: Predicted
    results: dict[Literal["sequential", "ramp"], ProbeMode]
    plateau: int
    matches: bool
    per_dyno: int
    limit: int
    max_dynos: int | None
    headroom: list[HeadroomRow]
    notes: list[str] = []
    started: float
    ended: float


class ConnInfo(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    host: str
    port: int
    user: str
    password: str = Field(repr=False)
    dbname: str | None = None
    sslmode: str | None = None  # libpq's; the server's with tls = true is "require"

    def kwargs(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class SamplerConfig(BaseModel):
    """The sampler's configuration (connbench/sampler). It holds passwords: it lives outside the run directory."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)
    cell_dir: str  # CellPaths root: where its CSVs go
    pg: ConnInfo  # a superuser session (takes no slot of the app's)
    app_role: str | None  # SET ROLE to this, so the article's query counts the app's role
    interval: float = Field(0.1, gt=0)  # seconds between database samples
    process_interval: float = Field(0.5, gt=0)  # seconds between process samples
    mem_interval: float = Field(1.0, gt=0)  # seconds between reads of each app backend's memory
    memory: bool = False  # the server runs on this machine: read its backends' /proc/<pid>/smaps_rollup
    procs_file: str  # CellPaths.procs
    pgbouncer: ConnInfo | None = None  # PgBouncer's admin console
    pgbouncer_database: str | None = None

    @staticmethod
    def file_name(cell_id: str) -> str:
        return f"sampler-{cell_id}.json"

    @classmethod
    def load(cls, path: Path | str) -> SamplerConfig:
        try:
            return cls.model_validate(read_json_doc(path))
        except ValidationError as e:
            raise ResultsError(f"{Path(path).name}: not a sampler configuration: {_problems(e)}") from None

    def dump(self, path: Path | str) -> None:
        write_atomic(Path(path), self.model_dump_json(), mode=0o600)


