"""Charts across a run's settings: throughput and p95 by pooling mode, observed vs predicted connections,
churn vs median response time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from connbench import results as R
from connbench.analysis.charts.common import (
    MARKERS,
    MAX_LABELS,
    POOLING_COLORS,
    Chart,
    layout,
    plt,
    point_labels,
    pooling_color,
    save,
)
from connbench.analysis.values import cma_label, cma_sorted


def _num(d: pd.DataFrame, col: str) -> np.ndarray:
    return pd.to_numeric(d[col], errors="coerce").to_numpy(float) if col in d else np.full(len(d), np.nan)


def groups_from_summary(summary: pd.DataFrame) -> pd.DataFrame:
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


def comparison_figure(groups: pd.DataFrame) -> Figure | None:
    """groups: one row per setting (group, completed, knobs, <figure>, <figure>_lo/_hi, interval_method).
    rps and p95 bars per pooling mode and CONN_MAX_AGE, error bars lo..hi. None when nothing is drawable or a
    (pooling, CONN_MAX_AGE) pair is several settings (another knob varies: one bar would mix them)."""
    g = groups[_num(groups, "completed") > 0] if "completed" in groups else groups
    if not len(g) or "pooling" not in g or not np.isfinite(_num(g, "rps")).any():
        return None
    g = g.assign(pool=g["pooling"].astype(str), cma=g["conn_max_age"].map(cma_label) if "conn_max_age" in g else "")
    if g.duplicated(["pool", "cma"]).any():
        return None
    pools = sorted(dict.fromkeys(g["pool"]), key=lambda p: list(POOLING_COLORS).index(p) if p in POOLING_COLORS
                   else len(POOLING_COLORS))  # the same order in every run; unknown modes after, as they came
    cmas, methods = cma_sorted(dict.fromkeys(g["cma"])), set()
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
                    text = f"{yi:,.0f}" if abs(yi) >= 100 else f"{yi:.3g}"  # 1,062 req/s, not 1.06e+03
                    ax.annotate(text, (xi, top), xytext=(0, 3), textcoords="offset points", ha="center",
                                va="bottom", fontsize=7, gid="value")
        ax.set_ylim(0, np.nanmax([*_num(g, f), *_num(g, f"{f}_hi"), 0]) * 1.12 or 1)
        ax.set_xticks(xs, pools, rotation=20 * (len(pools) > 3), ha="right" if len(pools) > 3 else "center")
        ax.set(xlabel="pooling mode", ylabel=ylabel)
    if cmas != [""]:  # no CONN_MAX_AGE knob: nothing to tell apart
        axes[1].legend(handles=[Patch(facecolor="white", edgecolor="black", hatch=HATCHES[j % len(HATCHES)],
                                      label=c) for j, c in enumerate(cmas)], title="CONN_MAX_AGE (s)", fontsize=8,
                       handleheight=1.5, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    named = sorted({m.strip() for s in methods for m in s.split(";") if m.strip()})
    fig.suptitle("Throughput and p95 response time by pooling mode and CONN_MAX_AGE")
    fig.supxlabel("bars: median over completed repeats; " + (f"error bars: {'; '.join(named)}" if named else
                  "no error bars (no interval: one repeat per setting)"), fontsize=9, color="#444444")
    layout(fig)
    return fig


def _overview(fig: Figure | None, out: Path, name: str, kind: str) -> Chart | None:
    return None if fig is None else save(fig, out, name, fig.get_suptitle() or fig.axes[0].get_title(), None, kind)


def comparison_chart(groups: pd.DataFrame, out: Path) -> Chart | None:  # groups: see comparison_figure
    return _overview(comparison_figure(groups), out, "compare_pooling", "comparison")


def _dodge(d: pd.DataFrame, x: str, y: str) -> pd.Series:
    """x nudged sideways for points that coincide exactly, so none hides another."""
    span = float(d[x].max() - d[x].min()) or 1.0
    same = d.groupby([x, y], sort=False)[x]
    return d[x] + (same.cumcount() - (same.transform("size") - 1) / 2) * 0.015 * span


def _styled_scatter(ax: Axes, d: pd.DataFrame, x: str, y: str) -> None:
    """Colour = pooling mode, marker = CONN_MAX_AGE, legend outside; cell labels while they stay readable."""
    pool = d["pooling"].astype(str) if "pooling" in d else pd.Series("cells", index=d.index)
    cma = d["conn_max_age"].map(cma_label) if "conn_max_age" in d else pd.Series("", index=d.index)
    pools, cmas, xs = list(dict.fromkeys(pool)), cma_sorted(dict.fromkeys(cma)), _dodge(d, x, y)
    for (p, c), sel in d.groupby([pool, cma], sort=False).groups.items():
        ax.scatter(xs[sel], d.loc[sel, y], s=55, color=pooling_color(p), marker=MARKERS[cmas.index(c) % len(MARKERS)],
                   edgecolors="white", linewidths=0.6, zorder=3, gid=f"pooling={p}")
    handles = [Line2D([], [], ls="", marker="o", color=pooling_color(p), label=p) for p in pools]
    if cmas != [""]:
        handles += [Line2D([], [], ls="", marker=MARKERS[j % len(MARKERS)], color="black", mfc="none",
                           label=f"CONN_MAX_AGE={c}" + (" s" if c != "none" else "")) for j, c in enumerate(cmas)]
    if len(d) <= MAX_LABELS:
        point_labels(ax, xs, d[y], d["cell_id"])
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
