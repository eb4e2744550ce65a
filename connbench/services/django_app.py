"""What the services need to know of the Django project the dynos serve, and preparing its database.

Built from the scenario's project by connbench.run.stack.django_app: services never read the scenario.
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from connbench.contract import AppConfig, Database
from connbench.services.procs import ServiceError


@dataclass(frozen=True)
class DjangoApp:
    wsgi: str  # gunicorn's APP_MODULE for sync and gevent workers
    asgi: str | None  # ... for worker_class = "asgi"; None when the project has none
    env: Mapping[str, str] = field(default_factory=dict)  # DJANGO_SETTINGS_MODULE and the project's own
    path: str | None = None  # the project's directory (cwd, first on PYTHONPATH); None: the bundled app
    prepare: tuple[tuple[str, ...], ...] = ()  # manage.py commands run on a new database (migrate, seed, ...)

    def pythonpath(self) -> str:
        """The project's directory first (its modules), then connbench's own (the shim, the middleware)."""
        return os.pathsep.join(p for p in (self.path, str(package_root())) if p)

    def process_env(self, app: AppConfig, **extra: str) -> dict[str, str]:
        """The environment of one of the app's processes: the harness's, the app config's, the project's."""
        return {**os.environ, **app.to_env(), **self.env, **extra, "PYTHONPATH": self.pythonpath()}


def package_root() -> Path:
    """The directory holding the connbench package (the checkout, or site-packages when installed)."""
    return Path(__file__).resolve().parents[2]


def prepare_database(django: DjangoApp, db: Database) -> None:
    """The app's tables and data: the project's prepare commands (migrate, then a seed or fixtures)."""
    # migrations run with the plainest settings: direct, no persistent connection
    env = django.process_env(AppConfig(db=db, conn_max_age=0, health_checks=False, pooling="direct"))
    for args in django.prepare:
        res = subprocess.run([sys.executable, "-m", "django", *args], capture_output=True, text=True,
                             env=env, cwd=django.path or package_root())
        if res.returncode != 0:
            raise ServiceError(f"django {args[0]} failed: {res.stderr.strip()[-1500:]}")
