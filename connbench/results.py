"""Where a run's files go and what columns they have: the schema, in one place.

Every timestamp is unix seconds (float) so every file joins on time. Every write that
other stages read is atomic (write a temporary file, then rename) so a crash leaves
either the old file or the new one, never half of one.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

# One row per request, written by the Locust hook (locustfiles/requestlog.py).
REQUESTS_COLUMNS = ("t_start", "endpoint", "latency_ms", "status", "error_class", "dyno")

# One row per sample per group. source: postgres | pgbouncer.
# postgres rows: dyno/worker from application_name, state from pg_stat_activity.state.
# pgbouncer rows: dyno/worker empty, state is a SHOW POOLS column (cl_active, sv_idle, ...).
CONNECTIONS_COLUMNS = ("t", "source", "dyno", "worker", "state", "count")

# One row per sample. article_count is the Heroku article's exact query, run as the app's
# role; client_backends is our attributed total (the sampler's own connection excluded).
DB_COLUMNS = (
    "t",
    "numbackends",
    "sessions",
    "sessions_killed",
    "sessions_fatal",
    "max_connections",
    "reserved_connections",
    "article_count",
    "client_backends",
)

# One row per sample of PgBouncer's SHOW POOLS for the app's pool, plus SHOW STATS totals.
PGBOUNCER_COLUMNS = (
    "t",
    "cl_active",
    "cl_waiting",
    "sv_active",
    "sv_idle",
    "sv_used",
    "sv_login",
    "maxwait_s",
    "total_xact_count",
    "total_wait_time_us",
)

# One row per sample per process. component: postgres (postmaster + all backends, ended ones
# included), pgbouncer, gunicorn-master (the whole dyno: master + its workers), gunicorn-worker
# (one row per worker: a breakdown of gunicorn-master, not in addition to it), locust (all its
# processes), sampler. dyno is set for gunicorn rows.
PROCESSES_COLUMNS = ("t", "component", "dyno", "pid", "cpu_percent", "rss_bytes")

# Phase changes and injected faults.
EVENTS_COLUMNS = ("t", "kind", "detail")

# cell.json (written atomically by connbench/cell.py):
#   schema_version, cell_id, group (cell id without the repeat suffix), repeat (0-based),
#   params   every knob of the cell (see connbench/scenario.py Knobs), conn_max_age as int or "none"
#   predicted  {"connections": int|None, "connections_max": int|None, "pgbouncer_server_max": int|None,
#               "basis": str}  (connbench/scenario.py predict())
#   status   one of CELL_STATUSES; error (str|None); skip_reason (str|None)
#   phases   {phase: [t_begin, t_end]} for each of PHASES reached
#   services {"postgres": {...}, "pgbouncer": {...}|None, "dynos": [{"dyno", "port"}]}
#   overhead_s  setup + teardown seconds beyond warm-up/measure/cool-down
PHASES = ("start_services", "verify", "warmup", "measure", "cooldown", "stop")

# "damaged" is analysis's verdict on a cell whose raw files cannot be read (never written by the harness).
CELL_STATUSES = ("pending", "running", "completed", "failed", "skipped", "interrupted", "damaged")

REQUESTS_CSV = "requests.csv"
CONNECTIONS_CSV = "connections.csv"
DB_CSV = "db.csv"
PGBOUNCER_CSV = "pgbouncer.csv"
PROCESSES_CSV = "processes.csv"
EVENTS_CSV = "events.csv"
CELL_JSON = "cell.json"
MANIFEST_JSON = "manifest.json"
SUMMARY_CSV = "summary.csv"
LOCUST_DIR = "locust"


class RunPaths:
    """The layout of reports/<run-id>/."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST_JSON

    @property
    def cells(self) -> Path:
        return self.root / "cells"

    @property
    def summary(self) -> Path:
        return self.root / SUMMARY_CSV

    @property
    def charts(self) -> Path:
        return self.root / "charts"

    @property
    def report(self) -> Path:
        return self.root / "index.html"

    @property
    def pids(self) -> Path:
        """Process groups the harness owns, for cleanup after a SIGKILL."""
        return self.root / "pids.json"

    def cell(self, cell_id: str) -> CellPaths:
        return CellPaths(self.cells / cell_id)


class CellPaths:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.json = self.root / CELL_JSON
        self.requests = self.root / REQUESTS_CSV
        self.connections = self.root / CONNECTIONS_CSV
        self.db = self.root / DB_CSV
        self.pgbouncer = self.root / PGBOUNCER_CSV
        self.processes = self.root / PROCESSES_CSV
        self.events = self.root / EVENTS_CSV
        self.locust = self.root / LOCUST_DIR
        self.logs = self.root / "logs"


def _atomic_target(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    return fd, Path(tmp)


def write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = _atomic_target(Path(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_private(path: Path, text: str) -> None:
    """A file only its owner may read (credentials), created 0600 before anything is written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def write_csv_atomic(path: Path, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    fd, tmp = _atomic_target(Path(path))
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(columns)
            writer.writerows(rows)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class CsvAppender:
    """An append-only CSV with a header, flushed in batches (the sampler's hot path)."""

    def __init__(self, path: Path, columns: Sequence[str]):
        self.path = Path(path)
        self.columns = tuple(columns)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._fh)
        if new:
            self._writer.writerow(self.columns)
            self._fh.flush()

    def write(self, row: Sequence[Any]) -> None:
        self._writer.writerow(row)

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            self._fh.close()


def append_event(path: Path, t: float, kind: str, detail: str = "") -> None:
    app = CsvAppender(path, EVENTS_COLUMNS)
    app.write((repr(t), kind, detail))
    app.close()

# summary.csv (analysis/summarize.py): one row per cell. The fixed columns below, with every knob
# of cell.json params inserted after "skip_reason" (mix flattened to mix_<key>), and one
# err_<error_class> count per error class seen in the run appended at the end.
# Metrics are empty for a cell whose status is not "completed".
SUMMARY_COLUMNS = (
    "cell_id", "group", "repeat", "status", "error", "skip_reason", "damage", "dropped_lines",
    "measure_s", "requests", "failures", "failure_rate", "rps",
    "lat_p50", "lat_p90", "lat_p95", "lat_p99", "lat_p999", "lat_max", "lat_mean",
    "conn_peak", "conn_plateau", "conn_mean", "conn_held", "predicted_connections", "conn_gap",
    "max_connections_observed", "article_count_peak", "churn_per_s",
    "pgb_clients_peak", "pgb_servers_peak", "pgb_waiting_peak", "pgb_maxwait_s",
    "cpu_postgres", "cpu_pgbouncer", "cpu_gunicorn_master", "cpu_gunicorn_worker", "cpu_locust",
    "cpu_sampler", "cpu_total", "locust_procs", "locust_cpu_per_proc", "generator_saturated",
)  # fmt: skip
