"""gunicorn dynos: one gunicorn master per loopback port, each one simulated dyno."""

from __future__ import annotations

import os
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

from connbench.services.procs import ServiceError, Supervisor, free_port, wait_port
from connbench.spec import Knobs


@dataclass
class Dyno:
    index: int
    port: int
    proc: Popen
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def app_environment(k: Knobs, db_env: dict[str, str]) -> dict[str, str]:
    """The target app's settings for one cell (read by target_app/settings.py)."""
    return {
        **db_env,
        "DJANGO_SETTINGS_MODULE": "target_app.settings",
        "CONNBENCH_CONN_MAX_AGE": str(k.conn_max_age),
        "CONNBENCH_HEALTH_CHECKS": "1" if k.health_checks else "0",
        "CONNBENCH_POOLING": k.pooling,
        "CONNBENCH_POOL_MIN_SIZE": str(k.pool_min_size),
        "CONNBENCH_POOL_MAX_SIZE": str(k.pool_max_size),
        "CONNBENCH_POOL_TIMEOUT": str(k.pool_timeout),
        "CONNBENCH_DBCP_POOL_SIZE": str(k.dbcp_pool_size),
        "CONNBENCH_DBCP_MAX_OVERFLOW": str(k.dbcp_max_overflow),
        "CONNBENCH_DBCP_RECYCLE": str(k.dbcp_recycle),
        "CONNBENCH_DBCP_PRE_PING": "1" if k.dbcp_pre_ping else "0",
        "CONNBENCH_DBCP_TIMEOUT": str(k.dbcp_timeout),
    }


def start_dynos(k: Knobs, app_env: dict[str, str], sup: Supervisor, log_dir: Path,
                root: Path, timeout: float = 30.0) -> list[Dyno]:
    dynos = []
    for d in range(k.dynos):
        port = free_port()
        log = log_dir / f"gunicorn-d{d}.log"
        cmd = [
            sys.executable, "-m", "gunicorn", "target_app.wsgi:application",
            "--bind", f"127.0.0.1:{port}",
            "--workers", str(k.workers),
            "--worker-class", k.worker_class,
            "--threads", str(k.threads),
            "--worker-connections", str(k.gevent_connections),
            "--config", "python:connbench.services.gunicorn_hooks",
            "--timeout", "30",
            "--graceful-timeout", "5",
            "--backlog", "2048",
            "--log-level", "warning",
        ]
        env = {**os.environ, **app_env, "CONNBENCH_DYNO": str(d), "PYTHONPATH": str(root)}
        env.pop("PGAPPNAME", None)
        proc = sup.spawn(f"gunicorn-d{d}", cmd, log=log, env=env, cwd=root)
        dynos.append(Dyno(d, port, proc, log))
    for dyno in dynos:
        wait_port(dyno.port, timeout, dyno.proc, f"gunicorn dyno {dyno.index} (log: {dyno.log})")
    return dynos


def verify(dynos: list[Dyno], paths: tuple[str, ...] = ("/health", "/db/read"), timeout: float = 20.0) -> None:
    """Every dyno answers every path with 200, or the cell fails before any load."""
    for dyno in dynos:
        for path in paths:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    with urllib.request.urlopen(dyno.url + path, timeout=5) as resp:
                        if resp.status == 200:
                            break
                        err = f"HTTP {resp.status}"
                except Exception as e:  # noqa: BLE001 - reported below with the log path
                    err = str(e)
                if time.monotonic() > deadline or dyno.proc.poll() is not None:
                    raise ServiceError(f"dyno {dyno.index} {path} failed: {err} (log: {dyno.log})")
                time.sleep(0.1)


def worker_pids(dyno: Dyno) -> list[int]:
    import psutil

    try:
        return [c.pid for c in psutil.Process(dyno.proc.pid).children()]
    except psutil.Error:
        return []
