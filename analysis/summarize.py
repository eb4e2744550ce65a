"""One row per cell (summary.csv) and one row per repeat group (summary_groups.csv).

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
* Damaged cells (see analysis/load.py): status "damaged", the reason in `damage`, no figures at all.
  dropped_lines (completed cells): requests.csv lines dropped, a torn last line or malformed rows; they are
  never counted as requests (a torn line is not a failed request).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.load import CellData, RunData, load_run
from analysis.outputs import check_outputs, writing
from connbench import results as R
from connbench.contract import DROPPED

PERCENTILES = {"lat_p50": 50, "lat_p90": 90, "lat_p95": 95, "lat_p99": 99, "lat_p999": 99.9}
SERVICE_PERCENTILES = {"svc_p50": 50, "svc_p95": 95, "svc_p99": 99}
SATURATION_PCT = 90.0
LAG_LIMIT_MS = 10.0  # schedule lag p99 above this: the generator, not the app, limited the test
GROUP_METRICS = ("rps", "lat_p95", "conn_peak")
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


def _window(df: pd.DataFrame, col: str, w: tuple[float, float]) -> pd.DataFrame:
    return df[(df[col] >= w[0]) & (df[col] < w[1])]


def is_dropped(req: pd.DataFrame) -> pd.Series:
    """Rows of requests the open model never sent (max_in_flight reached)."""
    return req["error_class"].astype(str).str.strip() == DROPPED


def window_rows(cell: CellData) -> pd.DataFrame:
    """requests.csv rows the schedule placed in the measure window (m0 <= t_intended < m1), dropped ones included.

    By t_intended, not t_start: a request scheduled in the window belongs to it even if sent late (the lag is
    the generator's, and counting it elsewhere would hide it); in a closed loop t_intended = t_start."""
    m = cell.phase("measure")
    req = cell.csv(R.REQUESTS_CSV)
    return _window(req, "t_intended", m) if m else req.iloc[0:0]


def measured_requests(cell: CellData) -> pd.DataFrame:
    """Requests sent inside the measure window (dropped ones left out), with a `failed` flag and an `err` class."""
    req = window_rows(cell)
    req = req[~is_dropped(req) & req["latency_ms"].notna()].copy()
    cls = req["error_class"].astype(str).str.strip()
    status = req["status"]
    bad_status = status.isna() | (status <= 0) | (status >= 400)
    fallback = np.where(status.fillna(0) > 0, "http_" + status.fillna(0).astype(int).astype(str), "no_response")
    req["failed"] = (cls != "") | bad_status
    req["err"] = np.where(cls != "", cls, np.where(bad_status, fallback, ""))
    return req


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q, method="linear")) if values.size else np.nan


def offered_rps(cell: CellData) -> float:
    """The open model's arrival_rate (requests/s offered in total); NaN for a closed loop."""
    rate = cell.params.get("arrival_rate")
    return float(rate) if isinstance(rate, int | float) and not isinstance(rate, bool) else np.nan


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
    lag = (req["t_start"].to_numpy(dtype=float) - req["t_intended"].to_numpy(dtype=float)) * 1000.0
    out["lag_p99_ms"] = _percentile(lag, 99)
    out["generator_lagged"] = bool(out["lag_p99_ms"] > LAG_LIMIT_MS) if lag.size else None
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


def connection_totals(cell: CellData) -> pd.Series:
    """Server connections per sample time (postgres rows summed), on db.csv's clock when it matches."""
    if not cell.has(R.CONNECTIONS_CSV):
        return pd.Series(dtype=float)
    c = cell.csv(R.CONNECTIONS_CSV)
    c = c[(c["source"] == "postgres") & c["count"].notna()]
    tot = c.groupby("t")["count"].sum().astype(float)
    clock = set(cell.csv(R.DB_CSV)["t"].dropna())
    if clock and set(tot.index) <= clock:
        tot = tot.reindex(sorted(clock), fill_value=0.0)
    return tot.sort_index()


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


def cpu_rates(procs: pd.DataFrame, window: tuple[float, float]) -> dict[str, float]:
    """component -> percent of one core over `window`, from cumulative cpu_seconds (module docstring)."""
    procs = procs[procs["cpu_seconds"].notna()]
    out: dict[str, float] = {}
    for component, rows in procs.groupby("component", sort=False):
        used, begin, end = 0.0, np.inf, -np.inf
        for _, series in rows.groupby(["dyno", "pid"], sort=False):  # one counter per process root
            series = series.sort_values("t")
            t, c = series["t"].to_numpy(float), series["cpu_seconds"].to_numpy(float)
            c = c[0] + np.concatenate([[0.0], np.cumsum(np.clip(np.diff(c), 0.0, None))])
            a, b = max(window[0], t[0]), min(window[1], t[-1])
            if b > a:
                at = np.interp([a, b], t, c)
                used, begin, end = used + at[1] - at[0], min(begin, a), max(end, b)
        if end > begin:
            out[str(component)] = 100.0 * used / (end - begin)
    return out


def cpu_metrics(cell: CellData) -> dict[str, Any]:
    m = cell.phase("measure")
    procs = cell.csv(R.PROCESSES_CSV)
    rates = cpu_rates(procs, m) if m else {}
    if not rates:
        return {}
    out: dict[str, Any] = {f"cpu_{slug(c)}": rates[c] for c in R.COMPONENTS if c in rates}
    out["cpu_total"] = sum(v for c, v in rates.items() if c not in BREAKDOWN)
    if "cpu_locust" in out:
        n = cell.locust_processes or max(1, procs.loc[procs["component"] == "locust", "pid"].nunique())
        out["locust_procs"] = n
        out["locust_cpu_per_proc"] = out["cpu_locust"] / n
        out["generator_saturated"] = bool(out["locust_cpu_per_proc"] >= SATURATION_PCT)
    return out


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
        for part in (request_metrics, connection_metrics, db_metrics, pgbouncer_metrics, cpu_metrics):
            row.update(part(cell))
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
    rows = [cell_row(c) for c in run.cells]
    df = pd.DataFrame(rows, columns=_columns(rows))
    err_cols = [c for c in df.columns if c.startswith("err_")]
    done = df["status"] == "completed"
    df.loc[done, err_cols] = df.loc[done, err_cols].fillna(0)  # a class not seen in a cell is 0, not unknown
    for col in (*err_cols, "requests", "failures", "dropped", "dropped_lines"):
        df[col] = df[col].astype("Int64")
    for col in ("generator_saturated", "generator_lagged"):
        df[col] = df[col].astype("boolean")
    return df


def summarize_groups(summary: pd.DataFrame) -> pd.DataFrame:
    """Repeats of one group: median, min and max of rps, lat_p95 and conn_peak over completed repeats."""
    rows = []
    param_cols = [c for c in summary.columns if c not in SUMMARY_COLUMNS and not c.startswith("err_")]
    for group, g in summary.groupby("group", sort=False):
        done = g[g["status"] == "completed"]
        row: dict[str, Any] = {"group": group, "cells": len(g), "completed": len(done)}
        row.update({c: g[c].iloc[0] for c in param_cols})
        for metric in GROUP_METRICS:
            vals = pd.to_numeric(done[metric], errors="coerce").dropna()
            row[f"{metric}_median"] = vals.median() if len(vals) else np.nan
            row[f"{metric}_min"] = vals.min() if len(vals) else np.nan
            row[f"{metric}_max"] = vals.max() if len(vals) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _write(df: pd.DataFrame, path: Path) -> None:
    R.write_text_atomic(path, df.to_csv(index=False))


def summary_paths(run: RunData) -> tuple[Path, Path]:
    return run.paths.summary, run.paths.summary_groups


def write_summaries(run: RunData, df: pd.DataFrame) -> pd.DataFrame:
    """Write summary.csv and summary_groups.csv atomically; returns the groups table."""
    groups = summarize_groups(df)
    check_outputs(summary_paths(run))
    with writing(run.root):
        _write(df, run.paths.summary)
        _write(groups, run.paths.summary_groups)
    return groups


def summarize(run_dir: Path | str, write: bool = True) -> pd.DataFrame:
    """Summarise every cell of a run; write summary.csv and summary_groups.csv unless write=False."""
    run = load_run(run_dir)
    df = summary_frame(run)
    if write:
        write_summaries(run, df)
    return df
