"""The sampler process (`python -m connbench.sampler CONFIG`): the database, PgBouncer and each
process's counters, written on one clock every `interval` seconds.

It has one database session of its own, excluded from every count. It connects as the superuser
(so it takes no slot of the app's) and SETs ROLE to the app's role, so the Heroku article's query
runs verbatim with current_user = the app's role.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import psycopg

from connbench.results import (
    CONNECTIONS_COLUMNS,
    DB_COLUMNS,
    PGBOUNCER_COLUMNS,
    PROCESSES_COLUMNS,
    CellPaths,
    CsvAppender,
    SamplerConfig,
)
from connbench.sampler.processes import ProcessReader
from connbench.sampler.readers import POOL_STATES, BouncerReader, DbReader, parse_appname


def run(config: SamplerConfig) -> None:
    paths = CellPaths(Path(config.cell_dir))
    interval = config.interval
    proc_every = max(1, round(config.process_interval / interval))
    stop = {"flag": False}

    def _stop(*_a: object) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    conns = CsvAppender(paths.connections, CONNECTIONS_COLUMNS)
    dbw = CsvAppender(paths.db, DB_COLUMNS)
    procw = CsvAppender(paths.processes, PROCESSES_COLUMNS)
    db = DbReader(config.pg.kwargs(), config.app_role)
    bouncer: tuple[BouncerReader, CsvAppender] | None = None
    if config.pgbouncer is not None:
        bouncer = (BouncerReader(config.pgbouncer.kwargs(), config.pgbouncer_database or "", config.app_role),
                   CsvAppender(paths.pgbouncer, PGBOUNCER_COLUMNS))
    procs = ProcessReader(Path(config.procs_file), fixed={"sampler": [{"pid": os.getpid()}]})
    n, last_flush, errors = 0, time.monotonic(), 0
    next_t = time.monotonic()
    while not stop["flag"]:
        now = time.time()
        try:
            groups, article, dbrow, ssl = db.sample()
            total = 0
            for appname, state, count in groups:
                dyno, worker = parse_appname(appname)
                conns.write((now, "postgres", dyno, worker, state, count))
                total += count
            if not groups:
                conns.write((now, "postgres", "", "", "none", 0))
            dbw.write((now, *dbrow, *db.limits, article, total, ssl))
        except psycopg.Error as e:
            errors += 1
            if errors <= 5 or errors % 50 == 0:
                print(f"sampler: database sample failed ({errors}): {e}", file=sys.stderr, flush=True)
        if bouncer is not None:
            reader, pbw = bouncer
            try:
                s = reader.sample()
                for state in POOL_STATES:
                    conns.write((now, "pgbouncer", "", "", state, s[state]))
                pbw.write((now, *(s[c] for c in PGBOUNCER_COLUMNS[1:])))
            except psycopg.Error as e:
                print(f"sampler: pgbouncer sample failed: {e}", file=sys.stderr, flush=True)
        if n % proc_every == 0:
            for row in procs.sample(now):
                procw.write(row)
        n += 1
        if n == 1 or time.monotonic() - last_flush >= 1.0:  # the first at once: the harness waits for it
            for w in (conns, dbw, procw, bouncer[1] if bouncer else None):
                if w is not None:
                    w.flush()
            last_flush = time.monotonic()
        next_t += interval
        time.sleep(max(0.0, next_t - time.monotonic()))
        if next_t < time.monotonic() - interval:  # fell behind: do not burst to catch up
            next_t = time.monotonic()
    for w in (conns, dbw, procw, bouncer[1] if bouncer else None):
        if w is not None:
            w.close()
    db.close()
    if bouncer is not None:
        bouncer[0].close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    run(SamplerConfig.load(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
