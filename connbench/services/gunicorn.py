"""gunicorn dynos: one gunicorn master per loopback port, each one simulated dyno."""

from __future__ import annotations

import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

from connbench.contract import DYNO_ENV, AppConfig
from connbench.project import Project
from connbench.services.postgres import app_pythonpath
from connbench.services.procs import ServiceError, Supervisor, exited, free_port, wait_port, wait_until


@dataclass
class Dyno:
    index: int
    port: int
    proc: Popen
    log: Path
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://[{self.host}]:{self.port}" if ":" in self.host else f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class GunicornConfig:
    """One dyno's gunicorn: the same for every dyno of a cell."""

    dynos: int
    workers: int
    threads: int
    worker_class: str
    worker_connections: int
    host: str = "127.0.0.1"  # [generator] bind: where generators on other machines reach the app


def start_dynos(cfg: GunicornConfig, app: AppConfig, sup: Supervisor, log_dir: Path,
                root: Path, timeout: float = 30.0, project: Project | None = None) -> list[Dyno]:
    project = project or Project()
    dynos = []
    for d in range(cfg.dynos):
        port = free_port(cfg.host)
        log = log_dir / f"gunicorn-d{d}.log"
        asgi = cfg.worker_class == "asgi"
        cmd = [
            sys.executable, "-m", "gunicorn", project.asgi if asgi else project.wsgi,
            "--bind", f"[{cfg.host}]:{port}" if ":" in cfg.host else f"{cfg.host}:{port}",
            "--workers", str(cfg.workers),
            "--worker-class", "uvicorn_worker.UvicornWorker" if asgi else cfg.worker_class,
            *([] if asgi else ["--threads", str(cfg.threads), "--worker-connections", str(cfg.worker_connections)]),
            "--config", "python:connbench.services.gunicorn_hooks",
            "--timeout", "30",
            "--graceful-timeout", "5",
            "--backlog", "2048",
            "--log-level", "warning",
        ]
        env = {**os.environ, **app.to_env(), **project.app_env(), DYNO_ENV: str(d),
               "PYTHONPATH": app_pythonpath(project)}
        env.pop("PGAPPNAME", None)
        proc = sup.spawn(f"gunicorn-d{d}", cmd, log=log, env=env, cwd=project.path or root)
        dynos.append(Dyno(d, port, proc, log, cfg.host))
    try:
        for dyno in dynos:
            wait_port(dyno.port, timeout, dyno.proc, f"gunicorn dyno {dyno.index} (log: {dyno.log})", dyno.host)
    except BaseException:
        for dyno in dynos:  # the caller never gets them: stop them here, not at the end of the run
            sup.stop(dyno.proc, timeout=5)
        raise
    return dynos


def _answers(dyno: Dyno, path: str, last: list[str]) -> bool:
    exited(dyno.proc, f"dyno {dyno.index} (log: {dyno.log})")
    try:
        with urllib.request.urlopen(dyno.url + path, timeout=5) as resp:
            last[:] = [f"HTTP {resp.status}"]
            return resp.status == 200
    except Exception as e:  # noqa: BLE001 - reported by verify with the log path
        last[:] = [str(e)]
        return False


def verify(dynos: list[Dyno], paths: tuple[str, ...] = ("/health", "/db/read"), timeout: float = 20.0) -> None:
    """Every dyno answers every path with 200, or the cell fails before any load."""
    for dyno in dynos:
        for path in paths:
            last: list[str] = [""]
            if not wait_until(lambda d=dyno, p=path, out=last: _answers(d, p, out), timeout, interval=0.1):
                raise ServiceError(f"dyno {dyno.index} {path} failed: {last[0]} (log: {dyno.log})")


def worker_pids(dyno: Dyno) -> list[int]:
    import psutil

    try:
        return [c.pid for c in psutil.Process(dyno.proc.pid).children()]
    except psutil.Error:
        return []
