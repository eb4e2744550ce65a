"""What the database and PgBouncer see: the queries and the two readers that run them.

The article's query runs verbatim, as the app's role (the reader connects as the superuser, so it
takes no slot of the app's, then SETs ROLE). Used by the sampler and by `connbench probe`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import psycopg

from connbench.contract import APPNAME_PREFIX

ARTICLE_QUERY = (
    "select count(*) from pg_stat_activity where pid <> pg_backend_pid() and usename = current_user"
)
# Each client backend but the sampler's own: its key (pid, backend_start), connections.csv's (name, state) groups,
# whether it is the app's role (is_app) and encrypted (pg_stat_ssl). One query: today's breakdown and SSL counts.
BACKENDS_QUERY = (
    "SELECT a.pid, extract(epoch FROM a.backend_start)::float8, coalesce(a.application_name, ''), "
    "coalesce(a.state, ''), coalesce(a.usename = current_user, false), coalesce(s.ssl, false) "
    "FROM pg_stat_activity a LEFT JOIN pg_stat_ssl s USING (pid) "
    "WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()"
)
# The article's count rides along as a scalar subquery, verbatim: one round trip less per sample, which is most
# of the sampler's CPU at 100 ms
DB_QUERY = (
    f"SELECT ({ARTICLE_QUERY}), numbackends, sessions, sessions_killed, sessions_fatal FROM pg_stat_database "
    "WHERE datname = current_database()"
)
# reserved_connections is PostgreSQL 16's: missing_ok, so Debian's 15 (server = "system") reads it as 0
SETTINGS_QUERY = (
    "SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int"
    " + coalesce(current_setting('reserved_connections', true), '0')::int"
)
POOL_STATES = ("cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used", "sv_login")


def parse_appname(name: str) -> tuple[str, str]:
    """'cb:d1:w3' -> ('1', '3'); anything else is unattributed."""
    parts = name.split(":")
    if len(parts) == 3 and parts[0] == APPNAME_PREFIX and parts[1][:1] == "d" and parts[2][:1] == "w":
        return parts[1][1:], parts[2][1:]
    return "", ""


class Backend(NamedTuple):
    """One row of BACKENDS_QUERY."""

    pid: int
    backend_start: float  # unix seconds
    appname: str
    state: str
    is_app: bool  # usename = the app's role (current_user, after SET ROLE)
    ssl: bool


def groups_of(backends: list[Backend]) -> list[tuple[str, str, int]]:
    """(application_name, state, count) per pair, as connections.csv has them: every client backend, any role."""
    counts: dict[tuple[str, str], int] = {}
    for b in backends:
        counts[b.appname, b.state] = counts.get((b.appname, b.state), 0) + 1
    return [(name, state, n) for (name, state), n in counts.items()]


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
        self.backends: list[Backend] = []  # the last sample's client backends
        self.backend_pid = 0  # the reader's own backend (a server process the sampler can test /proc on)

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        conn = psycopg.connect(**self.pg, autocommit=True, connect_timeout=3,
                               application_name="connbench-sampler")
        conn.execute("SET stats_fetch_consistency = none")
        if self.app_role:  # connected as the superuser: count as the app's role
            conn.execute(f'SET ROLE "{self.app_role}"')
        self.limits = tuple(conn.execute(SETTINGS_QUERY).fetchone() or (0, 0))
        self.backend_pid = conn.info.backend_pid
        return conn

    def sample(self) -> tuple[list[tuple[str, str, int]], int, tuple[Any, ...], int]:
        """(app name, state, count) groups, the article's count, pg_stat_database's counters, SSL backends of the
        app's role; self.backends the rows the groups were counted from."""
        if self.conn is None or self.conn.closed:
            self.conn = self._connect()
        try:
            backends = [Backend(*r) for r in self.conn.execute(BACKENDS_QUERY).fetchall()]
            article, *db = self.conn.execute(DB_QUERY).fetchone() or (0, 0, 0, 0, 0)
        except psycopg.Error:
            self.close()
            raise
        self.backends = backends
        ssl = sum(1 for b in backends if b.ssl and b.is_app)
        groups = groups_of(backends)
        return groups, int(article or 0), tuple(db), ssl


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
