"""What a new connection cost, beside the requests' own figure (summarize.timing_metrics): the calibration,
timed apart from the load, and PostgreSQL 18's log of each connection's setup. Definitions: summarize's
docstring."""

from __future__ import annotations

from typing import Any

import numpy as np

from connbench import results as R
from connbench.analysis.load import CellData


def server_setup_metrics(cell: CellData) -> dict[str, Any]:
    """PostgreSQL 18's own timing of the connections set up in the measure window (server_setup.csv)."""
    if not cell.has(R.SERVER_SETUP_CSV):
        return {}
    rows, m = cell.csv(R.SERVER_SETUP_CSV), cell.phase("measure")
    if not m:
        return {}
    total = rows[(rows.t >= m[0]) & (rows.t < m[1])]["total_ms"].to_numpy(float)
    return {"server_setup_n": int(total.size), "server_setup_p50": float(np.median(total)) if total.size else np.nan}


def cost_metrics(cell: CellData, churn: float, measured: bool) -> dict[str, Any]:
    """The calibrated cost of a new connection on the app's path (cell.json connect_cost): a second figure,
    independent of the requests. Without Server-Timing (`measured` False) it is also what the time spent
    connecting each second is estimated from: new connections per second x that cost."""
    costs = cell.doc.connect_cost if cell.doc else {}
    cost = costs.get("pgbouncer") or costs.get("direct")
    if cost is None:
        return {}
    out: dict[str, Any] = {"connect_cost_ms": cost.p50_ms}
    if not measured:
        out["connect_s_per_s"] = churn * cost.p50_ms / 1000.0 if not np.isnan(churn) else np.nan
    return out
