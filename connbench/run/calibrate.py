"""What one new connection costs here: open it, run SELECT 1, close it; sequentially, n times.

Run before a cell's load (its verify phase), for each path its app uses: straight to PostgreSQL, and
through PgBouncer when it is in the path. With the cell's own auth and TLS, so the figure is what the
app pays per new connection (the client's PBKDF2 for SCRAM, the TLS handshake), the report multiplies
it by the cell's connections opened per second.
"""

from __future__ import annotations

import statistics
import time

import psycopg

from connbench import results as R


def calibrate(conninfo: dict, n: int) -> R.ConnectCost:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        with psycopg.connect(**conninfo, connect_timeout=10, autocommit=True) as conn:
            conn.execute("SELECT 1").fetchone()
        times.append((time.perf_counter() - t0) * 1000.0)
    times.sort()
    return R.ConnectCost(n=n, mean_ms=statistics.fmean(times), p50_ms=statistics.median(times),
                         p95_ms=times[min(n - 1, int(round(0.95 * (n - 1))))], min_ms=times[0])
