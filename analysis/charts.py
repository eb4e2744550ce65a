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
from matplotlib.collections import LineCollection, PathCollection  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from analysis.load import CellData, RunData, load_run  # noqa: E402
from analysis.rows import connection_totals, is_dropped, offered_rps  # noqa: E402
from analysis.summarize import summary_frame  # noqa: E402
from connbench import results as R  # noqa: E402

PHASE_COLORS = {"warmup": ("#f3d37a", "warm-up"), "measure": ("#9fd89f", "measure"),
                "cooldown": ("#9cc3e6", "cool-down")}
STATE_COLORS = {"active": "#d62728", "idle": "#2ca02c", "idle in transaction": "#ff7f0e",
                "idle in transaction (aborted)": "#8c564b", "": "#7f7f7f"}
# One colour per pooling mode in every chart (Okabe-Ito, readable with colour-blindness); others grey.
POOLING_COLORS = {"direct": "#D55E00", "django-pool": "#0072B2", "pgbouncer-transaction": "#009E73",
                  "pgbouncer-session": "#E69F00", "dj-db-conn-pool": "#CC79A7"}
LABEL_GIDS = ("point", "value")  # texts _layout keeps apart: point labels move, bar value labels drop
plt.rcParams.update({"figure.dpi": 100, "font.size": 10, "axes.grid": True, "grid.alpha": 0.3,
                     "svg.hashsalt": "connbench"})  # deterministic SVG ids


@dataclass(frozen=True)
class Chart:
    title: str
    png: Path
    svg: Path
    cell_id: str | None
    kind: str


def pooling_color(name) -> str:
    return POOLING_COLORS.get(str(name), "#8c8c8c")


def _save(fig, out: Path, name: str, title: str, cell_id: str | None, kind: str) -> Chart:
    out.mkdir(parents=True, exist_ok=True)
    png, svg = out / f"{name}.png", out / f"{name}.svg"
    _layout(fig)
    # Write then rename, so a report never links a half-written image.
    for path, kw in ((png, {"dpi": 100}), (svg, {"metadata": {"Date": None}})):
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, format=path.suffix[1:], **kw)
        tmp.replace(path)
    plt.close(fig)
    return Chart(title, png, svg, cell_id, kind)


def _layout(fig) -> None:
    """tight_layout, then _declutter; again while an axes grew to hold a label, since growing moves points."""
    for _ in range(4):
        fig.tight_layout()
        if not _declutter(fig):
            return


def _declutter(fig) -> bool:
    """Labels (LABEL_GIDS) off legends, each other, bars, error bars and points, and inside their axes: a point
    label moves up past what it would cover, a value label is dropped. In pixels; True when an axes grew."""
    if not (labelled := [ax for ax in fig.axes if any(t.get_gid() in LABEL_GIDS for t in ax.texts)]):
        return False
    fig.canvas.draw()
    r, grew = fig.canvas.get_renderer(), False
    legends = [lg.get_window_extent(r) for lg in [*fig.legends, *(ax.get_legend() for ax in fig.axes)] if lg]
    for ax in labelled:
        box, taken, data = ax.get_window_extent(r), list(legends), ax.transData.transform
        taken += [p.get_window_extent(r) for p in ax.patches] + [  # bars, error bars, points (5 px around)
            Bbox.from_extents(*data(s).min(0), *data(s).max(0)) for c in ax.collections
            if isinstance(c, LineCollection) for s in c.get_segments() if len(s)] + [
            Bbox.from_extents(x - 5, y - 5, x + 5, y + 5) for c in ax.collections
            if isinstance(c, PathCollection) for x, y in data(c.get_offsets())]
        for t in [t for t in ax.texts if t.get_gid() in LABEL_GIDS]:
            bb = t.get_window_extent(r)
            if bb.x1 > box.x1 or bb.x0 < box.x0:  # running out sideways (toward a legend): turn it around
                t.set_ha("right" if bb.x1 > box.x1 else "left")
                t.xyann = (-t.xyann[0], t.xyann[1])
                bb = t.get_window_extent(r)
            hits = [b for b in taken if b.overlaps(bb)]
            if hits and t.get_gid() == "value":
                t.remove()
                continue
            while hits:  # each step clears the highest box it hit, so this ends
                t.xyann = (t.xyann[0], t.xyann[1] + (max(b.y1 for b in hits) - bb.y0 + 2) * 72 / fig.dpi)
                bb = t.get_window_extent(r)
                hits = [b for b in taken if b.overlaps(bb)]
            taken.append(bb)
            if bb.y1 > box.y1:
                ax.set_ylim(top=ax.transData.inverted().transform((bb.x0, bb.y1 + 4))[1])
                grew = True
    return grew


def _cell_chart(fig, ax, cell: CellData, out: Path, kind: str, ylabel: str, title: str,
                xlabel: str = "time since cell start (s)") -> Chart:
    """Label, title and save a per-cell chart over time."""
    title = f"{title}: {cell.cell_id}"
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0, fontsize=8)  # off the curves and labels
    name = f"{kind}_{re.sub(r'[^A-Za-z0-9._-]+', '_', cell.cell_id)}"  # a safe file name
    return _save(fig, out, name, title, cell.cell_id, kind)


def _shade_phases(ax, cell: CellData, t0: float) -> None:
    for name, (color, label) in PHASE_COLORS.items():
        if w := cell.phase(name):
            ax.axvspan(w[0] - t0, w[1] - t0, color=color, alpha=0.35, label=label, lw=0)


def _faults(ax, cell: CellData, t0: float) -> None:
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


def _cma(v) -> str:
    """CONN_MAX_AGE as text: 600, 600.0 and "600" alike; None, NaN and "none" all mean no limit."""
    f = pd.to_numeric(pd.Series([v], dtype=object), errors="coerce").iloc[0]
    return "none" if pd.isna(f) else f"{f:g}"


def _cma_sorted(values) -> list[str]:  # numbers ascending, then words ("none")
    return sorted(values, key=lambda v: (0, float(v), "") if v.replace(".", "", 1).isdigit() else (1, 0.0, v))


def _num(d: pd.DataFrame, col: str) -> np.ndarray:
    return pd.to_numeric(d[col], errors="coerce").to_numpy(float) if col in d else np.full(len(d), np.nan)


def _groups_from_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """A per-setting table for comparison_chart when the caller has none: each figure's median over a group's
    completed repeats, their min-max as the interval (none from one repeat)."""
    rows = []
    for group, g in summary[summary["status"] == "completed"].groupby("group", sort=False):
        row = {"group": group, "completed": len(g), **{k: g[k].iloc[0] for k in ("pooling", "conn_max_age") if k in g},
               "interval_method": f"min-max over {len(g)} repeats" if len(g) > 1 else ""}
        for f in R.INTERVAL_FIGURES:
            v = pd.Series(_num(g, f)).dropna()
            lo, hi = (v.min(), v.max()) if len(v) > 1 else (np.nan, np.nan)
            row |= {f: v.median(), f"{f}_lo": lo, f"{f}_hi": hi}
        rows.append(row)
    return pd.DataFrame(rows)


HATCHES = ("", "///", "...", "xxx", "\\\\\\", "ooo")  # one per CONN_MAX_AGE: colour stays the pooling mode's


def _comparison_figure(groups: pd.DataFrame):
    """groups: one row per setting (group, completed, knobs, <figure>, <figure>_lo/_hi, interval_method).
    rps and p95 bars per pooling mode and CONN_MAX_AGE, error bars lo..hi. None when nothing is drawable or a
    (pooling, CONN_MAX_AGE) pair is several settings (another knob varies: one bar would mix them)."""
    g = groups[_num(groups, "completed") > 0] if "completed" in groups else groups
    if not len(g) or "pooling" not in g or not np.isfinite(_num(g, "rps")).any():
        return None
    g = g.assign(pool=g["pooling"].astype(str), cma=g["conn_max_age"].map(_cma) if "conn_max_age" in g else "")
    if g.duplicated(["pool", "cma"]).any():
        return None
    pools = sorted(dict.fromkeys(g["pool"]), key=lambda p: list(POOLING_COLORS).index(p) if p in POOLING_COLORS
                   else len(POOLING_COLORS))  # the same order in every run; unknown modes after, as they came
    cmas, methods = _cma_sorted(dict.fromkeys(g["cma"])), set()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    width, xs = 0.8 / len(cmas), np.arange(len(pools))
    for ax, f, ylabel in ((axes[0], "rps", "throughput (requests/s, higher is better)"),
                          (axes[1], "lat_p95", "p95 response time (ms, lower is better)")):
        for j, cma in enumerate(cmas):
            rows = g[g["cma"] == cma].set_index("pool").reindex(pools)
            x, y = xs + (j - (len(cmas) - 1) / 2) * width, _num(rows, f)
            lo, hi = _num(rows, f"{f}_lo"), _num(rows, f"{f}_hi")
            ax.bar(x, y, width, color=[pooling_color(p) for p in pools], hatch=HATCHES[j % len(HATCHES)],
                   edgecolor="black", lw=0.5)
            ok = np.isfinite(y) & np.isfinite(lo) & np.isfinite(hi)
            methods |= set(rows.loc[ok, "interval_method"].dropna().astype(str)) if "interval_method" in rows else set()
            # centred on the interval: the line spans exactly lo..hi even when it does not hold the median
            ax.errorbar(x[ok], (lo + hi)[ok] / 2, yerr=np.abs(hi - lo)[ok] / 2, fmt="none", ecolor="black",
                        elinewidth=1.2, capsize=4, zorder=3)
            for xi, yi, top in zip(x, y, np.fmax(y, hi), strict=True):  # above the error bar
                if np.isfinite(yi):
                    ax.annotate(f"{yi:.3g}", (xi, top), xytext=(0, 3), textcoords="offset points", ha="center",
                                va="bottom", fontsize=7, gid="value")
        ax.set_ylim(0, np.nanmax([*_num(g, f), *_num(g, f"{f}_hi"), 0]) * 1.12 or 1)
        ax.set_xticks(xs, pools, rotation=20 * (len(pools) > 3), ha="right" if len(pools) > 3 else "center")
        ax.set(xlabel="pooling mode", ylabel=ylabel)
    if cmas != [""]:  # no CONN_MAX_AGE knob: nothing to tell apart
        axes[1].legend(handles=[Patch(facecolor="white", edgecolor="black", hatch=HATCHES[j % len(HATCHES)],
                                      label=c) for j, c in enumerate(cmas)], title="CONN_MAX_AGE (s)", fontsize=8,
                       handleheight=1.5, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    methods = sorted({m.strip() for s in methods for m in s.split(";") if m.strip()})
    fig.suptitle("Throughput and p95 response time by pooling mode and CONN_MAX_AGE")
    fig.supxlabel("bars: median over completed repeats; " + (f"error bars: {'; '.join(methods)}" if methods else
                  "no error bars (no interval: one repeat per setting)"), fontsize=9, color="#444444")
    _layout(fig)
    return fig


def _overview(fig, out: Path, name: str, kind: str) -> Chart | None:
    return None if fig is None else _save(fig, out, name, fig.get_suptitle() or fig.axes[0].get_title(), None, kind)


def comparison_chart(groups: pd.DataFrame, out: Path) -> Chart | None:  # groups: see _comparison_figure
    return _overview(_comparison_figure(groups), out, "compare_pooling", "comparison")


def _labels(ax, xs, ys, labels) -> None:
    """Point labels beside their point, right-half ones to its left; coinciding points share one. _layout
    staggers upward those that would cover another label or point."""
    merged: dict[tuple[float, float], list[str]] = {}
    for x, y, lab in zip(xs, ys, labels, strict=True):
        merged.setdefault((float(x), float(y)), []).append(str(lab))
    xmax = max((x for x, _ in merged), default=0.0)
    for (x, y), labs in sorted(merged.items(), key=lambda kv: kv[0][1]):
        right = xmax > 0 and x > 0.5 * xmax
        ax.annotate("\n".join(labs), (x, y), textcoords="offset points", xytext=(-7 if right else 7, 0),
                    ha="right" if right else "left", va="center", fontsize=7, gid="point")


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
MAX_LABELS = 6  # beyond this many points, labels turn into clutter: colour and shape carry the meaning


def _dodge(d: pd.DataFrame, x: str, y: str) -> pd.Series:
    """x nudged sideways for points that coincide exactly, so none hides another."""
    span = float(d[x].max() - d[x].min()) or 1.0
    same = d.groupby([x, y], sort=False)[x]
    return d[x] + (same.cumcount() - (same.transform("size") - 1) / 2) * 0.015 * span


def _styled_scatter(ax, d: pd.DataFrame, x: str, y: str) -> None:
    """Colour = pooling mode, marker = CONN_MAX_AGE, legend outside; cell labels while they stay readable."""
    pool = d["pooling"].astype(str) if "pooling" in d else pd.Series("cells", index=d.index)
    cma = d["conn_max_age"].map(_cma) if "conn_max_age" in d else pd.Series("", index=d.index)
    pools, cmas, xs = list(dict.fromkeys(pool)), _cma_sorted(dict.fromkeys(cma)), _dodge(d, x, y)
    for (p, c), sel in d.groupby([pool, cma], sort=False).groups.items():
        ax.scatter(xs[sel], d.loc[sel, y], s=55, color=pooling_color(p), marker=MARKERS[cmas.index(c) % len(MARKERS)],
                   edgecolors="white", linewidths=0.6, zorder=3, gid=f"pooling={p}")
    handles = [Line2D([], [], ls="", marker="o", color=pooling_color(p), label=p) for p in pools]
    if cmas != [""]:
        handles += [Line2D([], [], ls="", marker=MARKERS[j % len(MARKERS)], color="black", mfc="none",
                           label=f"CONN_MAX_AGE={c}" + (" s" if c != "none" else "")) for j, c in enumerate(cmas)]
    if len(d) <= MAX_LABELS:
        _labels(ax, xs, d[y], d["cell_id"])
    ax.legend(handles=[*ax.get_legend_handles_labels()[0], *handles], fontsize=8, loc="upper left",
              bbox_to_anchor=(1.02, 1), borderaxespad=0)


def predicted_chart(summary: pd.DataFrame, out: Path) -> Chart | None:
    d = summary[summary["conn_plateau"].notna() & summary["predicted_connections"].notna()]
    if not len(d):
        return None
    fig, ax = plt.subplots(figsize=(9.5, 6.5))
    hi = float(max(d["conn_plateau"].max(), d["predicted_connections"].max(), d["conn_peak"].max())) * 1.15 + 1
    ax.plot([0, hi], [0, hi], color="grey", ls="--", label="observed = predicted")
    ax.scatter(d["predicted_connections"], d["conn_peak"], s=25, facecolors="none", edgecolors="grey",
               label="peak (hollow)", zorder=2)
    _styled_scatter(ax, d, "predicted_connections", "conn_plateau")
    ax.set(xlim=(-0.03 * hi, hi), ylim=(-0.03 * hi, hi))  # points at 0 stay whole
    ax.set(xlabel="predicted server connections (dynos × workers × threads, or pool size)",
           ylabel="observed server connections (plateau)", title="Observed vs predicted connections")
    return _overview(fig, out, "observed_vs_predicted", "predicted")


def churn_chart(summary: pd.DataFrame, out: Path) -> Chart | None:
    d = summary[summary["churn_per_s"].notna() & summary["lat_p50"].notna()]
    if not len(d):
        return None
    fig, ax = plt.subplots(figsize=(10, 5.5))
    _styled_scatter(ax, d, "churn_per_s", "lat_p50")
    ax.set(xlabel="new PostgreSQL sessions per second (1/s)", ylabel="p50 response time (ms)",
           title="Connection churn vs median response time")
    right = float(d["churn_per_s"].max()) * 1.1 + 0.5
    ax.set(xlim=(-0.03 * right, right), ylim=(0, float(d["lat_p50"].max()) * 1.15 + 0.5))
    return _overview(fig, out, "churn_vs_latency", "churn")


def draw_charts(run_dir: RunData | Path | str, summary: pd.DataFrame | None = None,
                groups: pd.DataFrame | None = None) -> list[Chart]:
    """Draw every chart the data allows into <run>/charts/; returns their descriptors (overview charts first).
    summary: one row per cell; groups: one row per setting with intervals (from summary when None)."""
    run = run_dir if isinstance(run_dir, RunData) else load_run(run_dir)
    out = run.paths.charts
    summary = summary_frame(run) if summary is None else summary
    groups = _groups_from_summary(summary) if groups is None else groups
    charts = [comparison_chart(groups, out), predicted_chart(summary, out), churn_chart(summary, out)]
    for cell in (c for c in run.cells if c.root is not None and c.status != "skipped"):
        charts += [connections_chart(cell, out), latency_chart(cell, out), pgbouncer_chart(cell, out)]
    drawn = [c for c in charts if c is not None]
    keep = {p for c in drawn for p in (c.png, c.svg)}
    for stale in [*out.glob("*.png"), *out.glob("*.svg")]:  # charts/ is ours: drop what a rebuild no longer draws
        if stale not in keep:
            stale.unlink(missing_ok=True)
    return drawn
