"""The scenario file's own tables: [app], [load], [server] and [generator] (what runs, from where), and the
file's top level. Strict like the knobs (connbench.scenario.knobs), on which it builds."""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from connbench.loopback import is_loopback
from connbench.scenario.knobs import STRICT, Expect, Fault, Mix, ProbeSettings, ScenarioMeta
from connbench.text import clip

MODULE = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,20}"
# Variables the harness sets for the app itself: a user's [app] env may not override them.
RESERVED_ENV = re.compile(r"(DJANGO_SETTINGS_MODULE|PYTHONPATH|PG[A-Z]*|CONNBENCH_[A-Z_]*)")


class AppSpec(BaseModel):
    """[app]: your own Django project instead of the bundled target_app. Per cell it runs under gunicorn with a
    settings shim that imports `settings` and overrides only the database connection knobs, puts the
    harness's middleware first and allows loopback hosts (target_app/byo_settings.py)."""

    model_config = STRICT
    settings: str = Field(pattern=f"^{MODULE}$", max_length=300, description="your settings module")
    wsgi: str = Field(pattern=f"^{MODULE}:[A-Za-z_][A-Za-z0-9_]*$", max_length=300)
    asgi: str | None = Field(None, pattern=f"^{MODULE}:[A-Za-z_][A-Za-z0-9_]*$", max_length=300)
    path: str = Field(".", min_length=1, max_length=1000, description="project directory, from the scenario's")
    migrate: bool = True
    fixtures: list[str] = Field(default_factory=list, max_length=100, description="loaddata, after migrate")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment for the app")
    health: str = Field("/", pattern=r"^/[\x21-\x7e]{0,500}$", description="a path that answers 200")

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for key, val in v.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,100}", key):
                raise ValueError(f"env name {clip(key)} is not an environment variable name")
            if RESERVED_ENV.fullmatch(key):
                raise ValueError(f"env {key} is set by the harness (the settings shim, the database); leave it out")
            if "\x00" in val or len(val) > 10_000:
                raise ValueError(f"env {key}: a value without NUL characters, at most 10,000 long")
        return v


class LoadSpec(BaseModel):
    """[load]: what the Locust users request. `paths`: GET paths with weights; or `locustfile`: your own
    (the raw request log still works: connbench adds its listener)."""

    model_config = STRICT
    paths: dict[str, float] | None = Field(None, description='e.g. { "/" = 3, "/items/" = 1 }')
    locustfile: str | None = Field(None, min_length=1, max_length=1000, description="from the scenario's directory")

    @model_validator(mode="after")
    def _one(self) -> LoadSpec:
        if (self.paths is None) == (self.locustfile is None):
            raise ValueError("give exactly one of paths (GET paths with weights) or locustfile")
        if self.paths is not None:
            if not self.paths or len(self.paths) > 100:
                raise ValueError("paths: 1 to 100 GET paths, each with a weight")
            for path, w in self.paths.items():
                if not re.fullmatch(r"/[\x21-\x7e]{0,500}", path):
                    raise ValueError(f"paths: {clip(path)} is not a path starting with / (printable ASCII)")
                if not 0 < w <= 1e6:
                    raise ValueError(f"paths: the weight of {path} must be > 0 and <= 1e6 (got {w!r})")
        return self


class ServerSpec(BaseModel):
    """[server]: an existing PostgreSQL instead of one connbench starts (as `run --database-url`)."""

    model_config = STRICT
    url: str = Field(min_length=1, max_length=2000, description="postgresql://role:password@host:port/dbname")
    allow_remote: bool = Field(False, description="a non-loopback host, on purpose")


class GeneratorSpec(BaseModel):
    """[generator]: Locust's master/worker mode instead of one Locust process. `workers` load-generating
    processes in all: `workers - remote` started here, `remote` joining from `connbench worker --master
    HOST:PORT` (on this machine or another); the test starts when all have joined, or fails after `wait_s`."""

    model_config = STRICT
    workers: int = Field(0, ge=0, le=64, description="0: one Locust process (no master)")
    remote: int = Field(0, ge=0, le=64, description="of the workers, how many `connbench worker` runs join")
    wait_s: float = Field(60.0, gt=0, le=3600, description="how long the master waits for every worker")
    on_worker_lost: Literal["fail", "continue"] = Field("fail", description="a worker lost mid-test: the cell")
    bind: str = Field("127.0.0.1", min_length=1, max_length=100, description="the master's (and the app's) address")
    port: int = Field(0, ge=0, le=65535, description="the master's port; 0: any free one")
    allow_remote: bool = Field(False, description="bind a non-loopback address, on purpose")

    @model_validator(mode="after")
    def _check(self) -> GeneratorSpec:
        if self.remote > self.workers:
            raise ValueError(f"remote ({self.remote}) cannot exceed workers ({self.workers})")
        if self.remote and not self.port:
            raise ValueError("remote workers need a fixed port (e.g. port = 5557): each cell starts a new master, "
                             "and `connbench worker --master HOST:PORT` rejoins it there")
        try:
            address = ipaddress.ip_address(self.bind)
        except ValueError:
            raise ValueError(f"bind: {clip(self.bind)} is not an IP address") from None
        if address.is_unspecified:
            raise ValueError(f"bind: {self.bind} is every address, not one that workers and the app's URL can "
                             "use: give this machine's address on the network the generators share")
        if not is_loopback(self.bind) and not self.allow_remote:
            raise ValueError(f"bind: {self.bind} is not a loopback address: the master and the app would be "
                             "reachable from other machines; set allow_remote = true to do that on purpose")
        return self

    def with_workers(self, workers: int) -> GeneratorSpec:
        """The same with another worker count (--generator-workers); ValueError says what is allowed."""
        try:
            return GeneratorSpec(**{**self.model_dump(), "workers": workers})
        except ValidationError as e:
            raise ValueError(f"{e.errors()[0]['msg']} (workers: 0 to 64, at least remote = {self.remote})") from None

    @property
    def local(self) -> int:
        return self.workers - self.remote


class ScenarioFile(BaseModel):
    """The top level of a scenario file; [defaults] and [matrix] are checked against Knobs in expand."""

    model_config = STRICT
    scenario: ScenarioMeta
    app: AppSpec | None = None
    server: ServerSpec | None = None
    load: LoadSpec | None = None
    generator: GeneratorSpec = GeneratorSpec()
    defaults: dict[str, Any] = Field(default_factory=dict)
    matrix: dict[str, Any] = Field(default_factory=dict)
    faults: list[Fault] = Field(default_factory=list)
    probe: ProbeSettings = ProbeSettings()
    expect: list[Expect] = Field(default_factory=list)


SECTIONS: dict[str, type[BaseModel]] = {"scenario": ScenarioMeta, "faults": Fault, "probe": ProbeSettings,
                                        "expect": Expect, "mix": Mix, "app": AppSpec, "load": LoadSpec,
                                        "server": ServerSpec, "generator": GeneratorSpec}
