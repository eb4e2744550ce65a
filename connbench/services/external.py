"""An existing PostgreSQL (`connbench run --database-url URL`): nothing is started, stopped, dropped or
truncated. Its facts are read and recorded; the app, the sampler and the faults it allows use the URL's role.
The app's own tables are created by its migrations (and the bundled app's seed only inserts rows)."""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict

from connbench.errors import ScenarioError
from connbench.redact import public_conninfo
from connbench.services.django_app import DjangoApp, prepare_database
from connbench.services.postgres import PgConn, started
from connbench.services.procs import ServiceError
from connbench.slots import app_slots

FACTS_QUERY = (
    "SELECT current_setting('server_version'), current_setting('max_connections')::int, "
    "current_setting('superuser_reserved_connections')::int "
    "+ coalesce(current_setting('reserved_connections', true), '0')::int, "
    "current_setting('is_superuser') = 'on', current_setting('ssl') = 'on', current_user, current_database(), "
    "current_setting('server_version_num')::int"
)


def public_url(url: str) -> dict[str, str]:
    """The URL's parts without its password, for messages and the manifest."""
    return public_conninfo({k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None})


def url_host(url: str) -> str:
    """Where the URL connects: its hostaddr if it has one (libpq connects there, whatever host says)."""
    try:
        d = conninfo_to_dict(url)
    except psycopg.Error:  # no detail: the parser's message may quote the string, password and all
        raise ScenarioError("--database-url: not a valid URL or conninfo string "
                            "(e.g. postgresql://user:password@127.0.0.1:5432/dbname)") from None
    host, port = str(d.get("hostaddr") or d.get("host") or ""), str(d.get("port") or "5432")
    if "," in host or not port.isdigit():
        raise ScenarioError("--database-url: give one host and one port (a list of hosts is not supported)")
    return host


class ExternalServer:
    kind = "external"
    proc = None
    pid = None
    tls_files = None
    bin_dir = None

    def __init__(self, url: str, django: DjangoApp | None = None):
        self.url = url
        self.django = django  # None: the app's tables are not prepared (facts only)
        self.conn: PgConn | None = None
        self.version, self.max_connections, self.reserved = "", 0, 0
        self.superuser, self.ssl = False, False
        self.verified: dict[str, object] = {}

    def facts(self) -> dict[str, object]:
        """Read-only: what the server is. Nothing is created."""
        d = conninfo_to_dict(self.url)
        try:
            with psycopg.connect(self.url, connect_timeout=5, autocommit=True) as c:
                row = c.execute(FACTS_QUERY).fetchone()
        except psycopg.Error as e:
            raise ScenarioError(f"cannot connect with --database-url ({public_url(self.url)}): "
                                f"{str(e).strip()[:500]}") from None
        if row is None:
            raise ScenarioError(f"--database-url ({public_url(self.url)}): the server answered no row of facts")
        self.version, self.max_connections, self.reserved, self.superuser, self.ssl, user, dbname, num = row
        if num < 150000:  # the sampler reads pg_stat_database.sessions (14) with stats_fetch_consistency (15)
            raise ScenarioError(f"--database-url: PostgreSQL {self.version} is too old; connbench's sampler "
                                "needs PostgreSQL 15 or later")
        password = str(d.get("password") or "")
        self.conn = PgConn(str(d.get("host") or "127.0.0.1"), int(d.get("port") or 5432), dbname, user, password,
                           user, password, str(d.get("sslmode") or "prefer"))
        return {"version": self.version, "max_connections": self.max_connections, "reserved": self.reserved,
                "superuser": self.superuser, "ssl": self.ssl, "user": user, "dbname": dbname}

    def start(self) -> PgConn:
        if self.conn is None:
            self.facts()
        if self.django:
            prepare_database(self.django, self.connection.app_database())
        return self.connection

    @property
    def connection(self) -> PgConn:
        """How to reach your server, once its facts are read."""
        return started(self.conn, "--database-url: the server's facts were not read")

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
        return str(row[0])

    def read_setup_durations(self) -> None:
        """Your server's log is not connbench's to read."""
        return None

    def settings(self, port: int) -> dict[str, str]:
        return {}
