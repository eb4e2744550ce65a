"""Does a cell's server connection count settle, or keep growing with requests (connections left behind)?

Over the measure window [m0, m1] of the per-sample server totals (summarize.py's connection rules):
  - conn_rise: the largest total in the last quarter of the window minus the largest in its first quarter
    (maxima, so a garbage collector's saw-tooth does not hide a rise); conn_rise_per_s = conn_rise /
    (0.75 x the window): connections left behind per second, net.
  - inflight_max: the most measured requests in progress at once (t_start to t_start + service_ms): the
    most connections the load itself could be using.
  - conn_bounded: false when connections are left behind -- the count kept growing (conn_rise >= max(3,
    25 % of the first quarter's maximum)), or its maximum in the measure window exceeded what the load and
    the parameters explain, bound = max(inflight_max, predicted connections_max), by max(3, half of it)
    (a garbage collector closing abandoned connections makes a saw-tooth that does not rise), or it filled
    the server (conn_peak >= the app's slots) -- each only above the predicted bound; else true.
    predicted_bounded, predicted_connections_max: cell.json predicted.bounded and .connections_max.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from connbench.analysis.load import CellData
from connbench.analysis.windows import measured_requests


def growth(tot: pd.Series, t: np.ndarray, m: tuple[float, float], cell: CellData) -> dict[str, Any]:
    """Does the count settle, or keep growing with requests (a leak)? See conn_rise and conn_bounded above."""
    q = (m[1] - m[0]) / 4
    early, late = tot[(t >= m[0]) & (t < m[0] + q)], tot[(t >= m[1] - q) & (t < m[1])]
    if not len(early) or not len(late):
        return {}
    rise = float(late.max() - early.max())
    pred = cell.predicted.connections_max
    inflight = inflight_max(measured_requests(cell))
    bound = max(inflight, pred or 0)

    def above(n: float) -> bool:  # a count only says "leak" above what the parameters predict
        return pred is None or n > pred

    growing = rise >= max(3.0, 0.25 * early.max()) and above(late.max())
    during = float(tot[(t >= m[0]) & (t < m[1])].max())
    left_open = during > bound + max(3.0, bound / 2) and above(during)
    pg = (cell.doc.services.postgres or {}) if cell.doc else {}
    slots, peak = pg.get("app_slots"), float(tot.max())
    full = isinstance(slots, int) and peak >= slots and above(peak)
    return {"conn_rise": rise, "conn_rise_per_s": rise / (3 * q), "inflight_max": inflight,
            "conn_bounded": not (growing or left_open or full)}


def inflight_max(req: pd.DataFrame) -> int:
    """The most requests in progress at once (a sweep over starts and ends)."""
    if not len(req):
        return 0
    start = req["t_start"].to_numpy(dtype=float)
    end = start + np.nan_to_num(req["service_ms"].to_numpy(dtype=float)) / 1000.0
    times = np.concatenate([start, end])
    steps = np.concatenate([np.ones(len(start)), -np.ones(len(end))])
    order = np.lexsort((steps, times))  # at equal times an end comes before a start
    return int(np.cumsum(steps[order]).max())
