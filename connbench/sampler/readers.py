"""What the database and PgBouncer see: the queries and the two readers that run them.

The article's query runs verbatim, as the app's role (the reader connects as the superuser, so it
takes no slot of the app's, then SETs ROLE). Used by the sampler and by `connbench probe`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg

from connbench.contract import APPNAME_PREFIX

ARTICLE_QUERY = (
    "select count(*) from pg_stat_activity where pid <> pg_backend_pid() and usename = current_user"
)
BREAKDOWN_QUERY = (
    "SELECT coalesce(application_name, ''), coalesce(state, ''), count(*) FROM pg_stat_activity "
    "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() GROUP BY 1, 2"
)
DB_QUERY = (
    "SELECT numbackends, sessions, sessions_killed, sessions_fatal FROM pg_stat_database "
    "WHERE datname = current_database()"
)
# reserved_connections is PostgreSQL 16's: missing_ok, so Debian's 15 (server = "system") reads it as 0
SETTINGS_QUERY = (
    "SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int"
    " + coalesce(current_setting('reserved_connections', true), '0')::int"
)
# The app role's client backends whose connection is encrypted (tls = true: every one)
SSL_QUERY = (
    "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE s.ssl "
    "AND a.usename = current_user AND a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()"
)
POOL_STATES = ("cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used", "sv_login")


def parse_appname(name: str) -> tuple[str, str]:
    """'cb:d1:w3' -> ('1', '3'); anything else is unattributed."""
    parts = name.split(":")
    if len(parts) == 3 and parts[0] == APPNAME_PREFIX and parts[1][:1] == "d" and parts[2][:1] == "w":
        return parts[1][1:], parts[2][1:]
    return "", ""


def _first(row: tuple[Any, ...] | None) -> int:
    """The one number a counting query returns (0 for no row)."""
    return int(row[0] or 0) if row else 0


class _Session:
    """One database session of the harness's own, reopened after an error."""

    conn: psycopg.Connection[tuple[Any, ...]] | None = None

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg.Error:
                pass
        self.conn = None


class DbReader(_Session):
    def __init__(self, pg: Mapping[str, Any], app_role: str | None):
        self.pg = pg
        self.app_role = app_role
        self.conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self.limits: tuple[int, ...] = (0, 0)

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        conn = psycopg.connect(**self.pg, autocommit=True, connect_timeout=3,
                               application_name="connbench-sampler")
        conn.execute("SET stats_fetch_consistency = none")
        if self.app_role:  # connected as the superuser: count as the app's role
            conn.execute(f'SET ROLE "{self.app_role}"')
        self.limits = tuple(conn.execute(SETTINGS_QUERY).fetchone() or (0, 0))
        return conn

    def sample(self) -> tuple[list[tuple[Any, ...]], int, tuple[Any, ...], int]:
        """(app name, state, count) groups, the article's count, pg_stat_database's counters, SSL backends."""
        if self.conn is None or self.conn.closed:
            self.conn = self._connect()
        try:
            groups = self.conn.execute(BREAKDOWN_QUERY).fetchall()
            article = _first(self.conn.execute(ARTICLE_QUERY).fetchone())
            db = self.conn.execute(DB_QUERY).fetchone() or (0, 0, 0, 0)
            ssl = _first(self.conn.execute(SSL_QUERY).fetchone())
        except psycopg.Error:
            self.close()
            raise
        return groups, article, db, ssl


class BouncerReader(_Session):
    """PgBouncer's admin console speaks only the simple query protocol: use libpq's PQexec."""

    def __init__(self, conninfo: Mapping[str, Any], database: str, user: str | None):
        self.conninfo = conninfo
        self.database = database
        self.user = user
        self.conn: psycopg.Connection[tuple[Any, ...]] | None = None

    def _show(self, conn: psycopg.Connection[tuple[Any, ...]], what: str) -> list[dict[str, str]]:
        res = conn.pgconn.exec_(f"SHOW {what}".encode())
        if res.status != psycopg.pq.ExecStatus.TUPLES_OK:
            raise psycopg.OperationalError(res.error_message.decode(errors="replace"))
        names = [(res.fname(i) or b"").decode() for i in range(res.nfields)]
        return [
            {n: (res.get_value(r, i) or b"").decode() for i, n in enumerate(names)} for r in range(res.ntuples)
        ]

    def sample(self) -> dict[str, float]:
        if self.conn is None or self.conn.closed:
            self.conn = psycopg.connect(**self.conninfo, dbname="pgbouncer", autocommit=True, connect_timeout=3)
        try:
            pools = [p for p in self._show(self.conn, "POOLS") if p.get("database") == self.database]
            stats = [s for s in self._show(self.conn, "STATS") if s.get("database") == self.database]
        except psycopg.Error:
            self.close()
            raise
        out: dict[str, float] = {k: sum(int(p.get(k) or 0) for p in pools) for k in POOL_STATES}
        maxwait = max((int(p.get("maxwait") or 0) + int(p.get("maxwait_us") or 0) / 1e6 for p in pools),
                      default=0.0)
        out["maxwait_s"] = maxwait
        out["total_xact_count"] = sum(int(s.get("total_xact_count") or 0) for s in stats)
        out["total_wait_time_us"] = sum(int(s.get("total_wait_time") or 0) for s in stats)
        return out
