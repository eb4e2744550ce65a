"""The per-cell charts as hand-built SVG (analysis/charts/svg.py, cell.py): ticks, escaping, step paths and log
ticks of the writer; and each per-cell chart on the fixture runs, read back as XML."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pandas as pd
import pytest

from connbench import results as R
from connbench.analysis.charts import cell as cell_charts
from connbench.analysis.charts import svg
from connbench.analysis.charts.common import PHASE_COLORS
from connbench.analysis.load import CellData, load_run
from tests.fixture_runs import copy_run

NS = {"s": "http://www.w3.org/2000/svg"}
FAULTED, PGB = "pool-direct_cma-600", "pool-pgbouncer-transaction_cma-0"  # run_a: a fault; PgBouncer
OPEN_LOG, OPEN_LIN = "pool-direct_ar-8p0", "pool-direct_ar-32p0"  # run_open: 3.25..1000 ms; 50..1000 ms


# -- the writer ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lo, hi, target, want", [
    (0, 6.75, 8, [0, 1, 2, 3, 4, 5, 6]),
    (0, 3.3, 8, [0, 0.5, 1, 1.5, 2, 2.5, 3]),
    (-0.55, 11.55, 10, [0, 2, 4, 6, 8, 10]),
    (0.1, 0.7, 3, [0.2, 0.4, 0.6]),
    (210, 221, 6, [210, 212, 214, 216, 218, 220]),
    (0, 2_000_000, 4, [0, 500_000, 1_000_000, 1_500_000, 2_000_000]),
])
def test_ticks_step_by_1_2_5_inside_the_range(lo, hi, target, want):
    got = svg.ticks(lo, hi, target)
    assert got == pytest.approx(want)
    step = got[1] - got[0]
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert round(mantissa, 9) in (1, 2, 5)
    assert len(got) - 1 <= target


def test_tick_labels_are_plain_decimals_never_scientific():
    assert [svg.tick_label(v, 0.1) for v in svg.ticks(0, 0.3, 3)] == ["0.0", "0.1", "0.2", "0.3"]
    assert [svg.tick_label(v, 500_000) for v in (0, 2e6)] == ["0", "2000000"]
    assert svg.tick_label(0.0002, 0.0001) == "0.0002"
    assert svg.ticks(-1, 1, 2) == [-1.0, 0.0, 1.0] and str(svg.ticks(-1, 1, 2)[1]) == "0.0"  # no "-0"
    assert svg.ticks(1, 1) == [1] and svg.ticks(math.nan, 1) == []


def test_log_ticks_at_powers_of_ten():
    assert svg.log_ticks(3.25, 1000) == [10, 100, 1000]
    assert svg.log_ticks(0.05, 0.2) == [0.1]
    assert [svg.tick_label(v, v) for v in svg.log_ticks(0.001, 1)] == ["0.001", "0.01", "0.1", "1"]
    lo, hi = svg.log_range(20, 150)  # holds one power of ten only: widened to the enclosing decades
    assert (lo, hi) == pytest.approx((10, 1000)) and svg.log_ticks(lo, hi) == [10, 100, 1000]
    lo, hi = svg.log_range(3.25, 1000)  # padded, not widened
    assert 2 < lo < 3.25 and 1000 < hi < 1500


def test_escaping_makes_any_text_well_formed_xml():
    assert svg.esc("""a<b>&"c'""") == "a&lt;b&gt;&amp;&quot;c&#39;"
    assert svg.esc("bad\x01\x1f\ud800") == "bad\ufffd\ufffd\ufffd"  # XML 1.0 cannot hold them, even escaped
    hostile = """</text><script>alert("x")</script>&\x00'"""
    plot = svg.Plot(hostile, xlabel=hostile, ylabel="y")
    plot.line([0, 1], [0, 1], "black", label=hostile)
    plot.vline(0.5, "#7b1fa2", text=hostile)
    root = ET.fromstring(plot.render().encode())
    assert root.find("s:script", NS) is None and not root.findall(".//s:script", NS)
    assert root.find("s:title", NS).text == hostile.replace("\x00", "\ufffd")


def test_a_step_path_holds_each_value_until_the_next_point():
    assert svg.step_points([0, 1, 3], [1, 3, 2]) == [(0, 1), (1, 1), (1, 3), (3, 3), (3, 2)]
    ident = svg.Scale(0, 10, 0, 10)
    assert svg.path_d(svg.step_points([0, 1, 3], [1, 3, 2]), ident, ident) == \
        "M0.0,1.0L1.0,1.0L1.0,3.0L3.0,3.0L3.0,2.0"
    assert svg.path_d([(0, 1), (1, math.nan), (2, 2), (3, 3)], ident, ident) == "M0.0,1.0M2.0,2.0L3.0,3.0"
    logy = svg.Scale(1, 100, 0, 2, log=True)
    assert svg.path_d([(0, 10), (1, 0), (2, 100)], ident, logy) == "M0.0,1.0M2.0,2.0"  # 0 has no logarithm


def test_stacked_steps_and_log_axis_render():
    plot = svg.Plot("t", "x", "y")
    plot.stack([0, 1, 2], [([1, 2, 1], "#2ca02c", "idle"), ([1, 0, 1], "#d62728", "active")])
    plot.ylog = False
    root = ET.fromstring(plot.render())
    areas = [p for p in root.iter(f"{{{NS['s']}}}path") if p.get("fill") in ("#2ca02c", "#d62728")]
    assert len(areas) == 2 and all(a.get("d").endswith("Z") for a in areas)
    logplot = svg.Plot("t", "x", "y")
    logplot.line([0, 1, 2], [3.25, 40, 1000], "black", "p50", marker=True)
    logplot.ylog = True
    assert {"10", "100", "1000"} <= set(_texts(ET.fromstring(logplot.render())))


# -- the per-cell charts ----------------------------------------------------------------------------------------
def _texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(f"{{{NS['s']}}}text")]


def _legend(root: ET.Element) -> list[str]:
    g = next(g for g in root.iter(f"{{{NS['s']}}}g") if g.get("class") == "legend")
    return _texts(g)


def _plot_box(root: ET.Element) -> tuple[float, float]:
    rect = root.find("s:clipPath/s:rect", NS)
    return float(rect.get("x")), float(rect.get("x")) + float(rect.get("width"))


def _cell(run: str, cell_id: str, tmp_path, max_connections: int | None = None) -> CellData:
    """A cell of a copied fixture run; max_connections: rewritten into its db.csv (every fixture's 20 is off
    the scale of its few connections)."""
    root = copy_run(run, tmp_path)
    if max_connections is not None:
        db = root / "cells" / cell_id / R.DB_CSV
        frame = pd.read_csv(db)
        frame["max_connections"] = max_connections
        frame.to_csv(db, index=False)
    return next(c for c in load_run(root).cells if c.cell_id == cell_id)


def _read(chart) -> ET.Element:
    assert chart.png == chart.svg and chart.svg.suffix == ".svg"  # the report shows the SVG itself
    assert chart.svg.read_text().startswith("<?xml")
    return ET.parse(chart.svg).getroot()


def _common(root: ET.Element, title: str, cell_id: str) -> list[str]:
    assert root.find("s:title", NS).text == title and cell_id in title
    legend = _legend(root)
    assert [label for _, label in PHASE_COLORS.values()] == legend[:3]  # the bands, shaded and named
    bands = [r for r in root.iter(f"{{{NS['s']}}}rect") if r.get("fill") in {c for c, _ in PHASE_COLORS.values()}]
    assert len(bands) >= 6  # three bands in the plot, three swatches in the legend
    left, right = _plot_box(root)
    g = next(g for g in root.iter(f"{{{NS['s']}}}g") if g.get("class") == "legend")
    assert float(g.find("s:rect", NS).get("x")) > right  # right of the plot, never over the curves
    return legend


def test_connections_chart(tmp_path):
    cell = _cell("run_a", FAULTED, tmp_path, max_connections=5)
    chart = cell_charts.connections_chart(cell, tmp_path / "charts")
    assert chart and chart.kind == "connections" and chart.cell_id == FAULTED
    assert chart.svg.name == f"connections_{FAULTED}.svg"
    root = _read(chart)
    legend = _common(root, chart.title, FAULTED)
    assert "server connections (total)" in legend and "max_connections = 5" in legend and "fault" in legend
    assert any(label.startswith("state: ") for label in legend)
    assert "fault:terminate_backends" in _texts(root)  # the marker's label, beside its line
    assert any(p.get("stroke") == cell_charts.FAULT_COLOR for p in root.iter(f"{{{NS['s']}}}path"))
    red = [p for p in root.iter(f"{{{NS['s']}}}path") if p.get("stroke") == "#d62728"]
    assert red and red[0].get("stroke-dasharray") == svg.DOTTED  # the max_connections line


def test_connections_chart_says_an_off_scale_limit_in_words(tmp_path):
    root = _read(cell_charts.connections_chart(_cell("run_a", FAULTED, tmp_path), tmp_path))
    assert "max_connections = 20 (off scale)" in _texts(root)
    assert not any(t.startswith("max_connections") for t in _legend(root))


def test_cell_ids_are_escaped_and_file_names_safe(tmp_path):
    cell = _cell("run_a", FAULTED, tmp_path)
    cell.cell_id = 'a<b>&"c/d'
    chart = cell_charts.latency_chart(cell, tmp_path)
    assert chart.svg.name == "latency_a_b_c_d.svg"
    assert _read(chart).find("s:title", NS).text.endswith(': a<b>&"c/d')


def test_latency_chart_closed_loop(tmp_path):
    cell = _cell("run_a", FAULTED, tmp_path)
    root = _read(cell_charts.latency_chart(cell, tmp_path))
    legend = _common(root, f"Response time percentiles over time: {FAULTED}", FAULTED)
    assert legend[3:] == ["response p50", "response p95", "response p99", "fault"]
    assert root.findall(".//s:circle", NS)  # the percentiles' markers


def test_latency_chart_open_model_dashed_service_time_and_log_scale(tmp_path):
    cell = _cell("run_open", OPEN_LOG, tmp_path)
    root = _read(cell_charts.latency_chart(cell, tmp_path))
    assert "service time p50 (from sending)" in _legend(root)
    assert [p for p in root.iter(f"{{{NS['s']}}}path") if p.get("stroke-dasharray") == svg.DASHED]
    assert {"10", "100", "1000"} <= set(_texts(root))  # 3.25..1000 ms: log scale, ticks at powers of ten
    lin = _read(cell_charts.latency_chart(_cell("run_open", OPEN_LIN, tmp_path / "b"), tmp_path))  # 20x: linear
    assert "100" not in _texts(lin) and "1000" in _texts(lin)


def test_pgbouncer_chart(tmp_path):
    run = load_run(copy_run("run_a", tmp_path))
    assert cell_charts.pgbouncer_chart(next(c for c in run.cells if c.cell_id == FAULTED), tmp_path) is None
    chart = cell_charts.pgbouncer_chart(next(c for c in run.cells if c.cell_id == PGB), tmp_path)
    legend = _common(_read(chart), chart.title, PGB)
    assert legend[3:] == ["clients (cl_active + cl_waiting)", "clients waiting", "server connections (sv_*)",
                          "PostgreSQL backends (sampled)"]


def test_a_rebuild_drops_the_old_per_cell_pngs_and_keeps_the_svgs(tmp_path, monkeypatch):
    from connbench.analysis import charts as charts_package

    for overview in ("comparison_chart", "predicted_chart", "churn_chart"):  # not the point: skipped, faster
        monkeypatch.setattr(charts_package, overview, lambda *a: None)
    run = copy_run("run_a", tmp_path)
    old = run / "charts" / f"connections_{FAULTED}.png"  # what the matplotlib charts left
    old.parent.mkdir()
    old.write_bytes(b"\x89PNG old")
    drawn = charts_package.draw_charts(run)
    assert not old.exists()
    assert sorted(p.name for p in old.parent.iterdir()) == sorted(c.svg.name for c in drawn) and len(drawn) == 7
