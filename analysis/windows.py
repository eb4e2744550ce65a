"""Which recorded rows count: the measure window's requests and the server-connection totals.

The definitions are analysis/summarize.py's docstring; every figure (per cell, per second, per chart) takes its
rows from here so they agree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, cast

import numpy as np
import pandas as pd

from connbench import results as R
from connbench.analysis.load import CellData
from connbench.contract import DROPPED

SATURATION_PCT = 90.0  # CPU of a Locust process (one core), or of the machine's cores: it set the pace
LAG_LIMIT_MS = 10.0  # schedule lag p99 above this: the generator, not the app, limited the test
_T = TypeVar("_T")


def cached(cell: CellData, key: str, compute: Callable[[CellData], _T]) -> _T:
    """compute(cell), once per cell, in CellData's cache with its files: every figure reads it, none changes it."""
    cache = cell.__dict__.setdefault("_csv", {})
    if key not in cache:
        cache[key] = compute(cell)
    return cast(_T, cache[key])


def lag_p99_ms(req: pd.DataFrame) -> float:
    """p99 of (t_start - t_intended) in ms over these requests: how late the generator sent them; NaN for none."""
    lag = (req["t_start"].to_numpy(dtype=float) - req["t_intended"].to_numpy(dtype=float)) * 1000.0
    return float(np.percentile(lag, 99, method="linear")) if lag.size else np.nan


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
    return cached(cell, "_measured", _measured)


def _measured(cell: CellData) -> pd.DataFrame:
    req = window_rows(cell)
    req = req[~is_dropped(req) & req["latency_ms"].notna()].copy()
    cls = req["error_class"].astype(str).str.strip()
    status = req["status"]
    bad_status = status.isna() | (status <= 0) | (status >= 400)
    fallback = np.where(status.fillna(0) > 0, "http_" + status.fillna(0).astype(int).astype(str), "no_response")
    req["failed"] = (cls != "") | bad_status
    req["err"] = np.where(cls != "", cls, np.where(bad_status, fallback, ""))
    return req


def offered_rps(cell: CellData) -> float:
    """The open model's arrival_rate (requests/s offered in total); NaN for a closed loop."""
    rate = cell.params.get("arrival_rate")
    return float(rate) if isinstance(rate, int | float) and not isinstance(rate, bool) else np.nan


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
