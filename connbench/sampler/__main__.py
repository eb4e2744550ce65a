"""The sampler process (`python -m connbench.sampler CONFIG`): the database, PgBouncer and each
process's counters, written on one clock every `interval` seconds; each app backend's life and memory
(backends.csv, connbench/sampler/backends.py).

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
    BACKENDS_COLUMNS,
    CONNECTIONS_COLUMNS,
    DB_COLUMNS,
    PGBOUNCER_COLUMNS,
    PROCESSES_COLUMNS,
    CellPaths,
    CsvAppender,
    SamplerConfig,
    append_event,
)
from connbench.sampler.backends import MEASURED, BackendTracker, memory_verdict, write_memory
from connbench.sampler.processes import ProcessReader
from connbench.sampler.readers import POOL_STATES, BouncerReader, DbReader, parse_appname


def run(config: SamplerConfig) -> None:
    paths = CellPaths(Path(config.cell_dir))
    interval = config.interval
    proc_every = max(1, round(config.process_interval / interval))
    mem_every = max(1, round(config.mem_interval / interval))
    stop = {"flag": False}

    def _stop(*_a: object) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    conns = CsvAppender(paths.connections, CONNECTIONS_COLUMNS)
    dbw = CsvAppender(paths.db, DB_COLUMNS)
    procw = CsvAppender(paths.processes, PROCESSES_COLUMNS)
    backw = CsvAppender(paths.backends, BACKENDS_COLUMNS)
    tracker = BackendTracker(backw)
    verdict: str | None = None  # memory: said once, as events.csv's "memory" event
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
            # the app's by role, not application_name: PgBouncer's server connections take a client's name
            tracker.update(now, (b for b in db.backends if b.is_app))
            if verdict is None:
                verdict = memory_verdict(config.memory, db.backend_pid)
                append_event(paths.events, now, "memory", verdict)
            if verdict == MEASURED and n % mem_every == 0:
                write_memory(now, tracker, backw)
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
            for w in (conns, dbw, procw, backw, bouncer[1] if bouncer else None):
                if w is not None:
                    w.flush()
            last_flush = time.monotonic()
        next_t += interval
        time.sleep(max(0.0, next_t - time.monotonic()))
        if next_t < time.monotonic() - interval:  # fell behind: do not burst to catch up
            next_t = time.monotonic()
    tracker.close()
    if verdict is None:
        append_event(paths.events, time.time(), "memory", "not measured: the sampler never reached the server")
    for w in (conns, dbw, procw, backw, bouncer[1] if bouncer else None):
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
