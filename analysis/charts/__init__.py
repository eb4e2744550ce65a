"""Charts of a run under charts/: overview charts as PNG (for the report) and SVG (for papers), per-cell
charts as one SVG each (the report shows it).

Each chart is skipped, not drawn empty, when its data is missing (a failed cell, no PgBouncer).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from connbench.analysis.charts.cell import connections_chart, latency_chart, pgbouncer_chart
from connbench.analysis.charts.common import Chart
from connbench.analysis.charts.comparison import churn_chart, comparison_chart, groups_from_summary, predicted_chart
from connbench.analysis.load import RunData, load_run
from connbench.analysis.summarize import summary_frame


def draw_charts(run_dir: RunData | Path | str, summary: pd.DataFrame | None = None,
                groups: pd.DataFrame | None = None) -> list[Chart]:
    """Draw every chart the data allows into <run>/charts/; returns their descriptors (overview charts first).
    summary: one row per cell; groups: one row per setting with intervals (from summary when None)."""
    run = run_dir if isinstance(run_dir, RunData) else load_run(run_dir)
    out = run.paths.charts
    summary = summary_frame(run) if summary is None else summary
    groups = groups_from_summary(summary) if groups is None else groups
    charts = [comparison_chart(groups, out), predicted_chart(summary, out), churn_chart(summary, out)]
    for cell in (c for c in run.cells if c.root is not None and c.status != "skipped"):
        charts += [connections_chart(cell, out), latency_chart(cell, out), pgbouncer_chart(cell, out)]
    drawn = [c for c in charts if c is not None]
    keep = {p for c in drawn for p in (c.png, c.svg)}  # a per-cell chart's one SVG is both
    for stale in [*out.glob("*.png"), *out.glob("*.svg")]:  # charts/ is ours: drop what a rebuild no longer draws
        if stale not in keep:
            stale.unlink(missing_ok=True)
    return drawn
