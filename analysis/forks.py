"""Workers that shared database connections after the fork (gunicorn --preload with a connection or Django's
pool opened in the master): two gunicorn workers whose requests used the same backend at overlapping times.

From requests.csv alone: the app's Server-Timing names each request's backend (psycopg's backend_pid, read
client-side) and worker pid. A backend pid seen in two workers one after the other may be the OS reusing a pid;
at overlapping times it is one socket in two processes. Through PgBouncer the backend pid is PgBouncer's server
connection, which clients share by design: those cells are not judged (blank).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from connbench.analysis.load import CellData

PGBOUNCER = ("pgbouncer-transaction", "pgbouncer-session")
NOT_JUDGED: dict[str, Any] = {"shared_backends": None, "shared_backend_requests": None}


def _spans(cell: CellData) -> pd.DataFrame:
    """(backend_pid, worker_pid, first, last, requests) over the cell's answered requests with both ids."""
    df = cell.requests.df
    if not {"backend_pid", "worker_pid"} <= set(df.columns):
        return pd.DataFrame(columns=["backend_pid", "worker_pid", "first", "last", "requests"])
    r = df.dropna(subset=["backend_pid", "worker_pid", "t_start", "latency_ms"])
    r = r.assign(t_end=r["t_intended"] + r["latency_ms"] / 1000.0)
    return (r.groupby(["backend_pid", "worker_pid"])
            .agg(first=("t_start", "min"), last=("t_end", "max"), requests=("t_start", "size")).reset_index())


def shared(cell: CellData) -> pd.DataFrame:
    """Per backend used by two or more workers at overlapping times: the workers and the requests on it."""
    rows = []
    for pid, g in _spans(cell).groupby("backend_pid"):
        if len(g) < 2:
            continue
        g = g.sort_values("first")
        # overlapping: a worker starts using it before another one's last use of it ended
        overlap = (g["first"].to_numpy()[1:] < g["last"].cummax().to_numpy()[:-1]).any()
        if overlap:
            rows.append({"backend_pid": int(pid), "workers": sorted(int(w) for w in g["worker_pid"]),
                         "requests": int(g["requests"].sum())})
    return pd.DataFrame(rows, columns=["backend_pid", "workers", "requests"])


def fork_metrics(cell: CellData) -> dict[str, Any]:
    """summary.csv's shared_backends (backends two workers used at once) and the requests they served."""
    if cell.version < 5 or cell.params.get("pooling") in PGBOUNCER or "backend_pid" not in cell.requests.df:
        return dict(NOT_JUDGED)
    s = shared(cell)
    return {"shared_backends": len(s), "shared_backend_requests": int(s["requests"].sum()) if len(s) else 0}


def fork_warning(cell: CellData) -> str | None:
    """The report's warning, with the evidence and the fix."""
    if cell.version < 5 or cell.params.get("pooling") in PGBOUNCER:
        return None
    s = shared(cell)
    if not len(s):
        return None
    top = s.sort_values("requests", ascending=False).iloc[0]
    how = ("gunicorn --preload" if cell.params.get("preload") else "a connection opened before the fork")
    return (f"workers shared database connections after fork: {len(s)} backend(s) used by two or more workers at "
            f"once ({int(s['requests'].sum()):,} requests), e.g. backend {top['backend_pid']} by workers "
            f"{', '.join(map(str, top['workers']))} ({top['requests']:,} requests). One socket in several processes "
            f"interleaves their messages: protocol errors and wrong results under load. Cause: {how} with the "
            "database touched at import, so the master's connection (or Django's pool) was inherited. Fix: close "
            "them in gunicorn's pre_fork (close_pools_before_fork = true shows it), or no query at import")
