"""Each app connection's life story: why the app holds what it holds (connections_life.csv, and the summary's
life columns from requests_per_connection_p50 to pss_total_mib).

backends.csv (the sampler's) records every app backend it saw, keyed by (pid, backend_start): seen, gone or open,
and its memory (mem). requests.csv says, of each request that ran a query, the backend it ran on (backend_pid),
the gunicorn worker and native thread that ran it (worker_pid, thread), whether it opened a physical connection
(new_conn) and whether Django's rule had the connection due to close at request end (conn_close).

* A request belongs to the life of its backend_pid that held it: the latest backend_start at or before the
  request's response (t_start + service_ms; MATCH_SLACK_S for rounding) whose gone (first sample without it) is
  after the request's t_start; an open life has no end. Never by pid alone: the OS reuses pids within a cell.
  The response, not t_start: the request that opens a connection is sent before its backend starts.
* A backend that lived between two samples is not in backends.csv (most of CONN_MAX_AGE=0's are not). The
  requests that ran on one make *unsampled* connections: per backend_pid, one from each request that opened a
  connection (new_conn = 1) to the next; through PgBouncer (whose server connections a request never opens) one
  per backend_pid. They count in the summary's request, thread and opened figures; connections_life.csv has no
  row for them (no backend_start to key one by).
* cause, from the connection's first request, in this order: pool when through PgBouncer or that request did
  not open it (new_conn = 0: Django's pool opened it on its own threads); new_thread when no earlier request of
  the cell came from its (worker_pid, thread); else by that thread's previous request (on its previous
  connection): max_age when it had conn_close = 1 (Django's rule closed that one: CONN_MAX_AGE expired, or 0);
  health_check when it had conn_close = 0 (kept) and this request opened a new one (the kept one was found
  unusable and replaced) — unless that previous connection was still there REUSED_ID_S after this one opened:
  then it was not replaced, and the thread id is a new thread's that the OS reused (new_thread). unknown
  otherwise, and for a connection no request used.
* A life: opened = backend_start; closed = gone's t (blank while open at the end); lifetime_s to gone, or to the
  last sample (open); idle_s = lifetime_s less the service time of its requests (>= 0); idle_share =
  idle_samples / samples (gone or open row); pss_bytes_p50 / rss_bytes_p50 the median of its mem rows.

Summary, over the measure window [m0, m1) (a completed cell with backends.csv; otherwise every column blank):
requests_per_connection_p50/_p10: percentiles of the window's requests per connection, over the connections
they used (connections_used); threads_seen: distinct (worker_pid, thread) among them; threads_per_worker_max:
the most in one worker_pid; connections_per_thread = connections_used / threads_seen (blank without thread ids);
connection_lifetime_s_p50: the median lifetime_s of the cell's lives that closed; opened_per_s: connections
opened in the window (sampled: backend_start; unsampled: their first request's t_start) / (m1 - m0), and
opened_<cause>_per_s by cause; pss_backend_mib_p50/_p95, rss_backend_mib_p50: percentiles of the mem rows with
m0 <= t < m1 (one value per backend per sample), MiB; pss_total_mib: the median over those sample times of the
sum of that time's PSS (every live backend's): what the app's connections cost the server together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from connbench import results as R
from connbench.analysis.load import CellData, RunData
from connbench.analysis.windows import cached, measured_requests

MATCH_SLACK_S = 0.001  # backend_start and t_start come from one clock, each rounded: a millisecond's grace
REUSED_ID_S = 1.0  # a replaced connection is gone within a sample interval (<= 1 s) of its replacement
MIB = float(2**20)
LIFE_SUMMARY = R.SUMMARY_COLUMNS[R.SUMMARY_COLUMNS.index("requests_per_connection_p50"):
                                 R.SUMMARY_COLUMNS.index("pss_total_mib") + 1]
_NUMERIC = ("t", "pid", "backend_start", "samples", "idle_samples", "pss_bytes", "rss_bytes")
_KEY = ["pid", "start"]


class Story:
    """One cell's connections: lives (connections_life.csv's rows, by life id), the requests that ran a query
    with their connection (conn: a life id, or an unsampled connection's id from len(lives) on), every
    connection's opened time and cause, and backends.csv's mem rows."""

    def __init__(self, lives: pd.DataFrame, queried: pd.DataFrame, conns: pd.DataFrame, mem: pd.DataFrame):
        self.lives, self.queried, self.conns, self.mem = lives, queried, conns, mem


def backends(cell: CellData) -> pd.DataFrame | None:
    """backends.csv with numbers parsed and a life key (pid, start); None when the cell has none."""
    if not cell.has(R.BACKENDS_CSV):
        return None
    b = cell.csv(R.BACKENDS_CSV).copy()
    for col in R.BACKENDS_COLUMNS:
        if col not in b:
            b[col] = ""
    for col in _NUMERIC:
        b[col] = pd.to_numeric(b[col], errors="coerce")
    b["event"] = b["event"].astype(str).str.strip()
    b = b[b["t"].notna() & b["pid"].notna() & b["backend_start"].notna() & b["event"].isin(R.BACKEND_EVENTS)]
    b = b.assign(start=b["backend_start"].round(6))  # one life's rows: the same backend_start, as text or float
    return b.sort_values("t", kind="stable").reset_index(drop=True)


def _lives(b: pd.DataFrame) -> pd.DataFrame:
    """One row per (pid, start): connections_life.csv's columns from backends.csv alone, plus `until`."""
    first = b.groupby(_KEY, sort=True).first()
    seen = b[b["event"] == "seen"].groupby(_KEY).first().reindex(first.index)
    ends = b[b["event"].isin(("gone", "open"))].groupby(_KEY).first().reindex(first.index)
    mem = b[b["event"] == "mem"].groupby(_KEY)[["pss_bytes", "rss_bytes"]].median().reindex(first.index)
    last = b.groupby(_KEY)["t"].max()
    lives = first.index.to_frame(index=False)
    gone = (ends["event"] == "gone").to_numpy(bool)
    end_t = np.where(ends["event"].notna(), ends["t"].to_numpy(float), last.to_numpy(float))
    lives["backend_start"] = first["backend_start"].to_numpy(float)
    lives["opened"] = lives["backend_start"]
    lives["closed"] = np.where(gone, end_t, np.nan)
    lives["end"] = np.where(gone, "closed", "open")  # no gone or open row (the sampler cut short): open, to its last
    lives["lifetime_s"] = end_t - lives["backend_start"].to_numpy(float)
    lives["until"] = np.where(gone, end_t, np.inf)
    for col in ("dyno", "worker"):
        lives[col] = seen[col].fillna(first[col]).to_numpy()
    lives["samples"] = ends["samples"].to_numpy(float)
    lives["idle_samples"] = ends["idle_samples"].to_numpy(float)
    lives["pss_bytes_p50"] = mem["pss_bytes"].to_numpy(float)
    lives["rss_bytes_p50"] = mem["rss_bytes"].to_numpy(float)
    return lives


def _match(req: pd.DataFrame, lives: pd.DataFrame) -> pd.Series:
    """Each request's life id (NaN: no sampled life of its backend_pid held it)."""
    left = pd.DataFrame({"row": req.index, "pid": req["backend_pid"].astype(float),
                         "at": req["t_start"] + req["service_ms"].fillna(0.0) / 1000.0 + MATCH_SLACK_S,
                         "t_start": req["t_start"]}).sort_values("at", kind="stable")
    right = lives.assign(life=lives.index.astype(float))[["pid", "start", "until", "life"]]
    right = right.astype({"pid": float}).sort_values("start", kind="stable")
    m = pd.merge_asof(left, right, left_on="at", right_on="start", by="pid", direction="backward")
    held = m["life"].notna() & (m["t_start"] < m["until"])
    return pd.Series(np.where(held, m["life"], np.nan), index=m["row"].to_numpy()).reindex(req.index)


def _unsampled(req: pd.DataFrame, first_id: int, pgbouncer: bool) -> pd.Series:
    """Connection ids for requests on backends the sampler never saw (see the module docstring)."""
    if not len(req):
        return pd.Series(dtype=float)
    req = req.sort_values(["backend_pid", "t_start"], kind="stable")
    opens = pd.Series(0 if pgbouncer else (req["new_conn"] == 1).astype(int), index=req.index)
    seq = opens.groupby(req["backend_pid"]).cumsum()
    ids = pd.DataFrame({"pid": req["backend_pid"], "seq": seq}).groupby(["pid", "seq"], sort=True).ngroup()
    return (ids + first_id).astype(float)


def _causes(q: pd.DataFrame, conns: pd.DataFrame, pgbouncer: bool) -> pd.Series:
    """conn -> its cause, from each connection's first request and its thread's previous request."""
    q = q.sort_values("t_start", kind="stable")
    threaded = q["worker_pid"].notna() & q["thread"].notna()
    prev = q[threaded].groupby(["worker_pid", "thread"], sort=False)[["conn", "conn_close"]].shift(1)
    first = ~q["conn"].duplicated()
    f, p = q[first], prev.reindex(q.index)[first]
    conn, new = f["conn"].to_numpy(float), f["new_conn"].to_numpy(float)
    p_conn, p_close = p["conn"].to_numpy(float), p["conn_close"].to_numpy(float)
    # the previous connection still there REUSED_ID_S after this one opened: not replaced (NaN: end not known)
    outlived = conns["until"].reindex(p_conn).to_numpy(float) > conns["opened"].reindex(conn).to_numpy(float) \
        + REUSED_ID_S
    other = p_conn != conn
    cause = np.select([np.full(len(f), pgbouncer) | (new == 0), ~threaded[first].to_numpy(bool),
                       np.isnan(p_conn) | outlived, other & (p_close == 1), other & (p_close == 0) & (new == 1)],
                      ["pool", "unknown", "new_thread", "max_age", "health_check"], default="unknown")
    return pd.Series(cause, index=conn, dtype=object)


def story(cell: CellData) -> Story | None:
    """The cell's connections (cached: the summary and connections_life.csv read the same); None without
    backends.csv."""
    return cached(cell, "_story", _story)


def _story(cell: CellData) -> Story | None:
    b = backends(cell)
    if b is None:
        return None
    lives = _lives(b)
    req = cell.csv(R.REQUESTS_CSV)
    q = req[req["backend_pid"].notna()].copy()
    pgbouncer = str(cell.params.get("pooling", "")).startswith("pgbouncer")
    q["conn"] = _match(q, lives) if len(lives) else np.nan
    loose = q["conn"].isna()
    q.loc[loose, "conn"] = _unsampled(q[loose], len(lives), pgbouncer)
    q["svc_s"] = q["service_ms"].fillna(0.0) / 1000.0
    by = q.groupby("conn", sort=True)
    conns = pd.DataFrame({"requests": by.size(), "first_request": by["t_start"].min(),
                          "last_request": by["t_start"].max(), "busy_s": by["svc_s"].sum()})
    conns["opened"] = conns["first_request"]  # an unsampled connection's: its first request
    conns["until"] = np.nan  # an unsampled connection's end is not known
    sampled = lives.index.to_numpy(float)
    conns = conns.reindex(conns.index.union(pd.Index(sampled)))
    conns.loc[sampled, "opened"] = lives["opened"].to_numpy(float)
    conns.loc[sampled, "until"] = lives["until"].to_numpy(float)
    conns["requests"] = conns["requests"].fillna(0).astype(int)
    conns["cause"] = _causes(q, conns, pgbouncer).reindex(conns.index).fillna("unknown") if len(q) else "unknown"
    mem = b[b["event"] == "mem"]
    return Story(lives, q, conns, mem)


def _ids(values: pd.Series) -> str:
    """Distinct ids in order of first use, ";"-joined."""
    return ";".join(str(int(v)) for v in dict.fromkeys(values.dropna().tolist()))


def life_rows(s: Story) -> pd.DataFrame:
    """connections_life.csv's rows (CONNECTIONS_LIFE_COLUMNS), sampled lives only."""
    lives = s.lives.copy()
    c = s.conns.loc[lives.index.to_numpy(float)]
    by = s.queried.sort_values("t_start", kind="stable").groupby("conn")
    for col, source in (("worker_pids", "worker_pid"), ("threads", "thread")):
        lives[col] = by[source].agg(_ids).reindex(c.index).fillna("").to_numpy() if len(s.queried) else ""
    lives["requests"] = c["requests"].to_numpy(int)
    lives["first_request"] = c["first_request"].to_numpy(float)
    lives["last_request"] = c["last_request"].to_numpy(float)
    lives["idle_s"] = np.maximum(0.0, lives["lifetime_s"].to_numpy(float) - c["busy_s"].fillna(0.0).to_numpy(float))
    with np.errstate(divide="ignore", invalid="ignore"):
        samples = lives["samples"].to_numpy(float)
        lives["idle_share"] = np.where(samples > 0, lives["idle_samples"].to_numpy(float) / samples, np.nan)
    lives["cause"] = c["cause"].to_numpy()
    lives["pid"] = lives["pid"].astype(int)
    return lives.sort_values(["backend_start", "pid"], kind="stable")[list(R.CONNECTIONS_LIFE_COLUMNS)]


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q, method="linear")) if values.size else np.nan


def life_metrics(cell: CellData) -> dict[str, Any]:
    """The summary's life columns for a completed cell (module docstring); {} (blank) without backends.csv."""
    s, m = story(cell), cell.phase("measure")
    if s is None or not m or m[1] <= m[0]:
        return {}
    span = m[1] - m[0]
    out: dict[str, Any] = {}
    win = measured_requests(cell)
    win = s.queried.loc[s.queried.index.intersection(win.index)]
    if len(win):
        per = win.groupby("conn").size().to_numpy(float)
        out["requests_per_connection_p50"], out["requests_per_connection_p10"] = _pct(per, 50), _pct(per, 10)
        out["connections_used"] = int(per.size)
        th = win[win["worker_pid"].notna() & win["thread"].notna()]
        if len(th):
            out["threads_seen"] = int(th.groupby(["worker_pid", "thread"]).ngroups)
            out["threads_per_worker_max"] = int(th.groupby("worker_pid")["thread"].nunique().max())
            out["connections_per_thread"] = per.size / out["threads_seen"]
    closed = s.lives.loc[s.lives["end"] == "closed", "lifetime_s"].to_numpy(float)
    out["connection_lifetime_s_p50"] = _pct(closed, 50)
    c = s.conns
    opened = c[(c["opened"] >= m[0]) & (c["opened"] < m[1])]
    out["opened_per_s"] = len(opened) / span
    for cause in R.OPEN_CAUSES:
        out[f"opened_{cause}_per_s"] = int((opened["cause"] == cause).sum()) / span  # a cause not seen: 0, measured
    mem = s.mem[(s.mem["t"] >= m[0]) & (s.mem["t"] < m[1])]
    pss, rss = mem["pss_bytes"].dropna().to_numpy(float) / MIB, mem["rss_bytes"].dropna().to_numpy(float) / MIB
    out["pss_backend_mib_p50"], out["pss_backend_mib_p95"] = _pct(pss, 50), _pct(pss, 95)
    out["rss_backend_mib_p50"] = _pct(rss, 50)
    totals = mem.groupby("t")["pss_bytes"].sum(min_count=1).dropna().to_numpy(float) / MIB
    out["pss_total_mib"] = _pct(totals, 50)
    return out


def life_paths(run: RunData) -> list[Path]:
    """Every connections_life.csv analysis may write or remove (one per cell directory)."""
    return [R.CellPaths(c.root).connections_life for c in run.cells if c.root is not None]


def _text(v: Any) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, float | np.floating):
        return repr(float(v))
    if isinstance(v, np.integer):
        return str(int(v))
    return str(v)


def write_lives(run: RunData) -> None:
    """connections_life.csv of every completed cell with backends.csv, atomically; a stale one (the cell now has
    none: failed, damaged, or its backends.csv gone) is removed, so the file always says what the raw files do."""
    for cell in run.cells:
        if cell.root is None:
            continue
        path = R.CellPaths(cell.root).connections_life
        s = story(cell) if cell.completed else None
        if s is None:
            if path.is_file():
                path.unlink()
            continue
        rows = life_rows(s)
        R.write_csv_atomic(path, R.CONNECTIONS_LIFE_COLUMNS,
                           ([_text(v) for v in r] for r in rows.itertuples(index=False, name=None)))
