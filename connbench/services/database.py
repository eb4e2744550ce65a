"""What a cell needs of its PostgreSQL, whichever runs it: one connbench started (PostgresServer) or
yours (ExternalServer, --database-url: never started, stopped or dropped by connbench)."""

from __future__ import annotations

from pathlib import Path
from subprocess import Popen
from typing import Protocol

from connbench.services.postgres import PgConn
from connbench.services.tls import TlsFiles


class DatabaseServer(Protocol):
    # read-only here: each server sets its own, and a reader never assigns them
    @property
    def kind(self) -> str: ...  # "embedded", "system" or "external"

    @property
    def conn(self) -> PgConn | None: ...  # set by start()

    @property
    def connection(self) -> PgConn: ...  # conn, once started (ServiceError before)

    @property
    def version(self) -> str: ...

    @property
    def max_connections(self) -> int: ...

    @property
    def tls_files(self) -> TlsFiles | None: ...

    @property
    def bin_dir(self) -> Path | None: ...

    @property
    def verified(self) -> dict[str, object]: ...  # what start() checked on the server (TLS, roles)

    @property
    def proc(self) -> Popen[bytes] | None: ...

    @property
    def pid(self) -> int | None: ...

    @property
    def app_slots(self) -> int: ...

    def start(self) -> PgConn: ...

    def stop(self, timeout: float = ...) -> None: ...

    def restart(self) -> None: ...

    def role_secret(self, role: str) -> str: ...

    def settings(self, port: int) -> dict[str, str]: ...

    def read_setup_durations(self) -> list[tuple[float, int, float, float, float]] | None: ...
