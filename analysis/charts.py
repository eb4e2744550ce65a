"""Charts of a run, as PNG (for the report) and SVG (for papers) under charts/.

Each chart is skipped, not drawn empty, when its data is missing (a failed cell, no PgBouncer).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.load import CellData, RunData, load_run  # noqa: E402
from analysis.summarize import connection_totals, is_dropped, offered_rps, summary_frame  # noqa: E402
from connbench import results as R  # noqa: E402

PHASE_COLORS = {"warmup": ("#f3d37a", "warm-up"), "measure": ("#9fd89f", "measure"),
                "cooldown": ("#9cc3e6", "cool-down")}
STATE_COLORS = {"active": "#d62728", "idle": "#2ca02c", "idle in transaction": "#ff7f0e",
                "idle in transaction (aborted)": "#8c564b", "": "#7f7f7f"}
plt.rcParams.update({"figure.dpi": 100, "font.size": 10, "axes.grid": True, "grid.alpha": 0.3,
                     "svg.hashsalt": "connbench"})  # deterministic SVG ids


@dataclass(frozen=True)
class Chart:
    title: str
    png: Path
    svg: Path
    cell_id: str | None
    kind: str


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _save(fig, out: Path, name: str, title: str, cell_id: str | None, kind: str) -> Chart:
    out.mkdir(parents=True, exist_ok=True)
    png, svg = out / f"{name}.png", out / f"{name}.svg"
    fig.tight_layout()
    # Write then rename, so a report never links a half-written image.
    for path, kw in ((png, {"dpi": 100}), (svg, {"metadata": {"Date": None}})):
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, format=path.suffix[1:], **kw)
        tmp.replace(path)
    plt.close(fig)
    return Chart(title, png, svg, cell_id, kind)


def _cell_chart(fig, ax, cell: CellData, out: Path, kind: str, ylabel: str, title: str, ncol: int = 2,
                xlabel: str = "time since cell start (s)") -> Chart:
    """Label, title and save a per-cell chart over time."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    title = f"{title}: {cell.cell_id}"
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8, ncol=ncol, framealpha=0.9)
    return _save(fig, out, f"{kind}_{_safe(cell.cell_id)}", title, cell.cell_id, kind)


def _shade_phases(ax, cell: CellData, t0: float) -> None:
    for name, (color, label) in PHASE_COLORS.items():
        w = cell.phase(name)
        if w:
            ax.axvspan(w[0] - t0, w[1] - t0, color=color, alpha=0.35, label=label, lw=0)


def _faults(ax, cell: CellData, t0: float) -> None:
    ev = cell.csv(R.EVENTS_CSV)
    ev = ev[ev["kind"].astype(str).str.startswith("fault")]
    for i, (_, row) in enumerate(ev.iterrows()):
        ax.axvline(row["t"] - t0, color="#7b1fa2", ls="--", lw=1.5, label="fault" if i == 0 else None)
        ax.annotate(str(row["kind"]), (row["t"] - t0, 1), xycoords=("data", "axes fraction"),
                    rotation=90, va="top", ha="right", fontsize=8, color="#7b1fa2")


def connections_chart(cell: CellData, out: Path) -> Chart | None:
    tot = connection_totals(cell)
    t0 = cell.t0
    if len(tot) < 2 or t0 is None:  # one sample is not a curve
        return None
    c = cell.csv(R.CONNECTIONS_CSV)
    c = c[(c["source"] == "postgres") & c["count"].notna()]
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
    req = cell.csv(R.REQUESTS_CSV)
    req = req[~is_dropped(req) & req["latency_ms"].notna()]
    t0 = cell.t0
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
                       ncol=3, xlabel="schedule time since cell start (s), 1 s bins")


def pgbouncer_chart(cell: CellData, out: Path) -> Chart | None:
    p = cell.csv(R.PGBOUNCER_CSV) if cell.has(R.PGBOUNCER_CSV) else None
    t0 = cell.t0
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


def comparison_chart(summary: pd.DataFrame, out: Path) -> Chart | None:
    done = summary[(summary["status"] == "completed") & summary["rps"].notna()]
    if not len(done) or "pooling" not in done or "conn_max_age" not in done:
        return None
    done = done.assign(cma=done["conn_max_age"].astype(str))
    med = done.groupby(["pooling", "cma"])[["rps", "lat_p95"]].median().reset_index()
    poolings = list(dict.fromkeys(med["pooling"]))
    cmas = sorted(dict.fromkeys(med["cma"]), key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / max(len(cmas), 1)
    xs = np.arange(len(poolings))
    for ax, metric, label in ((axes[0], "rps", "requests/s (higher is better)"),
                              (axes[1], "lat_p95", "p95 latency (ms, lower is better)")):
        for i, cma in enumerate(cmas):
            vals = [med[(med["pooling"] == p) & (med["cma"] == cma)][metric] for p in poolings]
            ys = [float(v.iloc[0]) if len(v) else np.nan for v in vals]
            bars = ax.bar(xs + (i - (len(cmas) - 1) / 2) * width, ys, width, label=f"CONN_MAX_AGE={cma}")
            ax.bar_label(bars, fmt="%.3g", fontsize=7)
        crowded = len(poolings) > 3  # long pooling names collide: slant them
        ax.set_xticks(xs, poolings, rotation=20 if crowded else 0, ha="right" if crowded else "center")
        ax.set_xlabel("pooling")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    title = "Throughput and p95 latency by pooling and CONN_MAX_AGE (median over cells)"
    fig.suptitle(title)
    return _save(fig, out, "compare_pooling", title, None, "comparison")


def _labels(ax, xs, ys, labels) -> None:
    """Point labels: coinciding points share one; right-half labels go left; a stagger limits overlap."""
    merged: dict[tuple[float, float], list[str]] = {}
    for x, y, lab in zip(xs, ys, labels, strict=True):
        merged.setdefault((float(x), float(y)), []).append(str(lab))
    xmax = max((x for x, _ in merged), default=0.0)
    for i, ((x, y), labs) in enumerate(sorted(merged.items(), key=lambda kv: kv[0][1])):
        right = xmax > 0 and x > 0.5 * xmax
        ax.annotate("\n".join(labs), (x, y), textcoords="offset points", xytext=(-6 if right else 6, 4 + 9 * (i % 3)),
                    ha="right" if right else "left", va="bottom", fontsize=7)


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
MAX_LABELS = 6  # beyond this many points, labels turn into clutter: colour and shape carry the meaning


def _dodge(d: pd.DataFrame, x: str, y: str) -> pd.Series:
    """x nudged sideways for points that coincide exactly, so none hides another."""
    span = float(d[x].max() - d[x].min()) or 1.0
    key = list(zip(d[x], d[y], strict=True))
    seen: dict[tuple, int] = {}
    counts = pd.Series(key).value_counts()
    out = []
    for k, xv in zip(key, d[x], strict=True):
        i = seen[k] = seen.get(k, -1) + 1
        out.append(xv + (i - (counts[k] - 1) / 2) * 0.015 * span)
    return pd.Series(out, index=d.index)


def _styled_scatter(ax, d: pd.DataFrame, x: str, y: str) -> None:
    """Colour = pooling, marker = CONN_MAX_AGE; cell labels only while they stay readable."""
    from matplotlib.lines import Line2D

    pool = d["pooling"].astype(str) if "pooling" in d else pd.Series("cells", index=d.index)
    cma = d["conn_max_age"].astype(str) if "conn_max_age" in d else pd.Series("", index=d.index)
    pools, cmas = list(dict.fromkeys(pool)), list(dict.fromkeys(cma))
    xs = _dodge(d, x, y)
    for i, p in enumerate(pools):
        for j, c in enumerate(cmas):
            sel = (pool == p) & (cma == c)
            if sel.any():
                ax.scatter(xs[sel], d.loc[sel, y], s=55, color=f"C{i}", marker=MARKERS[j % len(MARKERS)],
                           edgecolors="white", linewidths=0.6, zorder=3)
    handles = [Line2D([], [], ls="", marker="o", color=f"C{i}", label=p) for i, p in enumerate(pools)]
    if cmas != [""]:
        handles += [Line2D([], [], ls="", marker=MARKERS[j % len(MARKERS)], color="black", mfc="none",
                           label=f"CONN_MAX_AGE={c}") for j, c in enumerate(cmas)]
    if len(d) <= MAX_LABELS:
        _labels(ax, xs, d[y], d["cell_id"])
    ax.legend(handles=[*ax.get_legend_handles_labels()[0], *handles], fontsize=8, loc="upper left")


def predicted_chart(summary: pd.DataFrame, out: Path) -> Chart | None:
    d = summary[summary["conn_plateau"].notna() & summary["predicted_connections"].notna()]
    if not len(d):
        return None
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    hi = float(max(d["conn_plateau"].max(), d["predicted_connections"].max(), d["conn_peak"].max())) * 1.15 + 1
    ax.plot([0, hi], [0, hi], color="grey", ls="--", label="observed = predicted")
    ax.scatter(d["predicted_connections"], d["conn_peak"], s=25, facecolors="none", edgecolors="grey",
               label="peak (hollow)", zorder=2)
    _styled_scatter(ax, d, "predicted_connections", "conn_plateau")
    ax.set_xlim(-0.03 * hi, hi)  # points at 0 stay whole
    ax.set_ylim(-0.03 * hi, hi)
    ax.set_xlabel("predicted connections (dynos × workers × threads, or pool size)")
    ax.set_ylabel("observed server connections (plateau)")
    title = "Observed vs predicted connections"
    ax.set_title(title)
    return _save(fig, out, "observed_vs_predicted", title, None, "predicted")


def churn_chart(summary: pd.DataFrame, out: Path) -> Chart | None:
    d = summary[summary["churn_per_s"].notna() & summary["lat_p50"].notna()]
    if not len(d):
        return None
    fig, ax = plt.subplots(figsize=(8, 5.5))
    _styled_scatter(ax, d, "churn_per_s", "lat_p50")
    ax.set_xlabel("churn: new PostgreSQL sessions per second")
    ax.set_ylabel("p50 latency (ms)")
    right = float(d["churn_per_s"].max()) * 1.1 + 0.5
    ax.set_xlim(-0.03 * right, right)
    ax.set_ylim(0, float(d["lat_p50"].max()) * 1.25 + 0.5)  # room for the staggered labels
    title = "Connection churn vs median latency"
    ax.set_title(title)
    return _save(fig, out, "churn_vs_latency", title, None, "churn")


def draw_charts(run_dir: RunData | Path | str, summary: pd.DataFrame | None = None) -> list[Chart]:
    """Draw every chart the data allows into <run>/charts/; returns their descriptors (overview charts first)."""
    run = run_dir if isinstance(run_dir, RunData) else load_run(run_dir)
    out = run.paths.charts
    summary = summary_frame(run) if summary is None else summary
    charts = [comparison_chart(summary, out), predicted_chart(summary, out), churn_chart(summary, out)]
    for cell in run.cells:
        if cell.root is None or cell.status == "skipped":
            continue
        charts += [connections_chart(cell, out), latency_chart(cell, out), pgbouncer_chart(cell, out)]
    drawn = [c for c in charts if c is not None]
    keep = {p for c in drawn for p in (c.png, c.svg)}
    for stale in [*out.glob("*.png"), *out.glob("*.svg")]:  # charts/ is ours: drop what a rebuild no longer draws
        if stale not in keep:
            stale.unlink(missing_ok=True)
    return drawn
