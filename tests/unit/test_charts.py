"""Overview charts: one colour per pooling mode in every chart, error
bars from the per-setting intervals, a unit on every axis, no label over a legend or another label.

Frames are built here with known numbers; figures are inspected as saved (plt.close captured)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgba
from matplotlib.legend import Legend

from connbench import results as R
from connbench.analysis import charts as charts_package
from connbench.analysis.charts import common as charts
from connbench.analysis.charts import draw_charts
from connbench.analysis.charts.common import POOLING_COLORS, pooling_color
from connbench.analysis.charts.comparison import (
    churn_chart,
    comparison_chart,
    comparison_figure,
    groups_from_summary,
    predicted_chart,
)
from connbench.analysis.charts.hockey import draw_hockey
from connbench.analysis.values import cma_label
from tests.fixture_runs import copy_run

POOLINGS = list(POOLING_COLORS)
CMAS = (0, 600, None)
UNIT = re.compile(r"\([^)]+\)|requests/s|\bms\b|connections")


def _groups() -> pd.DataFrame:
    """Every pooling x CONN_MAX_AGE; every rps and p95 distinct, so a bar's height names its row. The
    second CONN_MAX_AGE has no interval (NaN lo/hi), and None comes as float NaN in one row, "none" in another."""
    rows = []
    for i, pool in enumerate(POOLINGS):
        for j, cma in enumerate(CMAS):
            rps, p95 = 100.0 + 10 * i + j, 20.0 + 5 * i + j
            row = {"group": f"pool-{pool}_cma-{cma}", "completed": 3, "pooling": pool,
                   "conn_max_age": ("none" if i % 2 else np.nan) if cma is None else cma,
                   "interval_method": "min-max over 3 repeats"}
            for f in R.INTERVAL_FIGURES:
                v = {"rps": rps, "lat_p95": p95}.get(f, 1.0)
                lo, hi = (np.nan, np.nan) if j == 1 else (v - 1 - i, v + 2 + j)
                row |= {f: v, f"{f}_lo": lo, f"{f}_hi": hi}
            rows.append(row)
    return pd.DataFrame(rows)


def _summary() -> pd.DataFrame:
    """Six cells (labels are drawn up to six) crowded together: near-equal churn and p50, plateau and prediction."""
    rows = []
    for k, (pool, cma) in enumerate([(p, c) for p in POOLINGS[:3] for c in (0, 600)]):
        rows.append({"cell_id": f"pool-{pool}_cma-{cma}", "group": f"pool-{pool}_cma-{cma}", "repeat": 1,
                     "status": "completed", "pooling": pool, "conn_max_age": cma, "rps": 50.0 + k,
                     "lat_p50": 2.0 + 0.05 * k, "lat_p95": 9.0 + k, "churn_per_s": 0.05 * (k % 2),
                     "conn_plateau": 4.0 + 0.1 * k, "conn_peak": 6.0, "predicted_connections": 4.0})
    return pd.DataFrame(rows)


def _open_summary() -> pd.DataFrame:
    """Open-model cells: two poolings x two CONN_MAX_AGE x three offered rates (four hockey lines)."""
    rows = []
    for k, pool in enumerate(POOLINGS[:2]):
        for cma in (0, 600):
            for rate in (8.0, 16.0, 32.0):
                cid, slow = f"pool-{pool}_cma-{cma}_ar-{rate:g}", (1 - k) * rate  # direct slower
                rows.append({"cell_id": cid, "group": cid, "status": "completed", "offered_rps": rate,
                             "lat_p50": rate / 4 + cma / 600 + slow / 4, "lat_p99": rate + cma / 100 + slow,
                             "generator_lagged": False,
                             "dropped": 0, "pooling": pool, "conn_max_age": cma, "arrival_rate": rate})
    return pd.DataFrame(rows)


@pytest.fixture
def saved(monkeypatch):
    """Figures the chart functions saved, still open (their plt.close captured); closed afterwards."""
    figs, close = [], charts.plt.close
    monkeypatch.setattr(charts.plt, "close", figs.append)
    yield figs
    for fig in figs:
        close(fig)


def _overlap(a, b) -> bool:  # more than half a pixel both ways: touching is not covering
    return min(a.x1, b.x1) - max(a.x0, b.x0) > 0.5 and min(a.y1, b.y1) - max(a.y0, b.y0) > 0.5


def _assert_readable(fig) -> None:
    """No legend over any text or point, no two labels over each other, a unit on every numeric axis."""
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    legends = [a for ax in fig.axes for a in ax.get_children() if isinstance(a, Legend)] + fig.legends
    assert legends, "every overview chart has a legend"
    labels = [t for ax in fig.axes for t in [*ax.texts, ax.title, ax.xaxis.label, ax.yaxis.label]] + fig.texts
    labels = [t for t in labels if t.get_visible() and t.get_text().strip()]
    ticks = [t for ax in fig.axes for t in [*ax.get_xticklabels(), *ax.get_yticklabels()] if t.get_text()]
    boxes = {t: t.get_window_extent(r) for t in labels + ticks}
    points = [xy for ax in fig.axes for c in ax.collections for xy in ax.transData.transform(c.get_offsets())]
    for lg in legends:
        for t in labels + ticks:
            assert not _overlap(lg.get_window_extent(r), boxes[t]), f"legend over {t.get_text()!r}"
        assert not any(lg.get_window_extent(r).contains(*xy) for xy in points), "legend over a point"
    for i, a in enumerate(labels):
        for b in labels[i + 1:] + ticks:
            assert not _overlap(boxes[a], boxes[b]), f"{a.get_text()!r} over {b.get_text()!r}"
    for ax in fig.axes:
        assert ax.get_xlabel().strip() and ax.get_ylabel().strip()
        assert UNIT.search(ax.get_ylabel()), ax.get_ylabel()
        if not any(re.search("[a-z]{2}", t.get_text()) for t in ax.get_xticklabels()):  # categories: no unit
            assert UNIT.search(ax.get_xlabel()), ax.get_xlabel()


def _bars(ax) -> list:
    return [p for p in ax.patches if np.isfinite(p.get_height()) and p.get_height() > 0]


def _segments(ax) -> dict[float, tuple[float, float]]:
    """Error-bar lines by x: (bottom, top) in data units."""
    return {round(float(s[0][0]), 9): (float(s[:, 1].min()), float(s[:, 1].max()))
            for c in ax.collections if isinstance(c, LineCollection) for s in c.get_segments()}


def test_pooling_colors_fixed_distinct_and_grey_for_unknown():
    assert POOLINGS == ["direct", "django-pool", "pgbouncer-transaction", "pgbouncer-session", "dj-db-conn-pool"]
    assert len({to_rgba(pooling_color(p)) for p in POOLINGS}) == 5
    grey = to_rgba(pooling_color("something-new"))
    assert grey[0] == grey[1] == grey[2] and grey not in {to_rgba(pooling_color(p)) for p in POOLINGS}


def test_conn_max_age_spellings_are_one_setting():
    assert {cma_label(v) for v in (600, 600.0, "600")} == {"600"}
    assert {cma_label(v) for v in (None, np.nan, "none", "None")} == {"none"}


def test_comparison_error_bars_span_each_settings_interval():
    groups = _groups()
    fig = comparison_figure(groups)
    try:
        for ax, f in zip(fig.axes[:2], ("rps", "lat_p95"), strict=True):
            segs, bars = _segments(ax), _bars(ax)
            assert len(bars) == len(groups)
            assert len(segs) == groups[f"{f}_lo"].notna().sum()  # no interval, no error bar
            for bar in bars:
                row = groups[np.isclose(groups[f], bar.get_height())].iloc[0]
                x = round(bar.get_x() + bar.get_width() / 2, 9)
                if np.isnan(row[f"{f}_lo"]):
                    assert x not in segs
                else:
                    assert segs[x] == pytest.approx((row[f"{f}_lo"], row[f"{f}_hi"]))
                assert bar.get_facecolor() == to_rgba(pooling_color(row["pooling"]))
            fig.canvas.draw()
            assert len(ax.texts) == len(bars)  # room for every value label: none dropped
            for t in ax.texts:  # each above its bar and its error bar's top
                bar = next(b for b in bars if np.isclose(b.get_x() + b.get_width() / 2, t.xy[0]))
                top = max(bar.get_height(), segs.get(round(t.xy[0], 9), (0, 0))[1])
                assert t.get_window_extent().y0 > ax.transData.transform((t.xy[0], top))[1]
        caption = " ".join(t.get_text() for t in fig.texts)
        assert "error bars: min-max over 3 repeats" in caption
        _assert_readable(fig)
    finally:
        charts.plt.close(fig)


def test_comparison_one_hatch_per_conn_max_age_and_its_legend():
    fig = comparison_figure(_groups())
    try:
        ax = fig.axes[0]
        hatch = {}
        for bar in _bars(ax):
            hatch.setdefault(bar.get_hatch() or "", set()).add(round(bar.get_height()) % 10)
        assert len(hatch) == 3  # 0, 600 and None (NaN and "none" alike): three hatches, colour stays pooling
        legend = fig.axes[1].get_legend()
        assert [t.get_text() for t in legend.get_texts()] == ["0", "600", "none"]
        assert "CONN_MAX_AGE" in legend.get_title().get_text()
    finally:
        charts.plt.close(fig)


def test_comparison_not_drawn_when_a_bar_would_mix_settings():
    groups = pd.concat([_groups(), _groups().assign(group=lambda g: g["group"] + "_ar-16")])
    assert comparison_figure(groups) is None  # another knob (arrival_rate) varies
    assert comparison_figure(_groups().assign(completed=0)) is None


def test_groups_from_summary_median_and_min_max():
    summary = pd.DataFrame({"group": ["a"] * 3 + ["b"], "status": ["completed"] * 3 + ["completed"],
                            "pooling": ["direct"] * 3 + ["django-pool"], "conn_max_age": [0, 0, 0, None],
                            "rps": [10.0, 13.0, 11.0, 7.0], "lat_p95": [5.0, np.nan, 9.0, 3.0]})
    g = groups_from_summary(summary).set_index("group")
    assert (g.loc["a", "rps"], g.loc["a", "rps_lo"], g.loc["a", "rps_hi"]) == (11.0, 10.0, 13.0)
    assert (g.loc["a", "lat_p95"], g.loc["a", "lat_p95_lo"], g.loc["a", "lat_p95_hi"]) == (7.0, 5.0, 9.0)
    assert g.loc["a", "interval_method"] == "min-max over 3 repeats" and g.loc["a", "completed"] == 3
    assert g.loc["b", "rps"] == 7.0 and np.isnan(g.loc["b", "rps_lo"]) and np.isnan(g.loc["b", "rps_hi"])
    assert np.isnan(g.loc["b", "churn_per_s"])  # a figure the summary lacks


def test_chart_files_and_one_colour_per_pooling_everywhere(tmp_path, saved):
    summary, groups = _summary(), _groups()
    drawn = [comparison_chart(groups, tmp_path), predicted_chart(summary, tmp_path), churn_chart(summary, tmp_path),
             *draw_hockey(SimpleNamespace(paths=SimpleNamespace(charts=tmp_path)), _open_summary())]
    assert [c.kind for c in drawn] == ["comparison", "predicted", "churn", "hockey"]
    for c in drawn:
        assert c.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and c.svg.read_text().lstrip().startswith("<?xml")
    compare, predicted, churn, hockey = saved
    ticks = [t.get_text() for t in compare.axes[0].get_xticklabels()]
    for bar in _bars(compare.axes[0]):
        pool = ticks[round(bar.get_x() + bar.get_width() / 2)]
        assert bar.get_facecolor() == to_rgba(pooling_color(pool))
    for fig in (predicted, churn):
        pooled = [c for c in fig.axes[0].collections if (c.get_gid() or "").startswith("pooling=")]
        assert {c.get_gid() for c in pooled} == {f"pooling={p}" for p in POOLINGS[:3]}
        for c in pooled:
            assert tuple(c.get_facecolor()[0]) == to_rgba(pooling_color(c.get_gid().split("=")[1]))
    lines = {ln.get_label(): ln for ln in hockey.axes[0].get_lines() if not ln.get_label().startswith("_")}
    assert len(lines) == 4
    for label, ln in lines.items():
        assert to_rgba(ln.get_color()) == to_rgba(pooling_color(re.search(r"pooling=([\w-]+)", label)[1]))
    for pool in POOLINGS[:2]:  # two lines per pooling: same colour, told apart by their markers
        assert len({ln.get_marker() for label, ln in lines.items() if f"pooling={pool}," in label}) == 2


def test_every_overview_chart_is_readable(tmp_path, saved):
    summary = _summary()
    comparison_chart(_groups(), tmp_path)
    predicted_chart(summary, tmp_path)
    churn_chart(summary, tmp_path)
    draw_hockey(SimpleNamespace(paths=SimpleNamespace(charts=tmp_path)), _open_summary())
    assert len(saved) == 4
    for fig in saved:
        _assert_readable(fig)
    assert all(len(fig.axes[0].texts) == 6 for fig in saved[1:3])  # every cell labelled: none dropped


def test_the_crowded_fixture_would_overlap_without_the_layout(tmp_path, saved, monkeypatch):
    """The readability test can fail: with labels left where they are first put, they collide."""
    monkeypatch.setattr(charts, "declutter", lambda fig: False)
    churn_chart(_summary(), tmp_path)
    with pytest.raises(AssertionError, match="over"):
        _assert_readable(saved[0])


def test_draw_charts_builds_its_own_groups(tmp_path, monkeypatch):
    for per_cell in ("connections_chart", "latency_chart", "pgbouncer_chart"):  # not the point: skipped, faster
        monkeypatch.setattr(charts_package, per_cell, lambda cell, out: None)
    run = copy_run("run_c", tmp_path)  # four repeats of one setting: min-max intervals
    charts_ = draw_charts(run)
    assert [c.kind for c in charts_] == ["comparison", "churn"]
    assert "min-max over 4 repeats" in charts_[0].svg.read_text()
