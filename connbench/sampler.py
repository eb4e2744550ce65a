"""The sampler: what the database and PgBouncer saw, and what each process spent, on one clock.

Runs as its own process per cell (`python -m connbench.sampler CONFIG`), with one database
session of its own that it excludes from every count. It connects as the superuser (so it
takes a reserved slot, not one of the app's) and SETs ROLE to the app's role, so the Heroku
article's query runs verbatim with current_user = the app's role.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import psutil
import psycopg

from connbench.results import (
    CONNECTIONS_COLUMNS,
    DB_COLUMNS,
    PGBOUNCER_COLUMNS,
    PROCESSES_COLUMNS,
    CellPaths,
    CsvAppender,
)

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
SETTINGS_QUERY = (
    "SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int"
    " + current_setting('reserved_connections')::int"
)
POOL_STATES = ("cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used", "sv_login")


def parse_appname(name: str) -> tuple[str, str]:
    """'cb:d1:w3' -> ('1', '3'); anything else is unattributed."""
    parts = name.split(":")
    if len(parts) == 3 and parts[0] == "cb" and parts[1][:1] == "d" and parts[2][:1] == "w":
        return parts[1][1:], parts[2][1:]
    return "", ""


class DbProbe:
    def __init__(self, pg: dict, app_role: str | None):
        self.pg = pg
        self.app_role = app_role
        self.conn: psycopg.Connection | None = None
        self.limits = (0, 0)

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(**self.pg, autocommit=True, connect_timeout=3,
                               application_name="connbench-sampler")
        conn.execute("SET stats_fetch_consistency = none")
        if self.app_role:  # connected as the superuser: count as the app's role
            conn.execute(f'SET ROLE "{self.app_role}"')
        self.limits = tuple(conn.execute(SETTINGS_QUERY).fetchone())
        return conn

    def sample(self):
        if self.conn is None or self.conn.closed:
            self.conn = self._connect()
        try:
            groups = self.conn.execute(BREAKDOWN_QUERY).fetchall()
            article = self.conn.execute(ARTICLE_QUERY).fetchone()[0]
            db = self.conn.execute(DB_QUERY).fetchone() or (0, 0, 0, 0)
        except psycopg.Error:
            self.close()
            raise
        return groups, article, db

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg.Error:
                pass
        self.conn = None


class BouncerProbe:
    """PgBouncer's admin console speaks only the simple query protocol: use libpq's PQexec."""

    def __init__(self, conninfo: dict, database: str, user: str):
        self.conninfo = conninfo
        self.database = database
        self.user = user
        self.conn: psycopg.Connection | None = None

    def _show(self, what: str) -> list[dict]:
        res = self.conn.pgconn.exec_(f"SHOW {what}".encode())
        if res.status != psycopg.pq.ExecStatus.TUPLES_OK:
            raise psycopg.OperationalError(res.error_message.decode(errors="replace"))
        names = [res.fname(i).decode() for i in range(res.nfields)]
        return [
            {n: (res.get_value(r, i) or b"").decode() for i, n in enumerate(names)} for r in range(res.ntuples)
        ]

    def sample(self) -> dict:
        if self.conn is None or self.conn.closed:
            self.conn = psycopg.connect(**self.conninfo, dbname="pgbouncer", autocommit=True, connect_timeout=3)
        try:
            pools = [p for p in self._show("POOLS") if p.get("database") == self.database]
            stats = [s for s in self._show("STATS") if s.get("database") == self.database]
        except psycopg.Error:
            self.close()
            raise
        out = {k: sum(int(p.get(k) or 0) for p in pools) for k in POOL_STATES}
        maxwait = max((int(p.get("maxwait") or 0) + int(p.get("maxwait_us") or 0) / 1e6 for p in pools),
                      default=0.0)
        out["maxwait_s"] = maxwait
        out["total_xact_count"] = sum(int(s.get("total_xact_count") or 0) for s in stats)
        out["total_wait_time_us"] = sum(int(s.get("total_wait_time") or 0) for s in stats)
        return out

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg.Error:
                pass
        self.conn = None


class ProcessProbe:
    """CPU % per component from cumulative CPU time, children included.

    A component's CPU is its whole process tree: live members' cpu_times plus the reaped
    children's totals the parent accumulates (children_user/system). That counts the many
    short-lived backends of CONN_MAX_AGE=0, which per-pid sampling would miss.
    """

    def __init__(self, procs_file: Path, fixed: dict[str, list] | None = None):
        self.procs_file = procs_file
        self._mtime = 0.0
        self.fixed = fixed or {}  # roots that are not in procs.json (the sampler itself)
        self.roots: dict[str, list] = dict(self.fixed)
        self._prev: dict[tuple, tuple[float, float]] = {}
        self._handles: dict[int, psutil.Process] = {}

    def _reload(self):
        try:
            mtime = self.procs_file.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime != self._mtime:
            self._mtime = mtime
            self.roots = {**json.loads(self.procs_file.read_text()), **self.fixed}

    def _proc(self, pid: int) -> psutil.Process:
        p = self._handles.get(pid)
        if p is None or not p.is_running():
            p = self._handles[pid] = psutil.Process(pid)
        return p

    def _rate(self, key: tuple, cpu_total: float, now: float) -> float:
        prev = self._prev.get(key)
        self._prev[key] = (now, cpu_total)
        if prev is None or now <= prev[0]:
            return float("nan")
        return max(0.0, (cpu_total - prev[1]) / (now - prev[0]) * 100.0)

    def sample(self, now: float) -> list[tuple]:
        self._reload()
        rows = []
        for component, entries in self.roots.items():
            for entry in entries:
                dyno, pid = entry.get("dyno", ""), entry["pid"]
                try:
                    root = self._proc(pid)
                    with root.oneshot():
                        ct = root.cpu_times()
                        total = ct.user + ct.system + ct.children_user + ct.children_system
                        rss = root.memory_info().rss
                    kids = root.children(recursive=True) if entry.get("tree") else []
                    for kid in kids:
                        try:
                            kct = kid.cpu_times()
                            if component.startswith("gunicorn"):
                                # each worker gets its own row too
                                rows.append((now, "gunicorn-worker", dyno, kid.pid,
                                             self._rate(("w", kid.pid), kct.user + kct.system, now),
                                             kid.memory_info().rss))
                            total += kct.user + kct.system
                            rss += kid.memory_info().rss
                        except psutil.Error:
                            continue
                except psutil.Error:
                    continue
                rows.append((now, component, dyno, pid, self._rate((component, pid), total, now), rss))
        return rows


def run(config: dict) -> None:
    paths = CellPaths(Path(config["cell_dir"]))
    interval = float(config.get("interval", 0.1))
    proc_every = max(1, round(float(config.get("process_interval", 0.5)) / interval))
    stop = {"flag": False}

    def _stop(*_a):
        stop["flag"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    conns = CsvAppender(paths.connections, CONNECTIONS_COLUMNS)
    dbw = CsvAppender(paths.db, DB_COLUMNS)
    procw = CsvAppender(paths.processes, PROCESSES_COLUMNS)
    db = DbProbe(config["pg"], config["app_role"])
    bouncer = pbw = None
    if config.get("pgbouncer"):
        bouncer = BouncerProbe(config["pgbouncer"], config["pgbouncer_database"], config["app_role"])
        pbw = CsvAppender(paths.pgbouncer, PGBOUNCER_COLUMNS)
    procs = ProcessProbe(Path(config["procs_file"]), fixed={"sampler": [{"pid": os.getpid()}]})
    n, last_flush, errors = 0, time.monotonic(), 0
    next_t = time.monotonic()
    while not stop["flag"]:
        now = time.time()
        try:
            groups, article, dbrow = db.sample()
            total = 0
            for appname, state, count in groups:
                dyno, worker = parse_appname(appname)
                conns.write((now, "postgres", dyno, worker, state, count))
                total += count
            if not groups:
                conns.write((now, "postgres", "", "", "none", 0))
            dbw.write((now, *dbrow, *db.limits, article, total))
        except psycopg.Error as e:
            errors += 1
            if errors <= 5 or errors % 50 == 0:
                print(f"sampler: database sample failed ({errors}): {e}", file=sys.stderr, flush=True)
        if bouncer is not None:
            try:
                s = bouncer.sample()
                for state in POOL_STATES:
                    conns.write((now, "pgbouncer", "", "", state, s[state]))
                pbw.write((now, *(s[c] for c in PGBOUNCER_COLUMNS[1:])))
            except psycopg.Error as e:
                print(f"sampler: pgbouncer sample failed: {e}", file=sys.stderr, flush=True)
        if n % proc_every == 0:
            for row in procs.sample(now):
                procw.write(row)
        n += 1
        if time.monotonic() - last_flush >= 1.0:
            for w in (conns, dbw, procw, pbw):
                if w is not None:
                    w.flush()
            last_flush = time.monotonic()
        next_t += interval
        time.sleep(max(0.0, next_t - time.monotonic()))
        if next_t < time.monotonic() - interval:  # fell behind: do not burst to catch up
            next_t = time.monotonic()
    for w in (conns, dbw, procw, pbw):
        if w is not None:
            w.close()
    db.close()
    if bouncer is not None:
        bouncer.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    config = json.loads(Path(argv[0]).read_text())
    run(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
