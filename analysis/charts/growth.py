"""Server connections over the load, one line per setting: flat where something bounds them, climbing (or
saw-toothing, as a garbage collector closes some) where requests leave connections behind.

Drawn when some completed cell's count was not bounded (summary conn_bounded false): then the leaking
settings and the bounded ones share one axis. One repeat per setting (the first completed), from the
start of its warm-up to the end of its cool-down.
"""

from __future__ import annotations

import pandas as pd

from connbench.analysis.charts.common import MARKERS, Chart, plt, save
from connbench.analysis.load import RunData
from connbench.analysis.windows import connection_totals


def growth_lines(run: RunData, summary: pd.DataFrame, names: dict[str, str]) -> dict[str, tuple[pd.Series, bool]]:
    """setting label -> (server connections against seconds since the warm-up began, bounded)."""
    done = summary[summary["status"] == "completed"]
    if "conn_bounded" not in done or not (done["conn_bounded"] == False).any():  # noqa: E712 - pandas NA
        return {}
    cells = {c.cell_id: c for c in run.cells}
    out = {}
    for group, g in done.groupby("group", sort=False):
        cell = cells.get(str(g["cell_id"].iloc[0]))
        w = cell.phase("warmup") if cell else None
        tot = connection_totals(cell) if cell else pd.Series(dtype=float)
        if w is None or not len(tot):
            continue
        tot = tot[tot.index >= w[0]]
        tot.index = tot.index - w[0]
        out[names.get(str(group), str(group))] = (tot, bool(g["conn_bounded"].fillna(True).all()))
    return out


def draw_growth(run: RunData, summary: pd.DataFrame, names: dict[str, str]) -> list[Chart]:
    lines = growth_lines(run, summary, names)
    if not lines:
        return []
    fig, ax = plt.subplots(figsize=(10, 5.5 + 0.22 * len(lines)))
    for i, (label, (tot, bounded)) in enumerate(lines.items()):
        ax.plot(tot.index, tot.to_numpy(float), color=f"C{i % 10}", lw=1.2 if bounded else 1.6,
                ls="--" if bounded else "-", marker=MARKERS[i % len(MARKERS)], markevery=max(1, len(tot) // 6),
                ms=5, label=label + ("" if bounded else "  — left connections behind"))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.set_xlabel("seconds since the warm-up began (first repeat of each setting)")
    ax.set_ylabel("server connections")
    title = "Server connections over the load: bounded (dashed) or left behind (solid)"
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, -0.12), borderaxespad=0, frameon=False)
    return [save(fig, run.paths.charts, "connections_growth", title, None, "growth")]
