"""Charts of one cell over time: server connections, response time percentiles, PgBouncer's clients."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from connbench import results as R
from connbench.analysis.charts.common import PHASE_COLORS, STATE_COLORS, Chart, plt, save
from connbench.analysis.load import CellData
from connbench.analysis.windows import connection_totals, is_dropped, offered_rps


def _cell_chart(fig: Figure, ax: Axes, cell: CellData, out: Path, kind: str, ylabel: str, title: str,
                xlabel: str = "time since cell start (s)") -> Chart:
    """Label, title and save a per-cell chart over time."""
    title = f"{title}: {cell.cell_id}"
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0, fontsize=8)  # off the curves and labels
    name = f"{kind}_{re.sub(r'[^A-Za-z0-9._-]+', '_', cell.cell_id)}"  # a safe file name
    return save(fig, out, name, title, cell.cell_id, kind)


def _shade_phases(ax: Axes, cell: CellData, t0: float) -> None:
    for name, (color, label) in PHASE_COLORS.items():
        if w := cell.phase(name):
            ax.axvspan(w[0] - t0, w[1] - t0, color=color, alpha=0.35, label=label, lw=0)


def _faults(ax: Axes, cell: CellData, t0: float) -> None:
    ev = cell.csv(R.EVENTS_CSV).pipe(lambda e: e[e["kind"].astype(str).str.startswith("fault")])
    for i, (_, row) in enumerate(ev.iterrows()):
        ax.axvline(row["t"] - t0, color="#7b1fa2", ls="--", lw=1.5, label="fault" if i == 0 else None)
        ax.annotate(str(row["kind"]), (row["t"] - t0, 1), xycoords=("data", "axes fraction"),
                    rotation=90, va="top", ha="right", fontsize=8, color="#7b1fa2")


def connections_chart(cell: CellData, out: Path) -> Chart | None:
    tot, t0 = connection_totals(cell), cell.t0
    if len(tot) < 2 or t0 is None:  # one sample is not a curve
        return None
    c = cell.csv(R.CONNECTIONS_CSV).pipe(lambda c: c[(c["source"] == "postgres") & c["count"].notna()])
    states = c.pivot_table(index="t", columns="state", values="count", aggfunc="sum")
    states = states.reindex(tot.index).fillna(0)
    states = states.loc[:, states.sum() > 0]  # the sampler's "none" rows (count 0) mark empty samples
    fig, ax = plt.subplots(figsize=(10, 4.2))
    _shade_phases(ax, cell, t0)
    x = tot.index.to_numpy(float) - t0
    if len(states.columns):
        colors = [STATE_COLORS.get(s, None) for s in states.columns]
        ax.stackplot(x, *[states[s].to_numpy(float) for s in states.columns], step="post", alpha=0.55,
                     labels=[f"state: {s or '(no state)'}" for s in states.columns],
                     colors=[col or f"C{i + 3}" for i, col in enumerate(colors)])
    ax.step(x, tot.to_numpy(float), where="post", color="black", lw=2, label="server connections (total)")
    top = float(tot.max())
    maxc = cell.csv(R.DB_CSV)["max_connections"].dropna()
    if len(maxc):
        limit = float(maxc.iloc[-1])
        if limit <= max(3 * top, 10):  # a far-away limit would flatten the curve; say it in words instead
            ax.axhline(limit, color="#d62728", ls=":", lw=2, label=f"max_connections = {limit:g}")
            top = max(top, limit)
        else:
            ax.text(0.99, 0.97, f"max_connections = {limit:g} (off scale)", transform=ax.transAxes,
                    ha="right", va="top", fontsize=9, color="#d62728")
    _faults(ax, cell, t0)
    ax.set_ylim(0, top * 1.15 + 1)
    return _cell_chart(fig, ax, cell, out, "connections", "connections on PostgreSQL",
                       "Server connections over time")


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
    fig, ax = plt.subplots(figsize=(10, 4.2))
    _shade_phases(ax, cell, t0)
    x = bins.index.to_numpy(float) + 0.5
    for q, color in ((50, "#1f77b4"), (95, "#ff7f0e"), (99, "#d62728")):
        ax.plot(x, bins[f"p{q}"].to_numpy(), marker="o", ms=3, color=color, label=f"response p{q}")
    if "svc_p50" in bins:
        ax.plot(x, bins["svc_p50"].to_numpy(), ls="--", color="#1f77b4", label="service time p50 (from sending)")
    lo, hi = float(bins.min().min()), float(bins.max().max())
    if hi / max(lo, 1e-3) > 50:
        ax.set_yscale("log")
    _faults(ax, cell, t0)
    return _cell_chart(fig, ax, cell, out, "latency", "response time (ms)", "Response time percentiles over time",
                       xlabel="schedule time since cell start (s), 1 s bins")


def pgbouncer_chart(cell: CellData, out: Path) -> Chart | None:
    p, t0 = cell.csv(R.PGBOUNCER_CSV) if cell.has(R.PGBOUNCER_CSV) else None, cell.t0
    if p is None or not len(p) or t0 is None:
        return None
    x = p["t"].to_numpy(float) - t0
    fig, ax = plt.subplots(figsize=(10, 4.2))
    _shade_phases(ax, cell, t0)
    clients = (p["cl_active"].fillna(0) + p["cl_waiting"].fillna(0)).to_numpy(float)
    servers = p[["sv_active", "sv_idle", "sv_used", "sv_login"]].fillna(0).sum(axis=1).to_numpy(float)
    ax.step(x, clients, where="post", lw=2, color="#1f77b4", label="clients (cl_active + cl_waiting)")
    ax.step(x, p["cl_waiting"].fillna(0).to_numpy(float), where="post", color="#ff7f0e", label="clients waiting")
    ax.step(x, servers, where="post", lw=2, color="black", label="server connections (sv_*)")
    pg = connection_totals(cell)
    if len(pg):
        ax.step(pg.index.to_numpy(float) - t0, pg.to_numpy(float), where="post", ls="--", color="#2ca02c",
                label="PostgreSQL backends (sampled)")
    _faults(ax, cell, t0)
    ax.set_ylim(bottom=0)
    return _cell_chart(fig, ax, cell, out, "pgbouncer", "connections", "PgBouncer clients vs server connections")
