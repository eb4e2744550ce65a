"""gunicorn dynos: one gunicorn master per loopback port, each one simulated dyno."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import Message as HTTPMessage
from pathlib import Path
from subprocess import Popen
from typing import IO

from connbench.contract import DYNO_ENV, AppConfig
from connbench.services.django_app import DjangoApp, package_root
from connbench.services.procs import ServiceError, Supervisor, exited, free_port, wait_port, wait_until


@dataclass
class Dyno:
    index: int
    port: int
    proc: Popen[bytes]
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
    preload: bool = False  # --preload: the app imported in the master, before the workers are forked


def start_dynos(cfg: GunicornConfig, app: AppConfig, sup: Supervisor, log_dir: Path,
                django: DjangoApp, timeout: float = 30.0) -> list[Dyno]:
    dynos = []
    for d in range(cfg.dynos):
        port = free_port(cfg.host)
        log = log_dir / f"gunicorn-d{d}.log"
        asgi = cfg.worker_class == "asgi"
        target = django.asgi if asgi else django.wsgi
        if target is None:  # pruned before any cell starts; a guard, not a path users reach
            raise ServiceError('worker_class = "asgi" needs the project\'s ASGI application ([app] asgi)')
        cmd = [
            sys.executable, "-m", "gunicorn", target,
            "--bind", f"[{cfg.host}]:{port}" if ":" in cfg.host else f"{cfg.host}:{port}",
            "--workers", str(cfg.workers),
            "--worker-class", "uvicorn_worker.UvicornWorker" if asgi else cfg.worker_class,
            *([] if asgi else ["--threads", str(cfg.threads), "--worker-connections", str(cfg.worker_connections)]),
            "--config", "python:connbench.services.gunicorn_hooks",
            "--timeout", "30",
            "--graceful-timeout", "5",
            "--backlog", "2048",
            "--log-level", "warning",
            *(["--preload"] if cfg.preload else []),
        ]
        env = django.process_env(app, **{DYNO_ENV: str(d)})
        env.pop("PGAPPNAME", None)
        proc = sup.spawn(f"gunicorn-d{d}", cmd, log=log, env=env,
                         cwd=Path(django.path) if django.path else package_root())
        dynos.append(Dyno(d, port, proc, log, cfg.host))
    try:
        for dyno in dynos:
            wait_port(dyno.port, timeout, dyno.proc, f"gunicorn dyno {dyno.index} (log: {dyno.log})", dyno.host)
    except BaseException:
        for dyno in dynos:  # the caller never gets them: stop them here, not at the end of the run
            sup.stop(dyno.proc, timeout=5)
        raise
    return dynos


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer to report, not to follow: `/old/` answering 301 is not `/new/` answering 200."""

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,
                         headers: HTTPMessage, newurl: str) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _attempt(dyno: Dyno, path: str) -> tuple[bool, str, int | None]:
    """(passed, what happened, HTTP status or None when nothing answered). Only a 2xx passes."""
    exited(dyno.proc, f"dyno {dyno.index}")
    try:
        with _OPENER.open(dyno.url + path, timeout=5) as resp:
            return 200 <= resp.status < 300, f"HTTP {resp.status}", resp.status
    except urllib.error.HTTPError as e:
        where = e.headers.get("Location") if 300 <= e.code < 400 else None
        return False, f"HTTP {e.code}" + (f" (a redirect to {where}: not followed)" if where else ""), e.code
    except Exception as e:  # noqa: BLE001 - not answering yet (booting): reported with the log if it lasts
        return False, str(e), None


def log_excerpt(log: Path, lines: int = 12) -> str:
    """The app's last traceback in a dyno's log (its last lines, the exception last), or its last lines."""
    try:
        with open(log, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 256_000))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    at = text.rfind("Traceback (most recent call last):")
    body = text[at:] if at >= 0 else text
    kept = [ln for ln in body.rstrip().splitlines() if ln.strip()]
    if at >= 0:  # up to the exception line: what follows it is gunicorn's own noise (shutdown, exit)
        end = next((i for i in range(1, len(kept)) if not kept[i].startswith((" ", "\t", "Traceback", "During",
                                                                              "The above"))), len(kept) - 1)
        kept = kept[: end + 1]
    return "\n".join(kept[-lines:])


def verify(dynos: list[Dyno], paths: tuple[str, ...] = ("/health", "/db/read"), timeout: float = 20.0) -> None:
    """Every dyno answers every path with a 2xx, or the cell fails before any load, saying why.

    A dyno that exits, or a path that gives the same non-2xx answer twice (an import error, a 500 from
    broken settings, a redirect), fails at once; only no answer at all (workers still booting) is waited
    for. The message carries the app's own traceback from the dyno's log."""
    for dyno in dynos:
        for path in paths:
            seen: list[tuple[str, int | None]] = []

            def answered(d: Dyno = dyno, p: str = path, seen: list[tuple[str, int | None]] = seen) -> bool:
                try:
                    ok, what, status = _attempt(d, p)
                except ServiceError as e:
                    raise ServiceError(_failed(d, p, str(e))) from None
                if ok:
                    return True
                if status is not None and seen and seen[-1] == (what, status):
                    raise ServiceError(_failed(d, p, f"{what}, twice"))
                seen.append((what, status))
                return False

            if not wait_until(answered, timeout, interval=0.1):
                raise ServiceError(_failed(dyno, path, f"{seen[-1][0] if seen else 'no answer'} for {timeout:.0f} s"))


def _failed(dyno: Dyno, path: str, what: str) -> str:
    excerpt = log_excerpt(dyno.log)
    said = f"; the app's log ends with:\n{excerpt}" if excerpt else ""
    return f"dyno {dyno.index} {path} failed: {what} (log: {dyno.log}){said}"


def worker_pids(dyno: Dyno) -> list[int]:
    import psutil

    try:
        return [c.pid for c in psutil.Process(dyno.proc.pid).children()]
    except psutil.Error:
        return []
