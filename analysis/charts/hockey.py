"""The open model's "hockey stick": response time against offered load, one line per connection setting.

Where connection strategies differ is where a queue starts to build: under capacity every setting answers
in its service time; past it response time (measured from when each request should have been sent) turns
up, sooner for a setting that pays more per request (a new connection each, a pool wait).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from connbench import results as R
from connbench.analysis.charts.common import MARKERS, Chart, plt, pooling_color, save
from connbench.analysis.load import RunData


def _value(v: object) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _param_columns(summary: pd.DataFrame) -> list[str]:
    return [c for c in summary.columns if c not in R.SUMMARY_COLUMNS and not c.startswith("err_")]


def hockey_lines(summary: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The hockey stick's lines: connection setting label -> p50, p99 (median over repeats), lagged and lost
    (any cell generator_lagged; any with dropped requests) per offered rate. Empty unless arrival_rate is a
    matrix axis (two or more offered rates among completed cells). A setting is every knob but arrival_rate,
    labelled by the knobs that differ between settings; its pooling mode, if a knob, in the frame's
    attrs["pooling"] (for its colour)."""
    d = summary[(summary["status"] == "completed") & summary["offered_rps"].notna() & summary["lat_p50"].notna()]
    if d["offered_rps"].nunique() < 2:
        return {}
    knobs = [c for c in _param_columns(d) if c != "arrival_rate"]
    text = {c: d[c].map(str) for c in knobs}  # map(str): None and NaN become words, so they group too
    key = pd.Series(list(zip(*text.values(), strict=True)) if knobs else [()] * len(d), index=d.index)
    varying = [c for c in knobs if text[c].nunique() > 1]
    d = d.assign(lagged=d["generator_lagged"].fillna(False).astype(bool),
                 lost=d["dropped"].fillna(0) > 0)  # dropped requests are in no percentile: the curve flatters them
    lines = {}
    for _, g in d.groupby(key, sort=False):
        label = ", ".join(f"{c}={_value(g[c].iloc[0])}" for c in varying) or "every cell"
        lines[label] = g.groupby("offered_rps").agg(p50=("lat_p50", "median"), p99=("lat_p99", "median"),
                                                    lagged=("lagged", "any"), lost=("lost", "any")).sort_index()
        if "pooling" in knobs:
            lines[label].attrs["pooling"] = str(g["pooling"].iloc[0])
    return lines


def _styles(lines: dict[str, pd.DataFrame]) -> list[tuple[str, str]]:
    """(colour, marker) per line: its pooling mode's colour as in every chart (else one per line), and a
    marker per line among those sharing a colour, so they stay apart; line style says p99 or p50."""
    colors = [pooling_color(m.attrs["pooling"]) if "pooling" in m.attrs else f"C{i}"
              for i, m in enumerate(lines.values())]
    return [(c, MARKERS[colors[:i].count(c) % len(MARKERS)]) for i, c in enumerate(colors)]


def draw_hockey(run: RunData, summary: pd.DataFrame) -> list[Chart]:
    """Response time p50 and p99 against the offered rate, one line per connection setting (hockey_lines);
    nothing unless arrival_rate is a matrix axis."""
    lines = hockey_lines(summary)
    if not lines:
        return []
    fig, ax = plt.subplots(figsize=(10, 5.2))
    for (label, med), (color, marker) in zip(lines.items(), _styles(lines), strict=True):
        x = med.index.to_numpy(float)
        ax.plot(x, med["p99"], marker=marker, color=color, lw=2, label=label)
        ax.plot(x, med["p50"], marker=marker, ms=4, color=color, ls="--", lw=1.2)
        late, lost = med[med["lagged"]], med[med["lost"]]  # marked where a cell (any repeat) was
        ax.scatter(late.index, late["p99"], s=160, facecolors="none", edgecolors="black", lw=1.5, zorder=4)
        ax.scatter(lost.index, lost["p99"], s=60, marker="x", color="black", lw=1.5, zorder=5)
    handles = ax.get_legend_handles_labels()[0] + [
        Line2D([], [], color="grey", lw=2, label="p99 (solid)"),
        Line2D([], [], color="grey", ls="--", lw=1.2, label="p50 (dashed)")]
    every = pd.concat(lines.values())
    if every["lagged"].any():
        handles.append(Line2D([], [], ls="", marker="o", ms=12, mfc="none", mec="black",
                              label="generator lagged (schedule lag p99 > 10 ms)"))
    if every["lost"].any():
        handles.append(Line2D([], [], ls="", marker="x", color="black", mew=1.5,
                              label="requests dropped (max_in_flight reached)"))
    rates = np.unique(every.index.to_numpy(float))
    if rates[-1] / rates[0] >= 8:
        ax.set_xscale("log", base=2)
        ax.set_xticks(rates, [f"{r:g}" for r in rates])
        ax.minorticks_off()
    lo, hi = float(every["p50"].min()), float(every["p99"].max())
    if lo > 0 and hi / lo > 20:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.margins(y=0.08)
    else:
        ax.set_ylim(bottom=0)
    ax.set_xlabel("offered load (requests/s, the open model's arrival_rate)")
    ax.set_ylabel("response time (ms, from intended send time)")
    title = "Response time against offered load (p50 and p99)"
    ax.set_title(title)
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return [save(fig, run.paths.charts, "hockey_stick", title, None, "hockey")]
