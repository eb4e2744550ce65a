"""analysis/stats.py: intervals by number of repeats, the test's basis, rank groups."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import bootstrap

from connbench.analysis import stats


def test_min_max_below_five_repeats():
    iv = stats.interval([12.0, 10.0, 15.0])
    assert (iv.center, iv.lo, iv.hi, iv.method) == (12.0, 10.0, 15.0, "min-max over 3 repeats")
    iv = stats.interval([3.0, 1.0, 2.0, 4.0])
    assert (iv.center, iv.lo, iv.hi) == (2.5, 1.0, 4.0)


def test_bootstrap_ci_of_the_median_from_five_repeats():
    v = [10.0, 11.0, 12.0, 13.0, 30.0, 14.0]
    iv = stats.interval(v)
    ref = bootstrap((np.array(v),), np.median, confidence_level=0.95, n_resamples=stats.BOOTSTRAP_RESAMPLES,
                    method="percentile", random_state=np.random.default_rng(stats.SEED)).confidence_interval
    assert (iv.lo, iv.hi) == (ref.low, ref.high)
    assert iv.center == 12.5 and iv.lo <= iv.center <= iv.hi and iv.hi < 30  # the outlier does not drag it
    assert iv.method == "bootstrap 95% CI of the median over 6 repeats"
    assert stats.interval(v) == iv  # a fixed seed: a rebuilt report says the same


def test_one_repeat_uses_the_block_resample_or_says_there_is_none():
    assert stats.interval([5.0]).method == "1 repeat: no interval" and math.isnan(stats.interval([5.0]).lo)
    iv = stats.interval([5.0], block=lambda rng: float(rng.choice([4.0, 6.0])))
    assert (iv.lo, iv.hi) == (4.0, 6.0) and iv.method == "1 repeat: bootstrap 95% CI over 1-s blocks"
    assert math.isnan(stats.interval([math.nan]).center)  # nothing completed: nothing claimed


def test_three_repeats_cannot_reach_significance_so_the_test_uses_seconds():
    a, b = [1.0, 2, 3], [4.0, 5, 6]
    assert stats.differ(a, b) == stats.Test(math.nan, "")  # no seconds given: no test at all
    t = stats.differ(a, b, a_seconds=[1.0, 1.1, 0.9, 1.2, 1.0], b_seconds=[2.0, 2.1, 1.9, 2.2, 2.0])
    assert t.basis == "per-second samples" and t.significant


def test_four_repeats_each_are_tested_on_repeats():
    t = stats.differ([1.0, 2, 3, 4], [5.0, 6, 7, 8], a_seconds=[1.0] * 9, b_seconds=[1.0] * 9)
    assert t.basis == "repeats" and t.p == pytest.approx(2 / 70) and t.significant
    assert stats.differ([2.0] * 4, [2.0] * 4).p == 1.0  # identical constants: no evidence


def _tests(groups: dict[str, list[float]]):
    return lambda a, b: stats.differ(groups[a], groups[b])


def test_rank_groups_never_order_indistinguishable_settings():
    g = {"fast": [100.0, 101, 102, 103], "fast2": [100.5, 101.5, 99.5, 102.5], "slow": [50.0, 51, 52, 53],
         "slowest": [10.0, 11, 12, 13]}
    centers = {k: float(np.median(v)) for k, v in g.items()}
    ranked = {r.name: r.rank for r in stats.rank(centers, _tests(g), higher_is_better=True)}
    assert ranked == {"fast": 1, "fast2": 1, "slow": 2, "slowest": 3}
    lower = {r.name: r.rank for r in stats.rank(centers, _tests(g), higher_is_better=False)}
    assert lower == {"slowest": 1, "slow": 2, "fast": 3, "fast2": 3}


def test_untestable_settings_share_a_rank():
    g = {"a": [10.0], "b": [20.0]}  # one repeat each and no seconds: no test, so no order is claimed
    assert {r.rank for r in stats.rank({"a": 10.0, "b": 20.0}, _tests(g), True)} == {1}


def test_ties_get_the_exact_p_not_the_normal_approximation():
    # every arrangement of 4 vs 4 constants: the best p is 2/70, never the approximation's 0.013
    assert stats.differ([6.0] * 4, [20.5] * 4).p == pytest.approx(2 / 70)
    # 3 vs 3 per-second counts that tie: exact p 0.10, not significant (the approximation said 0.047)
    t = stats.differ([1.0], [2.0], a_seconds=[5.0, 5, 5], b_seconds=[1.0, 1, 1])
    assert t.basis == "per-second samples" and t.p == pytest.approx(0.1) and not t.significant


def test_a_chain_of_indistinguishable_settings_is_one_group():
    # A vs B: p 0.69, B vs C: p 0.057, A vs C: p 0.029 -- C may not be ranked below B, so all share a group
    g = {"A": [10.0, 11, 12, 13], "B": [9.5, 10.5, 11.5, 12.5], "C": [6.0, 7, 8, 9.9]}
    assert stats.differ(g["A"], g["C"]).significant and not stats.differ(g["B"], g["C"]).significant
    centers = {k: float(np.median(v)) for k, v in g.items()}
    assert {r.rank for r in stats.rank(centers, _tests(g), True)} == {1}
