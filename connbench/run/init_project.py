"""`connbench init` inside a Django project: a scenario that runs unedited, and what init could not know.

Detected, never guessed: the settings module (manage.py's DJANGO_SETTINGS_MODULE, else the environment's),
WSGI_APPLICATION and ASGI_APPLICATION (or the asgi.py beside the wsgi module), and the parameterless GET
URL patterns from the project's own URL resolver. Each candidate path is then requested once, through
connbench's settings shim, against a throwaway PostgreSQL the project was migrated on (never the
project's own database): only a 2xx becomes a [load] path, the rest are listed with why they were left out.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from connbench.contract import AppConfig, Database
from connbench.errors import UsageError
from connbench.run.preflight import preflight
from connbench.run.stack import django_app
from connbench.scenario.project import SHIM_SETTINGS, Project
from connbench.services.postgres import PostgresServer
from connbench.services.procs import PrivateDir, ServiceError, Supervisor
from connbench.services.reachable import ensure_cache

LOADABLE = re.compile(r"/[\x21-\x7e]{0,500}")  # what [load] paths accepts (connbench/scenario/model.py)
MAX_PATHS = 100
HEALTHY = re.compile(r"(^|/)(health|healthz|healthcheck|up|ping|status|ready|live)/?$")
_SETTINGS = re.compile(r"""DJANGO_SETTINGS_MODULE["']\s*,\s*["']([A-Za-z_][\w.]*)["']""")

# Run in the project's directory with the shim's settings: what the resolver and the settings say, as JSON.
_INSPECT = r'''
import json, os, re, sys
import django
django.setup()
from django.conf import settings
from django.urls import URLResolver, get_resolver

found, left = [], []
def route(p):
    s = str(p.pattern)
    if hasattr(p.pattern, "regex") and type(p.pattern).__name__ == "RegexPattern":
        s = s.lstrip("^").rstrip("$")
        if re.search(r"[()\[\]?*+\\|{}.]", s.replace("\\.", "")):
            return None
        s = s.replace("\\.", ".")
    return s
def walk(patterns, prefix):
    for p in patterns:
        r = route(p)
        full = "/" + prefix + (r or str(p.pattern))
        if r is None or "<" in r:
            left.append([full, "takes parameters"])
        elif isinstance(p, URLResolver):
            walk(p.url_patterns, prefix + r)
        else:
            found.append("/" + prefix + r)
walk(get_resolver().url_patterns, "")
app = {k: getattr(settings, f"{k.upper()}_APPLICATION", None) for k in ("wsgi", "asgi")}
print(json.dumps({**app, "paths": list(dict.fromkeys(found)), "left": left}))
'''

# Each path GET once through the whole middleware stack (Django's test client: no server, no redirect followed).
_CHECK = r'''
import json, sys
import django
django.setup()
from django.test import Client
out = {}
client = Client(raise_request_exception=False, HTTP_HOST="127.0.0.1")
for path in json.loads(sys.argv[1]):
    r = client.get(path)
    out[path] = [r.status_code, r.get("Location")]
print(json.dumps(out))
'''


class InitError(UsageError):
    """The directory looks like a Django project, but it cannot be read as one; the message says why."""


@dataclass
class Detected:
    root: Path
    settings: str
    wsgi: str
    asgi: str | None
    paths: list[str] = field(default_factory=list)  # answered 2xx
    left: list[tuple[str, str]] = field(default_factory=list)  # (path, why it was left out)
    health: str = "/"
    unknown: list[str] = field(default_factory=list)  # what init could not know


def settings_module(root: Path) -> str | None:
    text = (root / "manage.py").read_text(errors="replace")
    m = _SETTINGS.search(text)
    return m[1] if m else os.environ.get("DJANGO_SETTINGS_MODULE")


def _python(root: Path, project: Project, app: AppConfig, code: str, *args: str,
            timeout: float = 120) -> dict[str, Any]:
    env = django_app(project).process_env(app)
    res = subprocess.run([sys.executable, "-c", code, *args], cwd=root, env=env, capture_output=True, text=True,
                         timeout=timeout)
    if res.returncode != 0:
        lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
        raise InitError("; ".join(lines[-3:])[-600:] or f"exit {res.returncode}")
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])  # the script's JSON object
    return out


def detect(root: Path, console: Console | None = None) -> Detected | None:
    """None outside a Django project (no manage.py): the caller writes the plain starter."""
    root = root.resolve()
    if not (root / "manage.py").is_file():
        return None
    settings = settings_module(root)
    if not settings:
        raise InitError(f"{root / 'manage.py'}: no DJANGO_SETTINGS_MODULE in it, nor in the environment; "
                        "set DJANGO_SETTINGS_MODULE and run connbench init again")
    project = Project(settings=SHIM_SETTINGS, user_settings=settings, path=str(root))
    offline = AppConfig(db=Database("127.0.0.1", 1, "none", "none", "none"), conn_max_age=0, health_checks=False,
                        pooling="direct")  # reading settings and URLs opens no connection
    try:
        info = _python(root, project, offline, _INSPECT)
    except InitError as e:
        raise InitError(f"{root}: the project's settings ({settings}) or URLs do not load: {e}") from None
    wsgi = _dotted(info.get("wsgi")) or f"{settings.rsplit('.', 1)[0]}.wsgi:application"
    asgi = _dotted(info.get("asgi"))
    module_dir = root.joinpath(*wsgi.split(":")[0].split(".")[:-1])
    if asgi is None and (module_dir / "asgi.py").is_file():
        asgi = f"{wsgi.split(':')[0].rsplit('.', 1)[0]}.asgi:application"
    found = Detected(root, settings, wsgi, asgi, left=[tuple(x) for x in info["left"]])
    if not asgi:
        found.unknown.append("no ASGI application (ASGI_APPLICATION or an asgi.py beside wsgi.py): "
                             "worker_class = \"asgi\" cells would be pruned")
    _check_paths(found, project, info["paths"], console)
    return found


def _dotted(value: str | None) -> str | None:
    """Django's "mysite.wsgi.application" as gunicorn's "mysite.wsgi:application"."""
    if not value or "." not in value:
        return None
    module, _, attr = value.rpartition(".")
    return f"{module}:{attr}"


def _check_paths(found: Detected, project: Project, candidates: list[str], console: Console | None) -> None:
    """GET each candidate on the project migrated onto a throwaway PostgreSQL; only a 2xx is kept."""
    if console:
        console.print(f"checking {len(candidates)} path(s) on a throwaway PostgreSQL (migrated, then removed)")
    where = Path(tempfile.mkdtemp(prefix="connbench-init-"))
    user = preflight(where, {"embedded"}, local_server=True).user
    sup = Supervisor()
    sup.private = PrivateDir(user)
    base = Path(tempfile.mkdtemp(prefix="init-pg-", dir=ensure_cache(user))) if user else where
    os.chmod(base, 0o755)
    if user:
        os.chown(base, user.uid, user.gid)
    try:
        server = PostgresServer(base / "pg", 20, sup, user, sup.private, django=django_app(project))
        try:
            conn = server.start()
        except ServiceError as e:
            found.unknown.append(f"the paths could not be checked: {str(e)[:400]}")
            found.paths = candidates
            return
        app = AppConfig(db=conn.app_database(), conn_max_age=0, health_checks=False, pooling="direct")
        answers = _python(found.root, project, app, _CHECK, json.dumps(candidates)) if candidates else {}
    finally:
        sup.stop_all()
        sup.private.remove()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(where, ignore_errors=True)
    for path, (status, location) in answers.items():
        if not LOADABLE.fullmatch(path):
            found.left.append((path, "not a path a scenario can hold (printable ASCII, no space)"))
        elif len(found.paths) >= MAX_PATHS:
            found.left.append((path, f"past the first {MAX_PATHS} that answered 2xx"))
        elif 200 <= status < 300:
            found.paths.append(path)
        elif 300 <= status < 400:
            found.left.append((path, f"answers {status}, a redirect to {location}: not followed"))
        else:
            found.left.append((path, f"answers {status}"))
    found.health = next((p for p in found.paths if HEALTHY.search(p)),
                        "/" if "/" in found.paths or not found.paths else found.paths[0])
    if not found.paths:
        found.unknown.append("no path answered 2xx: add [load] paths by hand, or the pre-load check will fail")


def render(found: Detected) -> str:
    """connbench.toml for the detected project: [app], [load] and a small matrix, with what init left out."""
    q = json.dumps  # a TOML basic string: the same escapes as JSON's for what can occur here
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", found.root.name).strip("-") or "project"
    lines = [
        f"# Written by `connbench init` for the Django project in {found.root}.",
        "#   connbench list connbench.toml -v    the cells, and the connections each should hold (and why)",
        "#   connbench run connbench.toml        run them; the HTML report's path is printed at the end",
        *(f"# Could not know: {u}" for u in found.unknown),
        "",
        "[scenario]",
        f"name = {q(name)}",
        'description = "CONN_MAX_AGE 0 vs persistent, at 2 sync workers, on this project."',
        "",
        "[app]",
        f"settings = {q(found.settings)}  # from manage.py",
        f"wsgi = {q(found.wsgi)}",
        (f"asgi = {q(found.asgi)}" if found.asgi else "# asgi = \"yourproject.asgi:application\"  # none found"),
        'path = "."                          # manage.py\'s directory',
        "migrate = true                      # on connbench's own PostgreSQL, never your database",
        f"health = {q(found.health)}  # answered 2xx when init checked it",
        "",
        "[load]                              # parameterless GET paths that answered 2xx, equal weights",
    ]
    if found.paths:
        lines.append("paths = { " + ", ".join(f"{q(p)} = 1" for p in found.paths) + " }")
    else:
        lines.append('paths = { "/" = 1 }                # no path answered 2xx: put yours here')
    if found.left:
        lines.append("# left out:")
        lines += [f"#   {p}: {why}" for p, why in found.left]
    lines += ["", "[defaults]", "dynos = 1", "workers = 2", 'worker_class = "sync"', "users = 4", "warmup = 1",
              "duration = 5", "cooldown = 1", "", "[matrix]", 'conn_max_age = [0, "none"]', ""]
    return "\n".join(lines)


def init_command(target: Path, console: Console) -> int:
    """`connbench init [DIR]`: DIR/connbench.toml, for the Django project there, else the starter. Never over
    an existing file; every failure one ScenarioError (exit 2)."""
    from connbench.errors import ScenarioError
    from connbench.scenario.starter import STARTER, STARTER_NAME, write_starter

    if target.exists() and not target.is_dir():
        raise ScenarioError(f"{target}: not a directory; give the directory to write {STARTER_NAME} in")
    exists = ScenarioError(f"{target / STARTER_NAME}: already exists; nothing was written (edit it, or give "
                           "another directory)")
    if (target / STARTER_NAME).exists():
        raise exists
    text = STARTER
    if (target / "manage.py").is_file():  # a Django project: a scenario for it, detected
        try:
            found = detect(target, console)
        except InitError as e:
            raise ScenarioError(str(e)) from None
        assert found is not None  # manage.py is there: detect() returns None only without it
        text = render(found)
        console.print(f"Django project {found.settings}: {len(found.paths)} path(s) answered 2xx, "
                      f"{len(found.left)} left out (listed in the file)")
        for unknown in found.unknown:
            console.print(f"  could not know: {unknown}", highlight=False)
    try:
        path = write_starter(target, text)
    except FileExistsError:
        raise exists from None
    except OSError as e:
        raise ScenarioError(f"{target / STARTER_NAME}: cannot write it ({e.strerror})") from None
    console.print(f"wrote {path}; next: connbench list {path} -v, then connbench run {path}")
    return 0
