"""Charts of one cell over time: server connections, response time percentiles, PgBouncer's clients.

Hand-built SVG (charts.svg), one file each: matplotlib took 0.3 s a chart and a run draws three per cell.
The report embeds the SVG itself, so the Chart's png and svg are the same file.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from connbench import results as R
from connbench.analysis.charts.common import PHASE_COLORS, STATE_COLORS, Chart
from connbench.analysis.charts.svg import DASHED, DOTTED, Plot
from connbench.analysis.load import CellData
from connbench.analysis.windows import connection_totals, is_dropped, offered_rps

FAULT_COLOR = "#7b1fa2"
TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
         "#17becf")  # matplotlib's default cycle, for states STATE_COLORS does not name (as before)


def _plot(cell: CellData, title: str, ylabel: str, xlabel: str = "time since cell start (s)") -> Plot:
    """A per-cell plot titled with the cell id, its phases shaded (first, so everything is drawn over them)."""
    plot = Plot(f"{title}: {cell.cell_id}", xlabel, ylabel)
    t0 = cell.t0 or 0.0
    for name, (color, label) in PHASE_COLORS.items():
        if w := cell.phase(name):
            plot.band(w[0] - t0, w[1] - t0, color, label)
    return plot


def _save(plot: Plot, cell: CellData, out: Path, kind: str) -> Chart:
    """Faults last (on top), then one SVG file, written atomically: a report never links half a chart."""
    t0 = cell.t0 or 0.0
    ev = cell.csv(R.EVENTS_CSV).pipe(lambda e: e[e["kind"].astype(str).str.startswith("fault")])
    for i, (t, kind_) in enumerate(zip(ev["t"].to_numpy(float), ev["kind"].astype(str), strict=True)):
        plot.vline(t - t0, FAULT_COLOR, label="fault" if i == 0 else None, text=kind_)
    path = out / f"{kind}_{re.sub(r'[^A-Za-z0-9._-]+', '_', cell.cell_id)}.svg"  # a safe file name
    R.write_text_atomic(path, plot.render())
    return Chart(plot.title, path, path, cell.cell_id, kind)


def connections_chart(cell: CellData, out: Path) -> Chart | None:
    tot, t0 = connection_totals(cell), cell.t0
    if len(tot) < 2 or t0 is None:  # one sample is not a curve
        return None
    c = cell.csv(R.CONNECTIONS_CSV).pipe(lambda c: c[(c["source"] == "postgres") & c["count"].notna()])
    states = c.pivot_table(index="t", columns="state", values="count", aggfunc="sum")
    states = states.reindex(tot.index).fillna(0)
    states = states.loc[:, states.sum() > 0]  # the sampler's "none" rows (count 0) mark empty samples
    plot = _plot(cell, "Server connections over time", "connections on PostgreSQL")
    x = tot.index.to_numpy(float) - t0
    plot.stack(x, [(states[s].to_numpy(float), STATE_COLORS.get(s) or TAB10[(i + 3) % 10],
                    f"state: {s or '(no state)'}") for i, s in enumerate(states.columns)])
    plot.line(x, tot.to_numpy(float), "black", "server connections (total)", width=2, step=True)
    top = float(tot.max())
    maxc = cell.csv(R.DB_CSV)["max_connections"].dropna()
    if len(maxc):
        limit = float(maxc.iloc[-1])
        if limit <= max(3 * top, 10):  # a far-away limit would flatten the curve; say it in words instead
            plot.hline(limit, "#d62728", f"max_connections = {limit:g}", width=2, dash=DOTTED)
            top = max(top, limit)
        else:
            plot.note(f"max_connections = {limit:g} (off scale)", "#d62728")
    plot.ylim = (0, top * 1.15 + 1)
    return _save(plot, cell, out, "connections")


def latency_bins(cell: CellData) -> pd.DataFrame:
    """Per 1 s of schedule time (t_intended, seconds since t0): response time p50/p95/p99 (latency_ms, from
    when each request should have been sent) and, for an open-model cell, service time p50 (service_ms, from
    when it was sent) as svc_p50. Dropped requests were never sent: not in any bin."""
    req, t0 = cell.csv(R.REQUESTS_CSV), cell.t0
    req = req[~is_dropped(req) & req["latency_ms"].notna()]
    if not len(req) or t0 is None:
        return pd.DataFrame()
    bins = np.floor(req["t_intended"].to_numpy(float) - t0)
    frame = pd.DataFrame({"bin": bins, "lat": req["latency_ms"].to_numpy(float),
                          "svc": req["service_ms"].to_numpy(float)}).groupby("bin")
    out = pd.DataFrame({f"p{q}": frame["lat"].quantile(q / 100) for q in (50, 95, 99)})
    if not np.isnan(offered_rps(cell)):
        out["svc_p50"] = frame["svc"].quantile(0.5)
    return out


def latency_chart(cell: CellData, out: Path) -> Chart | None:
    """Response time percentiles over time; an open-model cell's service time p50 dashed (latency_bins)."""
    bins, t0 = latency_bins(cell), cell.t0
    if not len(bins) or t0 is None:
        return None
    plot = _plot(cell, "Response time percentiles over time", "response time (ms)",
                 "schedule time since cell start (s), 1 s bins")
    x = bins.index.to_numpy(float) + 0.5
    for q, color in ((50, "#1f77b4"), (95, "#ff7f0e"), (99, "#d62728")):
        plot.line(x, bins[f"p{q}"].to_numpy(float), color, f"response p{q}", marker=True)
    if "svc_p50" in bins:
        plot.line(x, bins["svc_p50"].to_numpy(float), "#1f77b4", "service time p50 (from sending)", dash=DASHED)
    lo, hi = float(bins.min().min()), float(bins.max().max())
    plot.ylog = hi / max(lo, 1e-3) > 50
    return _save(plot, cell, out, "latency")


def pgbouncer_chart(cell: CellData, out: Path) -> Chart | None:
    p, t0 = cell.csv(R.PGBOUNCER_CSV) if cell.has(R.PGBOUNCER_CSV) else None, cell.t0
    if p is None or not len(p) or t0 is None:
        return None
    x = p["t"].to_numpy(float) - t0
    plot = _plot(cell, "PgBouncer clients vs server connections", "connections")
    clients = (p["cl_active"].fillna(0) + p["cl_waiting"].fillna(0)).to_numpy(float)
    servers = p[["sv_active", "sv_idle", "sv_used", "sv_login"]].fillna(0).sum(axis=1).to_numpy(float)
    plot.line(x, clients, "#1f77b4", "clients (cl_active + cl_waiting)", width=2, step=True)
    plot.line(x, p["cl_waiting"].fillna(0).to_numpy(float), "#ff7f0e", "clients waiting", step=True)
    plot.line(x, servers, "black", "server connections (sv_*)", width=2, step=True)
    pg = connection_totals(cell)
    if len(pg):
        plot.line(pg.index.to_numpy(float) - t0, pg.to_numpy(float), "#2ca02c", "PostgreSQL backends (sampled)",
                  dash=DASHED, step=True)
    plot.ylim = (0, None)
    return _save(plot, cell, out, "pgbouncer")
