"""Which Django project the dynos serve, and what the load requests: the bundled target_app, or your own
project ([app]) with your paths or locustfile ([load]). Resolved and checked before anything starts."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from connbench.errors import ScenarioError
from connbench.redact import redact_password
from connbench.scenario.knobs import Knobs
from connbench.scenario.model import AppSpec, LoadSpec
from connbench.text import clip

SHIM_SETTINGS = "connbench.target_app.byo_settings"  # imports yours, overrides only the database knobs


@dataclass(frozen=True)
class Project:
    wsgi: str = "connbench.target_app.wsgi:application"
    asgi: str | None = "connbench.target_app.asgi:application"
    settings: str = "connbench.target_app.settings"  # DJANGO_SETTINGS_MODULE
    user_settings: str | None = None  # yours, imported by the shim; None: the bundled app
    path: str | None = None  # your project directory (absolute), put first on the app's PYTHONPATH
    migrate: bool = True
    fixtures: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    verify_paths: tuple[str, ...] = ("/health", "/db/read")
    load_paths: dict[str, float] | None = None  # GET path -> weight ([load] paths)
    locustfile: str | None = None  # yours (absolute); connbench's request log rides along

    @property
    def bundled(self) -> bool:
        return self.user_settings is None

    def app_env(self) -> dict[str, str]:
        """The environment the app's processes get (gunicorn, migrate) on top of the harness's."""
        env = {**self.env, "DJANGO_SETTINGS_MODULE": self.settings}
        if self.user_settings:
            env["CONNBENCH_USER_SETTINGS"] = self.user_settings
        return env

    def public(self) -> dict[str, object]:
        """What the manifest records: no env values (they may hold secrets), only their names."""
        return {"bundled": self.bundled, "wsgi": self.wsgi, "asgi": self.asgi, "settings": self.user_settings
                or self.settings, "path": self.path, "migrate": self.migrate, "fixtures": list(self.fixtures),
                "env": sorted(self.env), "load_paths": self.load_paths, "locustfile": self.locustfile}

    def prune_reason(self, k: Knobs) -> str | None:
        if k.pooling == "django-pool" and django_version() < (5, 1):
            return f"Django's native pool needs Django 5.1 or later (installed: {'.'.join(map(str, django_version()))})"
        if k.worker_class == "asgi" and not self.asgi:
            return "worker_class = \"asgi\" needs [app] asgi = \"yourproject.asgi:application\""
        if not self.bundled and k.app_touch_db_at_import:
            return "app_touch_db_at_import is the bundled app's; your project touches the database at import or not"
        if not self.bundled and k.view != "sync":
            return "view applies to the bundled app's endpoints; your project's views are what they are"
        if self.locustfile and k.dynos > 1:
            return "your locustfile gets one --host (dyno 0): with dynos > 1 the others would get no load"
        if self.locustfile and k.open_model:
            return "the open model (arrival_rate) schedules connbench's own users: use [load] paths, not locustfile"
        return None


def django_version() -> tuple[int, ...]:
    """The installed Django's version, read from its metadata (nothing is imported)."""
    try:
        text = metadata.version("django")
    except metadata.PackageNotFoundError:
        return (0,)
    return tuple(int(x) for x in re.findall(r"\d+", text)[:2])


def _module_file(root: Path, dotted: str) -> Path | None:
    base = root.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def resolve(app: AppSpec | None, load: LoadSpec | None, scenario_path: Path) -> Project:
    """The scenario's [app] and [load], paths taken from the scenario file's directory and checked."""
    where = str(scenario_path)
    here = scenario_path.resolve().parent if scenario_path.name != "<scenario>" else Path.cwd()
    locustfile = None
    if load is not None and load.locustfile:
        f = (here / load.locustfile).resolve()
        if not f.is_file():
            raise ScenarioError(f"{where}: load.locustfile {clip(load.locustfile)}: no such file ({f})")
        locustfile = str(f)
    paths = dict(load.paths) if load is not None and load.paths else None
    if app is None:
        return Project(load_paths=paths, locustfile=locustfile)
    root = (here / app.path).resolve()
    if not root.is_dir():
        raise ScenarioError(f"{where}: app.path {clip(app.path)}: not a directory ({root})")
    for key, dotted in (("settings", app.settings), ("wsgi", app.wsgi.split(":")[0]),
                        ("asgi", app.asgi.split(":")[0] if app.asgi else None)):
        if dotted and _module_file(root, dotted) is None:
            raise ScenarioError(f"{where}: app.{key}: no module {dotted!r} under {root} (app.path is the directory "
                                "your project's modules import from, where manage.py usually is)")
    verify = (app.health, *(p for p in (paths or {}) if p != app.health))
    return Project(wsgi=app.wsgi, asgi=app.asgi, settings=SHIM_SETTINGS, user_settings=app.settings, path=str(root),
                   migrate=app.migrate, fixtures=tuple(app.fixtures), env=dict(app.env), verify_paths=verify,
                   load_paths=paths, locustfile=locustfile)


def redact_scenario(raw: dict[str, Any]) -> dict[str, Any]:
    """The scenario as recorded and hashed: [app] env values left out (they may hold secrets), their names
    kept; a password in [server] url redacted. Hashing the raw text would let a weak password be guessed
    offline from the manifest's hash."""
    out = dict(raw)
    app, server = raw.get("app"), raw.get("server")
    if isinstance(app, dict) and isinstance(app.get("env"), dict):
        out["app"] = {**app, "env": {k: "<not recorded>" for k in app["env"]}}
    if isinstance(server, dict) and isinstance(server.get("url"), str):
        out["server"] = {**server, "url": redact_password(server["url"])}
    return out
