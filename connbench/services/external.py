"""An existing PostgreSQL (`connbench run --database-url URL`): nothing is started, stopped, dropped or
truncated. Its facts are read and recorded; the app, the sampler and the faults it allows use the URL's role.
The app's own tables are created by its migrations (and the bundled app's seed only inserts rows)."""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict

from connbench.predict import app_slots
from connbench.project import Project
from connbench.services.postgres import PgConn, prepare_database
from connbench.services.procs import ServiceError
from connbench.spec import ScenarioError

FACTS_QUERY = (
    "SELECT current_setting('server_version'), current_setting('max_connections')::int, "
    "current_setting('superuser_reserved_connections')::int "
    "+ coalesce(current_setting('reserved_connections', true), '0')::int, "
    "current_setting('is_superuser') = 'on', current_setting('ssl') = 'on', current_user, current_database(), "
    "current_setting('server_version_num')::int"
)


def public_url(url: str) -> dict:
    """The URL's parts without its password, for messages and the manifest."""
    d = conninfo_to_dict(url)
    return {k: v for k, v in d.items() if k in ("host", "port", "dbname", "user", "sslmode")}


def url_host(url: str) -> str:
    """Where the URL connects: its hostaddr if it has one (libpq connects there, whatever host says)."""
    try:
        d = conninfo_to_dict(url)
    except psycopg.Error:  # no detail: the parser's message may quote the string, password and all
        raise ScenarioError("--database-url: not a valid URL or conninfo string "
                            "(e.g. postgresql://user:password@127.0.0.1:5432/dbname)") from None
    host, port = d.get("hostaddr") or d.get("host") or "", str(d.get("port") or "5432")
    if "," in host or not port.isdigit():
        raise ScenarioError("--database-url: give one host and one port (a list of hosts is not supported)")
    return host


class ExternalServer:
    kind = "external"
    proc = None
    pid = None
    tls_files = None
    bin_dir = None

    def __init__(self, url: str, project: Project | None = None):
        self.url = url
        self.project = project or Project()
        self.conn: PgConn | None = None
        self.version, self.max_connections, self.reserved = "", 0, 0
        self.superuser, self.ssl = False, False
        self.verified: dict = {}

    def facts(self) -> dict:
        """Read-only: what the server is. Nothing is created."""
        d = conninfo_to_dict(self.url)
        try:
            with psycopg.connect(self.url, connect_timeout=5, autocommit=True) as c:
                row = c.execute(FACTS_QUERY).fetchone()
        except psycopg.Error as e:
            raise ScenarioError(f"cannot connect with --database-url ({public_url(self.url)}): "
                                f"{str(e).strip()[:500]}") from None
        self.version, self.max_connections, self.reserved, self.superuser, self.ssl, user, dbname, num = row
        if num < 150000:  # the sampler reads pg_stat_database.sessions (14) with stats_fetch_consistency (15)
            raise ScenarioError(f"--database-url: PostgreSQL {self.version} is too old; connbench's sampler "
                                "needs PostgreSQL 15 or later")
        self.conn = PgConn(d.get("host") or "127.0.0.1", int(d.get("port") or 5432), dbname, user,
                           d.get("password") or "", user, d.get("password") or "", d.get("sslmode") or "prefer")
        return {"version": self.version, "max_connections": self.max_connections, "reserved": self.reserved,
                "superuser": self.superuser, "ssl": self.ssl, "user": user, "dbname": dbname}

    def start(self) -> PgConn:
        if self.conn is None:
            self.facts()
        prepare_database(self.project, self.conn.app_database())
        return self.conn

    @property
    def app_slots(self) -> int:
        # the sampler's one session is the app's role's too
        return app_slots(self.max_connections, reserved=self.reserved)

    def stop(self, timeout: float = 0) -> None:
        """Yours: never stopped."""

    def restart(self) -> None:
        raise ServiceError("restart_postgres needs connbench's own server, not --database-url")

    def role_secret(self, role: str) -> str:
        try:
            with psycopg.connect(self.url, connect_timeout=5, autocommit=True) as c:
                row = c.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", [role]).fetchone()
        except psycopg.Error:
            row = None
        if not row or not row[0]:
            raise ServiceError("PgBouncer needs the role's password secret (pg_authid): connect --database-url "
                               "as a superuser, or leave PgBouncer out")
        return row[0]

    def settings(self, port: int) -> dict:
        return {}

    def prune_reason(self, knobs, faults: list) -> str | None:
        """Why a cell cannot run on this server (it would need another server setting), or None."""
        set_ = knobs.model_fields_set
        if "max_connections" in set_ and knobs.max_connections != self.max_connections:
            return (f"max_connections = {knobs.max_connections}, but the server is yours (--database-url): "
                    f"its max_connections is {self.max_connections}")
        for knob in ("server", "auth"):
            if knob in set_:
                return f"{knob} = {getattr(knobs, knob)!r} needs connbench's own server, not --database-url"
        if knobs.tls and not self.ssl:
            return "tls = true, but the server (--database-url) has ssl = off"
        if knobs.pooling.startswith("pgbouncer-") and not self.superuser:
            return ("PgBouncer needs the role's password secret from pg_authid: connect --database-url as a "
                    "superuser, or leave PgBouncer out")
        if any(f.action == "restart_postgres" for f in faults):
            return "a restart_postgres fault needs connbench's own server, not --database-url"
        return None
