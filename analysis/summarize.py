"""One row per cell (summary.csv); the per-setting table (summary_groups.csv) is analysis/settings.py's.

Definitions (all times are unix seconds; "measure" is cell.json phases["measure"] = [m0, m1]):

* A request belongs to the measure window when the schedule placed it there: m0 <= t_intended < m1
  (warm-up and cool-down excluded). In a closed loop t_intended = t_start, so this is the send time; in the
  open model a request scheduled in the window counts there even if the generator sent it late (its lateness
  is the lag below), and one scheduled in the warm-up never does.
* Dropped requests (error_class "dropped": the open model's schedule said to send, max_in_flight requests
  were out, so it was never sent) are never requests, failures or latency samples: `dropped` counts those
  in the window, apart.
* requests: every other request in the window (sent). rps = requests / (m1 - m0), failures included (what
  Locust calls req/s). achieved_rps = those that got an HTTP response (status > 0, error statuses included)
  / (m1 - m0): what the app actually answered; offered_rps = the open model's arrival_rate (cell.json params;
  empty for a closed loop): what the schedule asked for. offered - achieved is made of dropped requests, sent
  ones that got no response (status 0: refused, timed out, unanswered) and the schedule's own randomness.
* A request failed when error_class is set, or its status is missing, 0 or >= 400 (then its class is
  "http_<status>" or "no_response"). Percentiles use every measured request (failures included, as Locust
  does), numpy linear interpolation on the raw per-request values at full precision:
  lat_* response time (latency_ms: from t_intended to the response, free of coordinated omission);
  svc_* service time (service_ms: from t_start to the response). In a closed loop the two are equal.
  An "unanswered" request (open model: still out when the drain after the schedule ended) is a failure whose
  times are lower bounds (the wait so far): counted like any failure, never answered.
* lag_p99_ms: p99 of (t_start - t_intended) * 1000 over the requests (dropped ones were never sent): how late
  the generator sent what the schedule asked for; 0 in a closed loop. generator_lagged = lag_p99_ms > 10 ms:
  then the generator, not the app, limited the test.
* Server-Timing (the app's header, requests.csv connect_ms, pool_ms, db_ms, app_ms, new_conn; see
  target_app/timing.py): over measured requests that carry it (a response from the app), <part>_ms_mean,
  _p50 and _p95 for connect, pool, db, app and outside = service_ms - (connect + pool + db + app), the time
  outside the app (network, gunicorn, the client). new_conn_share: the share that opened a physical connection;
  new_conn_per_s: how many did per second of the window, the app's side of churn (through PgBouncer: new
  app -> PgBouncer connections, beside churn_per_s, PgBouncer -> PostgreSQL).
* connect_new_p50: the headline cost of a new connection, what the requests that opened one paid: the median
  of connect_ms over the measured requests with new_conn = 1 (connect_new_n of them), with connect_new_lo and
  _hi its distribution-free 95 % interval (stats.median_interval). connect_s_per_s: the sum of connect_ms
  over the window's requests / 1000 / the window: seconds spent connecting per second (1.0 = one core's
  worth of connecting, on the client side alone).
* connect_cost_ms: cell.json connect_cost's median for the app's path (through PgBouncer when it is in the
  path, else direct): opening a connection with the cell's auth and TLS plus SELECT 1, timed apart from any
  request (a second, independent figure). Without Server-Timing, connect_s_per_s is estimated from it:
  new_conn_per_s (else churn_per_s) x connect_cost_ms / 1000.
* server_setup_p50: the median of PostgreSQL 18's own `setup total` (log_connections = setup_durations:
  from accepting the socket to ready for queries, fork and authentication included) over the connections
  the server set up in the measure window (server_setup_n of them, server_setup.csv); the third figure of
  a connection's cost, from the server's side (through PgBouncer: PgBouncer's server connections).
* Server connections: connections.csv rows with source == "postgres", summed per sample time t.
  When every such t is also a db.csv sample time, db.csv is the sampling clock and a sample with
  no connection rows counts 0 (the sampler may write nothing when nobody is connected).
  - conn_peak: the largest per-sample total over the whole cell (any phase: a limit is hit whenever).
  - conn_mean: mean of the per-sample totals with m0 <= t < m1.
  - conn_plateau: MEDIAN of the per-sample totals over the last half of the measure window,
    m0 + (m1 - m0) / 2 <= t < m1: the level the count settled at once load was steady, robust to
    a single spike or dip.
  - conn_held: the last sample in the cool-down phase (c0 <= t <= c1): what stays open after load stops.
  - conn_gap = conn_plateau - predicted_connections (cell.json predicted.connections).
  - conn_rise, conn_rise_per_s, inflight_max, conn_bounded: does the count settle, or grow with requests
    (connections left behind)? Defined in analysis/growth.py. predicted_bounded, predicted_connections_max:
    cell.json predicted.bounded and .connections_max.
* churn_per_s: db.csv cumulative `sessions` linearly interpolated at m0 and m1, difference / (m1 - m0).
* PgBouncer (pgbouncer.csv, whole cell): peak cl_active+cl_waiting, peak sv_active+sv_idle+sv_used+sv_login,
  peak cl_waiting, max maxwait_s.
* CPU (processes.csv holds cumulative cpu_seconds per process root): per (component, dyno, pid) series,
  the counter linearly interpolated at the window's ends, m0 and m1 (clipped to the series' own first and
  last samples, for a process started or restarted mid-window), difference summed over the component's
  series, divided by the time they cover: percent of one core (100 = one core busy). A counter that dips
  (a grandchild's CPU lost when it exits) counts as no CPU, never negative. The rule for the rows the
  sampler breaks down lives here, in BREAKDOWN: gunicorn-master is a dyno's whole tree (master AND workers),
  gunicorn-worker one worker's own CPU, so cpu_gunicorn_worker (all workers) is part of
  cpu_gunicorn_master and cpu_total (every component) leaves gunicorn-worker out.
* generator_saturated: a Locust process is single-threaded (gevent): it tops out at one core. With n
  load-generating Locust processes (cell.json services.locust.processes, else the number of distinct
  locust pids sampled), the generator is the bottleneck when cpu_locust >= 90 % x n, i.e.
  locust_cpu_per_proc = cpu_locust / n >= 90.
  Locust's own warning ("CPU usage above 90%", logged in locust/locust.log) during the measure window sets
  locust_cpu_warning and generator_saturated too: its sampling sees bursts a window mean smooths away.
* machine_saturated: the CPU of all the harness's components together (cpu_total) against the cores it may
  use (manifest host.cpus_usable: affinity and cgroup quota; else host.cpus): machine_cpu_pct =
  cpu_total / cpus >= 90 %. Load from outside the harness is not in cpu_total. Then every component competed for the
  same cores, so throughput and response times describe this machine, not the setting.
* Per setting (summary_groups.csv, and on every repeat's row of summary.csv): <figure>_lo/_hi, the interval
  of rps, lat_p50/p95/p99, churn_per_s and conn_peak across the setting's completed repeats, with its
  method and rank (analysis/settings.py, analysis/stats.py).
* Why it holds what it holds (requests_per_connection_p50 .. pss_total_mib, and each cell's connections_life.csv):
  analysis/lifecycle.py's docstring defines them; blank for a cell without backends.csv (schema < 5), never 0.
* Damaged cells (see analysis/load.py): status "damaged", the reason in `damage`, no figures at all.
  dropped_lines (completed cells): requests.csv lines dropped, a torn last line or malformed rows; they are
  never counted as requests (a torn line is not a failed request).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from connbench import results as R
from connbench.analysis.connect_cost import cost_metrics, server_setup_metrics
from connbench.analysis.forks import fork_metrics
from connbench.analysis.generators import generator_frame, generator_metrics
from connbench.analysis.growth import growth
from connbench.analysis.hazards import hazard_metrics, hazards_frame, write_hazards
from connbench.analysis.lifecycle import life_metrics, life_paths, write_lives
from connbench.analysis.load import CellData, RunData, load_run
from connbench.analysis.settings import groups_frame, with_intervals
from connbench.analysis.stats import median_interval
from connbench.analysis.windows import (
    LAG_LIMIT_MS,
    SATURATION_PCT,
    connection_totals,
    cpu_rates,
    is_dropped,
    lag_p99_ms,
    measured_requests,
    offered_rps,
    window_rows,
)
from connbench.analysis.write_guard import check_outputs, writing

PERCENTILES = {"lat_p50": 50, "lat_p90": 90, "lat_p95": 95, "lat_p99": 99, "lat_p999": 99.9}
# Server-Timing parts; "outside" = service time minus the rest: the network, gunicorn, the client's own work
TIMING_PARTS = ("connect", "pool", "db", "app", "outside")
SERVICE_PERCENTILES = {"svc_p50": 50, "svc_p95": 95, "svc_p99": 99}
LOCUST_CPU_WARNING = "CPU usage above"  # Locust's own warning, logged when its process passes 90 %
# Rows that break another component's figure down (see the module docstring): reported, never added.
BREAKDOWN = {"gunicorn-worker": "gunicorn-master"}
SUMMARY_COLUMNS = R.SUMMARY_COLUMNS
_ID_END = SUMMARY_COLUMNS.index("dropped_lines") + 1  # params go after the columns that say what happened
_ID_COLUMNS = SUMMARY_COLUMNS[:_ID_END]
_METRIC_COLUMNS = SUMMARY_COLUMNS[_ID_END:]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(text).lower()).strip("_") or "unknown"


def flatten_params(params: dict[str, Any]) -> dict[str, Any]:
    """Knobs as flat columns: mix = {read: 1} becomes mix_read = 1; lists become JSON text."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            for sub, v in flatten_params(value).items():
                out[f"{key}_{sub}"] = v
        elif isinstance(value, list | tuple):
            out[key] = json.dumps(value)
        else:
            out[key] = value
    return out


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q, method="linear")) if values.size else np.nan


def request_metrics(cell: CellData) -> dict[str, Any]:
    m = cell.phase("measure")
    req = measured_requests(cell)
    out: dict[str, Any] = {"measure_s": (m[1] - m[0]) if m else np.nan, "requests": len(req)}
    fails = req[req["failed"]]
    out["failures"] = len(fails)
    out["failure_rate"] = len(fails) / len(req) if len(req) else np.nan
    per_s = (lambda n: n / out["measure_s"]) if m and out["measure_s"] > 0 else (lambda n: np.nan)
    out["rps"] = per_s(len(req))
    out["offered_rps"] = offered_rps(cell)
    out["achieved_rps"] = per_s(int((req["status"] > 0).sum()))
    out["dropped"] = int(is_dropped(window_rows(cell)).sum())
    out["lag_p99_ms"] = lag_p99_ms(req)
    out["generator_lagged"] = bool(out["lag_p99_ms"] > LAG_LIMIT_MS) if len(req) else None
    lat = req["latency_ms"].to_numpy(dtype=float)
    for col, q in PERCENTILES.items():
        out[col] = _percentile(lat, q)
    out["lat_max"] = float(lat.max()) if lat.size else np.nan
    out["lat_mean"] = float(lat.mean()) if lat.size else np.nan
    svc = req["service_ms"].to_numpy(dtype=float)
    for col, q in SERVICE_PERCENTILES.items():
        out[col] = _percentile(svc, q)
    for name, n in fails["err"].value_counts().items():
        out[f"err_{slug(name)}"] = int(n)
    return out


def timing_metrics(cell: CellData) -> dict[str, Any]:
    """The app's Server-Timing over measured requests that carried it: mean, p50, p95 of each part, and the
    requests that opened a physical connection (share, and per second: client-side churn)."""
    req = measured_requests(cell)
    req = req[req["new_conn"].notna()] if "new_conn" in req else req.iloc[0:0]
    if not len(req):
        return {}
    parts = {p: req[f"{p}_ms"].to_numpy(float) for p in TIMING_PARTS[:-1]}
    parts["outside"] = req["service_ms"].to_numpy(float) - sum(parts.values())
    out: dict[str, Any] = {}
    for part, v in parts.items():
        out[f"{part}_ms_mean"] = float(np.mean(v))
        out[f"{part}_ms_p50"] = _percentile(v, 50)
        out[f"{part}_ms_p95"] = _percentile(v, 95)
    new = req["new_conn"].to_numpy(float)
    m = cell.phase("measure")
    span = (m[1] - m[0]) if m and m[1] > m[0] else np.nan
    out["new_conn_share"] = float(new.mean())
    out["new_conn_per_s"] = float(new.sum()) / span
    # what a new connection cost the requests that paid for one: the headline, from the app's own timing
    opened = parts["connect"][new == 1]
    out["connect_new_n"] = int(opened.size)
    out["connect_new_p50"], out["connect_new_lo"], out["connect_new_hi"] = median_interval(opened)
    out["connect_s_per_s"] = float(parts["connect"].sum()) / 1000.0 / span  # measured, not multiplied
    return out


def connection_metrics(cell: CellData) -> dict[str, Any]:
    tot = connection_totals(cell)
    m, cool = cell.phase("measure"), cell.phase("cooldown")
    out: dict[str, Any] = {"conn_peak": tot.max() if len(tot) else np.nan}
    t = tot.index.to_numpy(dtype=float)
    if m and len(tot):
        during = tot[(t >= m[0]) & (t < m[1])]
        late = tot[(t >= m[0] + (m[1] - m[0]) / 2) & (t < m[1])]
        out["conn_mean"] = during.mean() if len(during) else np.nan
        out["conn_plateau"] = late.median() if len(late) else np.nan
    if cool and len(tot):
        held = tot[(t >= cool[0]) & (t <= cool[1])]
        out["conn_held"] = held.iloc[-1] if len(held) else np.nan
    pred = cell.predicted.connections
    out["predicted_connections"] = np.nan if pred is None else pred
    out["conn_gap"] = out.get("conn_plateau", np.nan) - out["predicted_connections"]
    out["predicted_bounded"] = cell.predicted.bounded
    out["predicted_connections_max"] = cell.predicted.connections_max
    if m and m[1] > m[0] and len(tot):
        out.update(growth(tot, t, m, cell))
    return out


def db_metrics(cell: CellData) -> dict[str, Any]:
    db = cell.csv(R.DB_CSV)
    out: dict[str, Any] = {
        "article_count_peak": db["article_count"].max() if db["article_count"].notna().any() else np.nan,
        "max_connections_observed": db["max_connections"].dropna().iloc[-1]
        if db["max_connections"].notna().any() else np.nan,
    }
    m = cell.phase("measure")
    s = db[["t", "sessions"]].dropna().sort_values("t")
    if m and len(s) >= 2 and m[1] > m[0]:
        at = np.interp([m[0], m[1]], s["t"].to_numpy(float), s["sessions"].to_numpy(float))
        out["churn_per_s"] = (at[1] - at[0]) / (m[1] - m[0])
    return out


def pgbouncer_metrics(cell: CellData) -> dict[str, Any]:
    if not cell.has(R.PGBOUNCER_CSV):
        return {}
    p = cell.csv(R.PGBOUNCER_CSV)
    if not len(p):
        return {}
    clients = p["cl_active"].fillna(0) + p["cl_waiting"].fillna(0)
    servers = p[["sv_active", "sv_idle", "sv_used", "sv_login"]].fillna(0).sum(axis=1)
    return {
        "pgb_clients_peak": clients.max(),
        "pgb_servers_peak": servers.max(),
        "pgb_waiting_peak": p["cl_waiting"].max(),
        "pgb_maxwait_s": p["maxwait_s"].max(),
    }


def cpu_metrics(cell: CellData) -> dict[str, Any]:
    m = cell.phase("measure")
    procs = cell.csv(R.PROCESSES_CSV)
    procs = procs[procs["component"] != "locust-worker"]  # each worker's own report: analysis/generators.py
    rates = cpu_rates(procs, m) if m else {}
    if not rates:
        return {}
    out: dict[str, Any] = {f"cpu_{slug(c)}": rates[c] for c in R.COMPONENTS if c in rates}
    out["cpu_total"] = sum(v for c, v in rates.items() if c not in BREAKDOWN)
    if "cpu_locust" in out:
        n = cell.locust_processes or max(1, procs.loc[procs["component"] == "locust", "pid"].nunique())
        out["locust_procs"] = n
        out["locust_cpu_per_proc"] = out["cpu_locust"] / n
        out["locust_cpu_warning"] = locust_cpu_warning(cell)
        out["generator_saturated"] = bool(out["locust_cpu_per_proc"] >= SATURATION_PCT or out["locust_cpu_warning"])
    return out


def locust_cpu_warning(cell: CellData) -> bool:
    """Did Locust itself warn, during the measure window, that its CPU was above its threshold? Its log lines
    start "[YYYY-mm-dd HH:MM:SS,mmm]" in local time (locust/log.py); a warning in the warm-up does not count."""
    log, m = (R.CellPaths(cell.root).locust_log if cell.root else None), cell.phase("measure")
    if log is None or m is None:
        return False
    try:
        with open(log, encoding="utf-8", errors="replace") as f:
            for line in f:
                if LOCUST_CPU_WARNING in line and (t := _log_time(line)) is not None and m[0] - 1 <= t <= m[1] + 1:
                    return True
    except OSError:
        pass
    return False


def _log_time(line: str) -> float | None:
    try:
        return datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    except ValueError:
        return None


def cell_row(cell: CellData) -> dict[str, Any]:
    row: dict[str, Any] = {
        "cell_id": cell.cell_id,
        "group": cell.group,
        "repeat": cell.repeat,
        "status": cell.status,
        "error": cell.error,
        "skip_reason": cell.skip_reason,
        "damage": cell.damage,
        # only a completed cell's lines count: a failed cell's requests.csv is partial by nature
        "dropped_lines": cell.requests.dropped if cell.completed else None,
    }
    row.update(flatten_params(cell.params))
    if cell.completed:  # partial files of a failed or damaged cell would give misleading numbers
        for part in (request_metrics, timing_metrics, connection_metrics, db_metrics, pgbouncer_metrics, cpu_metrics,
                     generator_metrics, server_setup_metrics, life_metrics, hazard_metrics, fork_metrics):
            row.update(part(cell))
        if row.get("generator_cpu_max", 0) >= SATURATION_PCT:  # one worker at a core: its share was capped
            row["generator_saturated"] = True
        # the app's connections opened per second: Server-Timing's count, else the server's sessions
        churn = row.get("new_conn_per_s", np.nan)
        row.update(cost_metrics(cell, row.get("churn_per_s", np.nan) if np.isnan(churn) else churn,
                                measured="connect_s_per_s" in row))
    return row


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    params: list[str] = []
    errors: set[str] = set()
    known = set(SUMMARY_COLUMNS)
    for row in rows:
        for key in row:
            if key.startswith("err_"):
                errors.add(key)
            elif key not in known and key not in params:
                params.append(key)
    return [*_ID_COLUMNS, *params, *_METRIC_COLUMNS, *sorted(errors)]


def summary_frame(run: RunData) -> pd.DataFrame:
    """summary.csv's rows, one per cell, without the per-setting columns (groups.with_intervals adds them)."""
    rows = [cell_row(c) for c in run.cells]
    df = pd.DataFrame(rows, columns=_columns(rows))
    err_cols = [c for c in df.columns if c.startswith("err_")]
    done = df["status"] == "completed"
    df.loc[done, err_cols] = df.loc[done, err_cols].fillna(0)  # a class not seen in a cell is 0, not unknown
    for col in (*err_cols, "requests", "failures", "dropped", "dropped_lines", "generators", "generators_lost"):
        df[col] = df[col].astype("Int64")
    cpus = run.manifest.host.get("cpus_usable", run.manifest.host.get("cpus"))  # affinity and cgroup quota
    if isinstance(cpus, int) and not isinstance(cpus, bool) and cpus > 0:
        df["machine_cpus"] = cpus
        df["machine_cpu_pct"] = pd.to_numeric(df["cpu_total"], errors="coerce") / cpus
        df["machine_saturated"] = (df["machine_cpu_pct"] >= SATURATION_PCT).where(df["machine_cpu_pct"].notna())
    for col in ("generator_saturated", "generator_lagged", "locust_cpu_warning", "machine_saturated", "conn_bounded",
                "predicted_bounded"):
        df[col] = df[col].astype("boolean")
    return df


def _write(df: pd.DataFrame, path: Path) -> None:
    R.write_text_atomic(path, df.to_csv(index=False))


def summary_paths(run: RunData) -> tuple[Path, ...]:
    return (run.paths.summary, run.paths.summary_groups, run.paths.summary_generators, run.paths.hazards,
            *life_paths(run))


def summaries(run: RunData) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary.csv's frame with each setting's intervals and rank, summary_groups.csv's frame)."""
    cells = summary_frame(run)
    groups = groups_frame(run, cells)
    return with_intervals(cells, groups), groups


def write_summaries(run: RunData, df: pd.DataFrame, groups: pd.DataFrame) -> None:
    """Write summary.csv, summary_groups.csv, hazards.csv and each cell's connections_life.csv atomically."""
    check_outputs(summary_paths(run))
    with writing(run.root):
        write_lives(run)
        _write(df, run.paths.summary)
        _write(groups, run.paths.summary_groups)
        _write(generator_frame(run), run.paths.summary_generators)
        write_hazards(run, hazards_frame(run))


def summarize(run_dir: Path | str, write: bool = True) -> pd.DataFrame:
    """Summarise every cell of a run; write summary.csv and summary_groups.csv unless write=False."""
    run = load_run(run_dir)
    df, groups = summaries(run)
    if write:
        write_summaries(run, df, groups)
    return df
