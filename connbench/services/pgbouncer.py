"""A real PgBouncer per cell: generated ini, loopback port, foreground, unprivileged, own admin console."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import TypedDict

from connbench.contract import Database
from connbench.services.postgres import PgConn
from connbench.services.procs import PrivateDir, RunAs, ServiceError, Supervisor, chown_tree, free_port, wait_port
from connbench.services.tls import TlsFiles

ADMIN_USER = "cbadmin"


class AdminConnInfo(TypedDict):
    """psycopg.connect's keywords for PgBouncer's admin console (dbname="pgbouncer" is the caller's)."""

    host: str
    port: int
    user: str
    password: str
    sslmode: str


def pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None
    )


def require_binary() -> str:
    """PgBouncer's binary; its cells are skipped before any starts when there is none."""
    binary = pgbouncer_binary()
    if binary is None:
        raise ServiceError(MISSING)
    return binary


def pgbouncer_version() -> str | None:
    binary = pgbouncer_binary()
    if binary is None:
        return None
    out = subprocess.run([binary, "--version"], capture_output=True, text=True)
    m = re.search(r"PgBouncer\s+(\S+)", out.stdout)
    return m.group(1) if m else out.stdout.strip().splitlines()[0] if out.stdout else None


MISSING = (
    "PgBouncer is not installed (no `pgbouncer` on PATH or in /usr/sbin); "
    "install it with `apt-get install pgbouncer` (make does this when run as root)"
)


@dataclass(frozen=True)
class PgBouncerConfig:
    pool_mode: str  # session | transaction
    pool_size: int
    reserve_pool: int
    max_client_conn: int
    query_wait_timeout: int
    auth: str = "scram-sha-256"  # auth_type, matching the server's pg_hba method
    server_idle_timeout: float = 600
    client_idle_timeout: float = 0


class PgBouncer:
    def __init__(self, base_dir: Path, cfg: PgBouncerConfig, pg: PgConn, sup: Supervisor, user: RunAs | None,
                 private: PrivateDir, app_secret: str, tls: TlsFiles | None = None):
        self.tls = tls  # serve clients over TLS with this certificate, and reach PostgreSQL over TLS
        self.base_dir = Path(base_dir)
        self.app_secret = app_secret  # the app role's SCRAM secret from pg_authid, as production stores it
        self.private = private
        self.userlist = private.path / f"pgbouncer-{self.base_dir.parent.name}-userlist.txt"
        self.cfg = cfg
        self.pg = pg
        self.sup = sup
        self.user = user
        self.proc: Popen[bytes] | None = None
        self.port = 0
        self.admin_password = secrets.token_hex(12)
        self.log = self.base_dir / "pgbouncer.log"

    def ini(self) -> str:
        c = self.cfg
        return f"""[databases]
{self.pg.dbname} = host={self.pg.host} port={self.pg.port} dbname={self.pg.dbname}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = {c.auth}
auth_file = {self.userlist}
admin_users = {ADMIN_USER}
stats_users = {ADMIN_USER}
pool_mode = {c.pool_mode}
default_pool_size = {c.pool_size}
min_pool_size = 0
reserve_pool_size = {c.reserve_pool}
reserve_pool_timeout = 1
max_client_conn = {c.max_client_conn}
max_db_connections = 0
query_wait_timeout = {c.query_wait_timeout}
server_idle_timeout = {c.server_idle_timeout:g}
client_idle_timeout = {c.client_idle_timeout:g}
server_lifetime = 3600
ignore_startup_parameters = extra_float_digits,options
application_name_add_host = 0
log_connections = 0
log_disconnections = 0
log_pooler_errors = 1
stats_period = 1
{self._tls_lines()}"""

    def _tls_lines(self) -> str:
        if self.tls is None:
            return ""
        return (f"client_tls_sslmode = require\nclient_tls_cert_file = {self.tls.cert}\n"
                f"client_tls_key_file = {self.tls.key}\nserver_tls_sslmode = require\n")

    def start(self, timeout: float = 15.0) -> int:
        binary = pgbouncer_binary()
        if binary is None:
            raise ServiceError(MISSING)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        # The app role's SCRAM secret as PostgreSQL stores it, never its plain password: with a plain one
        # PgBouncer 1.18 runs PBKDF2 for every client login on its single thread (an artefact no
        # production setup has); with the secret it checks the client's proof and logs in to PostgreSQL
        # with the keys that proof carries. 0600, owned by PgBouncer's user, outside the run directory.
        self.private.write(self.userlist.name,
                           f'"{self.pg.app_user}" "{self.app_secret}"\n"{ADMIN_USER}" "{self.admin_password}"\n')
        ini = self.base_dir / "pgbouncer.ini"
        ini.write_text(self.ini())
        chown_tree(self.base_dir, self.user)
        self.proc = self.sup.spawn("pgbouncer", [binary, str(ini)], log=self.log, user=self.user)
        wait_port(self.port, timeout, self.proc, f"PgBouncer (log: {self.log})")
        return self.port

    def restart(self) -> None:
        """Fault injection: stop and start again on the same port with the same ini."""
        self.stop()
        self.proc = self.sup.spawn("pgbouncer", [require_binary(), str(self.base_dir / "pgbouncer.ini")],
                                   log=self.log, user=self.user)
        wait_port(self.port, 15, self.proc, f"PgBouncer (log: {self.log})")

    def stop(self) -> None:
        if self.proc is not None:
            # SIGINT: PgBouncer's immediate shutdown; SIGTERM would wait for clients.
            self.sup.stop(self.proc, sig=signal.SIGINT, timeout=5)
            self.proc = None

    def app_database(self) -> Database:
        """Where the app connects: this PgBouncer, as the app's role."""
        return Database("127.0.0.1", self.port, self.pg.dbname, self.pg.app_user, self.pg.app_password,
                        "require" if self.tls else "disable")

    def admin_conninfo(self) -> AdminConnInfo:
        return {"host": "127.0.0.1", "port": self.port, "user": ADMIN_USER, "password": self.admin_password,
                "sslmode": "require" if self.tls else "disable"}

    def public(self) -> dict[str, object]:
        return {"port": self.port, "pool_mode": self.cfg.pool_mode, "version": pgbouncer_version(),
                "default_pool_size": self.cfg.pool_size, "reserve_pool_size": self.cfg.reserve_pool,
                "max_client_conn": self.cfg.max_client_conn, "auth_type": self.cfg.auth, "tls": self.tls is not None}
