"""The Server-Timing breakdown of the median and the p95 request, on run_a's known timings."""

from __future__ import annotations

import numpy as np
import pytest

from connbench.analysis.charts.timing import breakdown, draw_timing, timing_rows
from connbench.analysis.load import load_run
from connbench.analysis.windows import measured_requests
from tests.fixture_runs import copy_run


def test_breakdown_is_the_mean_of_the_band_around_the_percentile(tmp_path):
    run = load_run(copy_run("run_a", tmp_path))
    cell = next(c for c in run.cells if c.cell_id == "pool-direct_cma-0")
    req = measured_requests(cell)  # answered: latencies 1..100 but 46; connect lat/2, db lat/4, app lat/8
    svc = np.array(sorted(set(range(1, 101)) - {46}), dtype=float)
    lo, hi = np.percentile(svc, [92.5, 97.5])
    band = svc[(svc >= lo) & (svc <= hi)]
    p95 = breakdown(req, 95)
    assert p95["connect"] == pytest.approx(band.mean() / 2) and p95["db"] == pytest.approx(band.mean() / 4)
    assert p95["pool"] == 0 and p95["outside"] == pytest.approx(band.mean() / 8)
    assert sum(p95[p] for p in ("connect", "pool", "db", "app", "outside")) == pytest.approx(p95["service"])


def test_one_pair_of_bars_per_setting_with_timing_and_none_without(tmp_path):
    run = load_run(copy_run("run_a", tmp_path))
    rows = timing_rows(run, {})
    groups = ("pool-direct_cma-0", "pool-direct_cma-600", "pool-pgbouncer-transaction_cma-0")
    assert [(s, n) for s, n, _ in rows] == [(g, n) for g in groups for n in ("p50", "p95")]
    assert draw_timing(run, {})[0].png.is_file()
    assert draw_timing(load_run(copy_run("run_b", tmp_path)), {}) == []  # not measured: no chart, not zeros
