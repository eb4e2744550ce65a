"""Each Locust process's share of a cell (requests.csv's generator column): what it sent, how late against
the schedule, and its own CPU (a worker reports it with its rows: processes.csv's locust-worker rows), so a
saturated worker is named instead of hidden in an average. Rows for summary_generators.csv, and the summary's
busiest and laggiest worker."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from connbench import results as R
from connbench.analysis.load import CellData, RunData
from connbench.analysis.windows import LAG_LIMIT_MS, SATURATION_PCT, cached, cpu_rates, lag_p99_ms, measured_requests
from connbench.contract import GENERATOR_LOST


def generator_rows(cell: CellData) -> list[dict[str, Any]]:
    """One row per Locust process of the cell (summary_generators.csv's), once per cell."""
    return cached(cell, "_generators", _generator_rows)


def _generator_rows(cell: CellData) -> list[dict[str, Any]]:
    m = cell.phase("measure")
    if not cell.completed or not m or m[1] <= m[0]:
        return []
    req = measured_requests(cell)
    procs = cell.csv(R.PROCESSES_CSV)
    workers = procs[procs["component"] == "locust-worker"]
    names = sorted(set(req["generator"].dropna().astype(str)) | set(workers["generator"].dropna().astype(str)))
    out = []
    for name in (n for n in names if n):
        mine = req[req["generator"].astype(str) == name]
        lag_p99 = lag_p99_ms(mine)
        # one counter per worker process: a remote machine's pid may repeat one here, so keyed by the name too
        own = workers[workers["generator"].astype(str) == name].assign(component="w", dyno=name)
        cpu = cpu_rates(own, m).get("w", math.nan) if len(own) else math.nan
        out.append({"cell_id": cell.cell_id, "generator": name, "requests": len(mine),
                    "rps": len(mine) / (m[1] - m[0]), "lag_p99_ms": lag_p99, "cpu_pct": cpu,
                    "saturated": None if math.isnan(cpu) else cpu >= SATURATION_PCT,
                    "lagged": None if math.isnan(lag_p99) else lag_p99 > LAG_LIMIT_MS})
    return out


def generator_metrics(cell: CellData) -> dict[str, Any]:
    rows = generator_rows(cell)
    out: dict[str, Any] = {"generators": len(rows)} if rows else {}
    busy = [r for r in rows if not math.isnan(r["cpu_pct"])]
    if busy:
        top = max(busy, key=lambda r: r["cpu_pct"])
        out["generator_busiest"], out["generator_cpu_max"] = top["generator"], top["cpu_pct"]
    late = [r for r in rows if not math.isnan(r["lag_p99_ms"])]
    if len(late) > 1:  # with one generator, the cell's own lag_p99_ms says it
        top = max(late, key=lambda r: r["lag_p99_ms"])
        out["generator_laggiest"], out["generator_lag_p99_max"] = top["generator"], top["lag_p99_ms"]
    if rows:
        ev = cell.csv(R.EVENTS_CSV)
        lost = ev.loc[ev["kind"].astype(str) == GENERATOR_LOST, "detail"].astype(str).tolist()
        out["generators_lost"] = len(lost)
        out["generators_lost_names"] = "; ".join(lost) if lost else None
    return out


def generator_frame(run: RunData) -> pd.DataFrame:
    df = pd.DataFrame([r for c in run.cells for r in generator_rows(c)], columns=R.GENERATOR_SUMMARY_COLUMNS)
    df["requests"] = df["requests"].astype("Int64")
    for col in ("saturated", "lagged"):
        df[col] = df[col].astype("boolean")
    return df
