"""Where the time went: the app's Server-Timing parts of the median and the p95 request, per setting.

"The median request" is the mean breakdown of the requests whose service time lies within BAND percentile
points of the median (45th to 55th); "the p95 request" likewise around the 95th (92.5th to 97.5th): one
request alone would be noise. Parts: connect, pool wait, db, app, and outside the app (service time minus
the rest: network, gunicorn, the client). Requests of every completed repeat of a setting are pooled.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd

from connbench.analysis.charts.common import Chart, plt, save
from connbench.analysis.load import RunData
from connbench.analysis.windows import measured_requests

# Paul Tol's colours: none of them is a pooling mode's (charts.POOLING_COLORS), so no colour means two things
PARTS = (("connect", "#882255", "connect (new connection)"), ("pool", "#332288", "pool wait"),
         ("db", "#117733", "queries (db)"), ("app", "#BBBBBB", "app"), ("outside", "#DDCC77", "outside the app"))
BAND = 5.0


def breakdown(req: pd.DataFrame, q: float) -> dict[str, float] | None:
    """Mean of each part over the requests whose service time is within BAND/2 points of percentile q."""
    req = req[req["new_conn"].notna() & req["service_ms"].notna()]
    if len(req) < 2:
        return None
    svc = req["service_ms"].to_numpy(float)
    lo, hi = np.percentile(svc, [max(0.0, q - BAND / 2), min(100.0, q + BAND / 2)])
    band = req[(svc >= lo) & (svc <= hi)]
    out = {p: float(band[f"{p}_ms"].mean()) for p, _, _ in PARTS if p != "outside"}
    out["outside"] = float((band["service_ms"] - band[["connect_ms", "pool_ms", "db_ms", "app_ms"]].sum(axis=1))
                           .clip(lower=0).mean())
    out["service"] = float(band["service_ms"].mean())
    return out


def timing_rows(run: RunData, labels: dict[str, str]) -> list[tuple[str, str, dict[str, float]]]:
    """(setting label, "p50" | "p95", parts) for each setting with Server-Timing, in run order."""
    by_group: dict[str, list[pd.DataFrame]] = {}
    for cell in run.cells:
        if cell.completed:
            by_group.setdefault(cell.group, []).append(measured_requests(cell))
    rows = []
    for group, frames in by_group.items():
        req = pd.concat(frames, ignore_index=True)
        for name, q in (("p50", 50.0), ("p95", 95.0)):
            parts = breakdown(req, q)
            if parts is not None:
                rows.append((labels.get(group, group), name, parts))
    return rows


def draw_timing(run: RunData, labels: dict[str, str]) -> list[Chart]:
    rows = timing_rows(run, labels)
    if not rows:
        return []
    fig, ax = plt.subplots(figsize=(11, 1.6 + 0.5 * len(rows)))
    y = np.arange(len(rows))[::-1]
    left = np.zeros(len(rows))
    for part, color, label in PARTS:
        widths = np.array([r[2][part] for r in rows])
        ax.barh(y, widths, left=left, color=color, label=label, edgecolor="white", linewidth=0.5)
        left += widths
    ticks = [f"{textwrap.shorten(setting, 60)}\n{name} request" if name == "p50" else f"{name} request"
             for setting, name, _ in rows]
    ax.set_yticks(y, ticks, fontsize=8)
    ax.set_xlabel("time per request (ms), mean around that percentile of service time")
    title = "Where the time went (Server-Timing): the median and the p95 request"
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0)
    ax.grid(axis="y", visible=False)
    return [save(fig, run.paths.charts, "timing_breakdown", title, None, "timing")]
