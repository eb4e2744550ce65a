"""The results schema: its version and history, every path of a run directory, every column.

Every timestamp is unix seconds (float) so every file joins on time. Standard library only, so the
sampler's hot path and the writers pay nothing for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, NotRequired, TypedDict, get_args

from connbench.errors import ComponentError

# What a run directory holds and how each file is shaped. Bump it when a reader of the old files would
# misread them, and add the step that reads the old version to UPDATES (like asv's update_to_2).
# 1: first version.
# 2: processes.csv `cpu_percent` (a rate the sampler computed) replaced by `cpu_seconds` (cumulative
#    CPU seconds of the component's process tree, or of one gunicorn worker): rates are analysis's;
#    manifest.json `kind` ("matrix" | "probe") always written; manifest.json, cell.json, probe.json and
#    the sampler's configuration written and read through the models in docs.py. requests.csv (the
#    contract's REQUESTS_COLUMNS) gained t_intended (when the open model's schedule said to send; = t_start
#    in a closed loop) and service_ms (t_start to the response); latency_ms is now the response time
#    measured from t_intended (free of coordinated omission); a request the open model dropped
#    (max_in_flight reached) is a row with error_class "dropped" and blank latency_ms and service_ms.
#    Schema 1's rows are read as t_intended = t_start, service_ms = latency_ms (update_to_2).
# 3: requests.csv gained the app's Server-Timing: connect_ms, pool_ms, db_ms, app_ms and new_conn (the
#    contract's TIMING_COLUMNS); db.csv gained ssl_backends. Schema 2's rows are read with them blank: not
#    measured (update_to_3).
# 4: Locust's master/worker mode. requests.csv gained `generator` (the Locust process that sent the request:
#    "local", or a worker's name); processes.csv gained `generator` and the component locust-worker (each
#    worker's own CPU, as it reported it). Schema 3's requests are read as sent by "local" (one Locust process
#    or --processes, not told apart then), its processes rows with a blank generator (update_to_4).
# 5: Why it holds what it holds. requests.csv gained backend_pid, worker_pid, thread and conn_close (the app's
#    Server-Timing: the backend its queries ran on, the gunicorn worker and the native thread id that ran them,
#    whether Django's rule had the connection due to close at request end); a new backends.csv (the sampler's
#    per-backend events: seen, gone, memory). Schema 4's requests are read with the four blank: not measured
#    (update_to_5).
# 6: What will break in production. requests.csv gained hazards and hazard_examples (the app's Server-Timing: the
#    session-state hazard kinds of the request's statements, connbench.sqlhazards); a new run-level hazards.csv
#    (analysis's). Schema 5's requests are read with both blank: not looked for (update_to_6). cell.json's
#    predicted gained pool_wait (a pool smaller than a worker's concurrency, and what follows; absent: null);
#    summary.csv gained shared_backends and shared_backend_requests (connections inherited across the fork).
# 7: Stale connections. requests.csv gained check_ms (the app's Server-Timing: Django's health check, blank when
#    none ran; schema 6's rows read blank: update_to_7); events.csv gained fault:pause and fault:resume (no request
#    sent for the fault's seconds).
SCHEMA_VERSION = 7

# requests.csv's columns are connbench.contract.REQUESTS_COLUMNS: the locustfile writes it, and it
# imports nothing of connbench but the contract.

# One row per sample per group. source: postgres | pgbouncer.
# postgres rows: dyno/worker from application_name, state from pg_stat_activity.state.
# pgbouncer rows: dyno/worker empty, state is a SHOW POOLS column (cl_active, sv_idle, ...).
CONNECTIONS_COLUMNS = ("t", "source", "dyno", "worker", "state", "count")

# One row per sample. article_count is the Heroku article's exact query, run as the app's
# role; client_backends is our attributed total (the sampler's own connection excluded); ssl_backends the
# app role's client backends whose connection is encrypted (pg_stat_ssl).
DB_COLUMNS = (
    "t", "numbackends", "sessions", "sessions_killed", "sessions_fatal", "max_connections",
    "reserved_connections", "article_count", "client_backends", "ssl_backends",
)  # fmt: skip

# One row per sample of PgBouncer's SHOW POOLS for the app's pool, plus SHOW STATS totals.
PGBOUNCER_COLUMNS = (
    "t", "cl_active", "cl_waiting", "sv_active", "sv_idle", "sv_used", "sv_login", "maxwait_s",
    "total_xact_count", "total_wait_time_us",
)  # fmt: skip

# One row per sample per process root, raw counters only. cpu_seconds: cumulative user + system CPU.
# component: postgres (postmaster + all backends, reaped ones included), pgbouncer, gunicorn-master
# (the dyno's whole tree: master + workers), gunicorn-worker (one worker's own CPU, a row per worker),
# locust (all its processes on this machine), locust-worker (one Locust worker's own CPU as it reported it to the
# master with its rows, local or remote; generator names it), sampler. dyno is set for gunicorn rows.
PROCESSES_COLUMNS = ("t", "component", "dyno", "pid", "cpu_seconds", "rss_bytes", "generator")
COMPONENTS = ("postgres", "pgbouncer", "gunicorn-master", "gunicorn-worker", "locust", "locust-worker", "sampler")

# One row per server connection PostgreSQL 18+ logged while the cell ran (log_connections = setup_durations):
# the server's own timing of each connection's setup, in ms (total, fork, authentication); pid is the backend's.
# Absent with an older server (Debian's 15) or your own (--database-url).
SERVER_SETUP_COLUMNS = ("t", "pid", "total_ms", "fork_ms", "auth_ms")

# backends.csv: the sampler's record of each app backend (pg_stat_activity's client backends of the app's role,
# the sampler's own excluded), keyed by (pid, backend_start): a pid alone is reused by the OS. event:
#   seen  - the first sample that showed it (dyno, worker from application_name; state its state then);
#   gone  - the first sample that no longer showed it (t), with the samples that showed it and those of
#           them in state idle (samples, idle_samples);
#   open  - still there when the sampler stopped (t its last sample), samples and idle_samples as for gone;
#   mem   - its memory, every mem_interval: pss_bytes (proportional set size, /proc/<pid>/smaps_rollup: its
#           own pages plus its share of those it shares) beside rss_bytes (every page it maps, shared ones in
#           full). Only when the server runs on this machine and the sampler can read the files
#           (cell.json's memory says why not otherwise).
# backend_start is unix seconds. Through PgBouncer these are PgBouncer's server connections.
BACKENDS_COLUMNS = ("t", "event", "pid", "backend_start", "dyno", "worker", "state", "samples", "idle_samples",
                    "pss_bytes", "rss_bytes")
BACKEND_EVENTS = ("seen", "gone", "open", "mem")

# connections_life.csv (analysis/lifecycle.py, per cell, written beside its raw files): one row per app
# connection, its life story from backends.csv joined with requests.csv on backend_pid, by (pid, backend_start)
# and the time the request ran. opened/closed: unix seconds (closed blank while open at the end; end says which);
# dyno/worker from application_name; worker_pids/threads: the distinct gunicorn worker pids and native thread
# ids whose requests used it (";"-joined); requests: requests served in the cell; idle_s: its lifetime less the
# time its requests held it (service time), idle_share the share of the sampler's samples that saw it idle;
# cause: why it was opened, where the requests tell (new_thread, max_age, health_check, pool, unknown).
CONNECTIONS_LIFE_COLUMNS = ("pid", "backend_start", "opened", "closed", "end", "lifetime_s", "dyno", "worker",
                            "worker_pids", "threads", "requests", "first_request", "last_request", "idle_s",
                            "idle_share", "cause", "pss_bytes_p50", "rss_bytes_p50")
OPEN_CAUSES = ("new_thread", "max_age", "health_check", "pool", "unknown")

# hazards.csv (analysis/hazards.py): one row per (endpoint, kind) seen in the run's completed cells, measure
# window or not (a hazard is one whenever it runs). requests: how many requests had it; cells: in how many cells;
# example: the first example statement the app sent (literals as ?, at most 200 characters); pooled_failures: of
# those requests, how many failed in a pgbouncer-transaction cell; error_classes: their classes, space-separated.
HAZARDS_COLUMNS = ("endpoint", "kind", "requests", "cells", "example", "pooled_failures", "error_classes")

# Phase changes and injected faults ("fault:<action>"); a pause also marks its end, when requests flow again.
EVENTS_COLUMNS = ("t", "kind", "detail")
FAULT_RESUME = "fault:resume"

Phase = Literal["start_services", "verify", "warmup", "measure", "cooldown", "stop"]
PHASES: tuple[Phase, ...] = get_args(Phase)
# A cell's status as the harness writes it; TERMINAL ones end it. "damaged" is analysis's verdict on a cell
# whose files cannot be read, and "unknown" on one with no record at all: never written by the harness.
CellStatus = Literal["pending", "running", "completed", "failed", "skipped", "interrupted"]
TerminalStatus = Literal["completed", "failed", "skipped", "interrupted"]
CellVerdict = Literal["pending", "running", "completed", "failed", "skipped", "interrupted", "damaged", "unknown"]
TERMINAL_STATUSES: tuple[TerminalStatus, ...] = get_args(TerminalStatus)
CELL_STATUSES: tuple[CellVerdict, ...] = get_args(CellVerdict)
RunStatus = Literal["running", "completed", "completed_with_failures", "interrupted", "crashed"]

# File names: used through RunPaths / CellPaths, named here once.
MANIFEST_JSON, CELL_JSON, PROBE_JSON, PROCS_JSON, PIDS_JSON = (
    "manifest.json", "cell.json", "probe.json", "procs.json", "pids.json")
REQUESTS_CSV, CONNECTIONS_CSV, DB_CSV, PGBOUNCER_CSV, PROCESSES_CSV, EVENTS_CSV, SERVER_SETUP_CSV = (
    "requests.csv", "connections.csv", "db.csv", "pgbouncer.csv", "processes.csv", "events.csv",
    "server_setup.csv")
BACKENDS_CSV, CONNECTIONS_LIFE_CSV, HAZARDS_CSV = "backends.csv", "connections_life.csv", "hazards.csv"
SUMMARY_CSV, SUMMARY_GROUPS_CSV, SUMMARY_GENERATORS_CSV, EXPECTATIONS_JSON, REPORT_HTML = (
    "summary.csv", "summary_groups.csv", "summary_generators.csv", "expectations.json", "index.html")
LOCUST_DIR = "locust"


class ProcRoot(TypedDict):
    """One process the sampler accounts CPU to (procs.json: component -> its roots)."""

    pid: int
    dyno: NotRequired[int]  # a gunicorn master: its dyno
    tree: NotRequired[bool]  # its children's CPU counts too


class RunPaths:
    """The layout of reports/<run-id>/."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.manifest = self.root / MANIFEST_JSON
        self.cells = self.root / "cells"
        self.summary = self.root / SUMMARY_CSV
        self.summary_groups = self.root / SUMMARY_GROUPS_CSV  # one row per repeat group
        self.summary_generators = self.root / SUMMARY_GENERATORS_CSV  # one row per cell per Locust process
        self.expectations = self.root / EXPECTATIONS_JSON  # the scenario's [[expect]], evaluated
        self.hazards = self.root / HAZARDS_CSV  # session-state hazards per endpoint and kind (analysis's)
        self.charts = self.root / "charts"
        self.report = self.root / REPORT_HTML
        self.probe = self.root / PROBE_JSON  # `connbench probe` only
        self.pids = self.root / PIDS_JSON  # process groups the harness owns, for cleanup after a SIGKILL

    @property
    def probe_app(self) -> CellPaths:
        """Raw samples of the app a probe started: cell-shaped, but no cell."""
        return CellPaths(self.root / "probe-app")

    def cell(self, cell_id: str) -> CellPaths:
        return CellPaths(self.cells / cell_id)


class CellPaths:
    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.json = self.root / CELL_JSON
        self.requests = self.root / REQUESTS_CSV
        self.connections = self.root / CONNECTIONS_CSV
        self.db = self.root / DB_CSV
        self.pgbouncer = self.root / PGBOUNCER_CSV
        self.processes = self.root / PROCESSES_CSV
        self.events = self.root / EVENTS_CSV
        self.server_setup = self.root / SERVER_SETUP_CSV
        self.backends = self.root / BACKENDS_CSV
        self.connections_life = self.root / CONNECTIONS_LIFE_CSV  # analysis's, not the harness's
        self.procs = self.root / PROCS_JSON  # the process roots the sampler measures (it rereads on change)
        self.locust = self.root / LOCUST_DIR  # Locust's own files:
        self.locust_raw = self.locust / "raw"  # per-process request logs, merged into requests.csv
        self.locust_started = self.locust / "started"  # the unix time the test started
        self.locust_stats = self.locust / "stats"  # --csv / --json-file prefix
        self.locust_report = self.locust / "report.html"
        self.locust_log = self.locust / "locust.log"
        self.logs = self.root / "logs"
        self.sampler_log = self.logs / "sampler.log"

    def file(self, name: str) -> Path:
        """A CSV of the cell by its file name (REQUESTS_CSV, ...)."""
        return self.root / name



class ResultsError(ComponentError, ValueError):
    """A results file that is not what the schema says; the message names the file and the field."""


class SchemaVersionError(ResultsError):
    """Written by a newer connbench than this one."""


# summary.csv (analysis/summarize.py): one row per cell. The fixed columns below, with every knob
# of cell.json params inserted after "dropped_lines" (mix flattened to mix_<key>), and one
# err_<error_class> count per error class seen in the run appended at the end.
# Metrics are empty for a cell whose status is not "completed". cpu_* are percent of one core.
# Load: offered_rps is what the open model's schedule offered (params arrival_rate; empty for a closed
# loop); rps is every request sent in the measure window per second (failures included, as Locust counts);
# achieved_rps those of them that got an HTTP response (any status); dropped the requests the schedule
# placed in the window that were never sent (max_in_flight reached): never a request, failure or latency
# sample. lag_p99_ms: p99 of (t_start - t_intended) over sent requests (0 in a closed loop);
# generator_lagged: lag_p99_ms > 10 ms, the generator (not the app) limited the test.
# lat_*: response time (requests.csv latency_ms, from t_intended); svc_*: service time (service_ms, from
# t_start). analysis/summarize.py's docstring holds the exact definitions.
INTERVAL_FIGURES = ("rps", "lat_p50", "lat_p95", "lat_p99", "churn_per_s", "conn_peak")
SUMMARY_COLUMNS = (
    "cell_id", "group", "repeat", "status", "error", "skip_reason", "damage", "dropped_lines",
    "measure_s", "requests", "failures", "failure_rate", "rps", "offered_rps", "achieved_rps", "dropped",
    "lag_p99_ms", "lat_p50", "lat_p90", "lat_p95", "lat_p99", "lat_p999", "lat_max", "lat_mean",
    "svc_p50", "svc_p95", "svc_p99",
    *(f"{part}_ms_{stat}" for part in ("connect", "pool", "db", "app", "outside") for stat in ("mean", "p50", "p95")),
    "new_conn_share", "new_conn_per_s", "connect_new_n", "connect_new_p50", "connect_new_lo", "connect_new_hi",
    "connect_cost_ms", "server_setup_n", "server_setup_p50", "connect_s_per_s",
    "conn_peak", "conn_plateau", "conn_mean", "conn_held", "predicted_connections", "conn_gap",
    "predicted_connections_max", "inflight_max", "conn_rise", "conn_rise_per_s", "conn_bounded",
    "predicted_bounded", "max_connections_observed", "article_count_peak", "churn_per_s",
    "pgb_clients_peak", "pgb_servers_peak", "pgb_waiting_peak", "pgb_maxwait_s",
    "cpu_postgres", "cpu_pgbouncer", "cpu_gunicorn_master", "cpu_gunicorn_worker", "cpu_locust",
    "cpu_sampler", "cpu_total", "locust_procs", "locust_cpu_per_proc", "locust_cpu_warning", "generator_saturated",
    "generator_lagged", "generators", "generator_busiest", "generator_cpu_max", "generator_laggiest",
    "generator_lag_p99_max", "generators_lost", "generators_lost_names",
    "machine_cpus", "machine_cpu_pct", "machine_saturated",
    # why it holds what it holds (analysis/lifecycle.py, from connections_life.csv): requests per connection
    # (median, p10) over the connections the measure window's requests used; distinct threads (worker pid,
    # native id) that ran queries, the most seen in one worker, and connections per thread; the median
    # lifetime of connections that closed in the cell; connections opened per second in the window, in total
    # and by cause; PSS per app backend (median, p95, MiB), RSS beside it, and the app backends' PSS total at
    # the plateau (the median over the window of the sum over live backends)
    "requests_per_connection_p50", "requests_per_connection_p10", "connections_used", "threads_seen",
    "threads_per_worker_max", "connections_per_thread", "connection_lifetime_s_p50", "opened_per_s",
    *(f"opened_{cause}_per_s" for cause in ("new_thread", "max_age", "health_check", "pool", "unknown")),
    "pss_backend_mib_p50", "pss_backend_mib_p95", "rss_backend_mib_p50", "pss_total_mib",
    # session-state hazards (analysis/hazards.py): requests whose statements relied on session state (any
    # phase), and the kinds seen (connbench.sqlhazards.KINDS, space-separated)
    "hazard_requests", "hazard_kinds",
    # backends two gunicorn workers used at overlapping times (analysis/forks.py: a connection inherited across
    # the fork), and the requests they served; blank through PgBouncer, whose server connections are shared
    "shared_backends", "shared_backend_requests",
    # the cell's setting (group) across its completed repeats: interval of each compared figure, its method,
    # and the setting's rank group (1 = best; settings sharing a rank are indistinguishable)
    *(f"{f}_{side}" for f in INTERVAL_FIGURES for side in ("lo", "hi")), "interval_method", "rank",
)  # fmt: skip

# summary_generators.csv (analysis/generators.py): one row per completed cell per generator (requests.csv's
# generator). requests/rps: requests it sent in the measure window; lag_p99_ms: its schedule lag p99 (0 in a
# closed loop); cpu_pct: its own CPU in percent of one core (a worker's report; blank for one Locust process,
# whose CPU is summary.csv's cpu_locust); saturated: cpu_pct >= 90; lagged: lag_p99_ms > 10.
GENERATOR_SUMMARY_COLUMNS = ("cell_id", "generator", "requests", "rps", "lag_p99_ms", "cpu_pct", "saturated", "lagged")
