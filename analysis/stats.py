"""Intervals and significance for figures compared across settings or runs; numbers in, numbers out.

Intervals (Interval): over a setting's completed repeats,
* 5 or more: a 95 % bootstrap confidence interval of the median (scipy.stats.bootstrap, percentile method,
  BOOTSTRAP_RESAMPLES resamples, a fixed seed so a report rebuilds the same);
* 2 to 4: min-max (a bootstrap of so few values says nothing the range does not);
* 1: a 95 % bootstrap over the cell's 1-second blocks (the figure recomputed on seconds drawn with
  replacement), when the figure has per-second samples; none otherwise.

Tests (Test): two-sided Mann-Whitney U at ALPHA, exact (permutations, ties included) for small samples,
* on the per-repeat figures when both sides have at least MIN_REPEATS_TEST repeats (4 vs 4 is the smallest
  design whose exact p can fall below 0.05: 3 vs 3 bottoms out at 0.10);
* else on the per-second samples of every repeat pooled. Seconds are not independent and the spread
  between repeats is not in the test, so this basis is looser: the report names the basis of every verdict.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.stats import PermutationMethod, bootstrap, mannwhitneyu

ALPHA = 0.05
CONFIDENCE = 0.95
MIN_REPEATS_TEST = 4
MIN_REPEATS_BOOTSTRAP = 5
BOOTSTRAP_RESAMPLES = 2000
BLOCK_RESAMPLES = 400
SEED = 20261123
EXACT_LIMIT = 5_000  # arrangements up to which the test is exact (7 vs 7: 3,432); beyond, the normal approximation


@dataclass(frozen=True)
class Interval:
    center: float
    lo: float
    hi: float
    method: str

    @property
    def known(self) -> bool:
        return not (math.isnan(self.lo) or math.isnan(self.hi))


@dataclass(frozen=True)
class Test:
    p: float
    basis: str  # "repeats" | "per-second samples" | "" (no test possible)

    @property
    def significant(self) -> bool:
        return not math.isnan(self.p) and self.p < ALPHA


def _finite(values: Sequence[float] | np.ndarray) -> npt.NDArray[np.float64]:
    a: npt.NDArray[np.float64] = np.asarray(values, dtype=float)
    return a[np.isfinite(a)]


def interval(repeats: Sequence[float] | np.ndarray,
             block: Callable[[np.random.Generator], float] | None = None) -> Interval:
    """The figure over a setting's repeats (their median) and its interval (module docstring).

    `block(rng)` recomputes the figure on one resample of the single repeat's seconds; it is used only
    when there is exactly one repeat."""
    v = _finite(repeats)
    n = v.size
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, "")
    center = float(np.median(v))
    if n >= MIN_REPEATS_BOOTSTRAP:
        if np.ptp(v) == 0:
            return Interval(center, center, center, f"bootstrap 95% CI of the median over {n} repeats")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = bootstrap((v,), np.median, confidence_level=CONFIDENCE, n_resamples=BOOTSTRAP_RESAMPLES,
                            method="percentile", random_state=np.random.default_rng(SEED))
        ci = res.confidence_interval
        return Interval(center, float(ci.low), float(ci.high), f"bootstrap 95% CI of the median over {n} repeats")
    if n >= 2:
        return Interval(center, float(v.min()), float(v.max()), f"min-max over {n} repeats")
    if block is None:
        return Interval(center, math.nan, math.nan, "1 repeat: no interval")
    rng = np.random.default_rng(SEED)
    draws = _finite([block(rng) for _ in range(BLOCK_RESAMPLES)])
    if not draws.size:
        return Interval(center, math.nan, math.nan, "1 repeat: no interval")
    lo, hi = np.percentile(draws, [100 * (1 - CONFIDENCE) / 2, 100 * (1 + CONFIDENCE) / 2])
    return Interval(center, float(min(lo, center)), float(max(hi, center)),
                    "1 repeat: bootstrap 95% CI over 1-s blocks")


def _mwu(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided Mann-Whitney U. Small samples get the exact permutation distribution, ties included (scipy's
    default falls back to the normal approximation on ties, whose p for 4 vs 4 constants is 0.013 where no
    arrangement of 8 values can give less than 2/70 = 0.029)."""
    if np.unique(np.concatenate([a, b])).size == 1:
        return 1.0  # identical constants: no evidence of a difference (the test itself is undefined)
    exact = math.comb(a.size + b.size, a.size) <= EXACT_LIMIT
    method = PermutationMethod(n_resamples=np.inf) if exact else "asymptotic"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(mannwhitneyu(a, b, alternative="two-sided", method=method).pvalue)


def differ(a_repeats: Sequence[float] | np.ndarray, b_repeats: Sequence[float] | np.ndarray,
           a_seconds: Sequence[float] | np.ndarray | None = None,
           b_seconds: Sequence[float] | np.ndarray | None = None) -> Test:
    """Do two settings' figures differ? Mann-Whitney U on repeats, else on pooled per-second samples."""
    a, b = _finite(a_repeats), _finite(b_repeats)
    if a.size >= MIN_REPEATS_TEST and b.size >= MIN_REPEATS_TEST:
        return Test(_mwu(a, b), "repeats")
    sa = _finite(a_seconds if a_seconds is not None else [])
    sb = _finite(b_seconds if b_seconds is not None else [])
    if sa.size >= 3 and sb.size >= 3:
        return Test(_mwu(sa, sb), "per-second samples")
    return Test(math.nan, "")


@dataclass(frozen=True)
class Ranked:
    name: str
    rank: int  # 1 = best; settings sharing a rank are indistinguishable
    test: str  # the basis of the tests that placed it


def rank(centers: dict[str, float], tests: Callable[[str, str], Test], higher_is_better: bool) -> list[Ranked]:
    """Settings in rank groups, sorted best first by their figure. A setting starts a new group only when it
    differs significantly from every member of the current one (single linkage): two settings the test
    cannot tell apart always share a group, so no order is ever claimed between them (the price: a group
    may also hold two settings that do differ, through a chain of indistinguishable ones between)."""
    named = [(n, c) for n, c in centers.items() if not math.isnan(c)]
    named.sort(key=lambda nc: -nc[1] if higher_is_better else nc[1])
    out: list[Ranked] = []
    members: list[str] = []
    group = 0
    for name, _ in named:
        results = [tests(m, name) for m in members]
        basis = sorted({t.basis for t in results if t.basis})
        if not members or all(t.significant for t in results):
            members, group = [], group + 1
        members.append(name)
        out.append(Ranked(name, group, " and ".join(basis)))
    return out


def median_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """The median and a distribution-free interval for it: the order statistics whose ranks the binomial
    (n, 1/2) puts around the middle (the sign-test interval). Exact for any distribution; (nan, nan, nan)
    with no value, and the sample's extremes when n is too small for the confidence asked."""
    from scipy.stats import binom

    v = np.sort(_finite(values))
    n = v.size
    if n == 0:
        return math.nan, math.nan, math.nan
    k = int(binom.ppf((1 - confidence) / 2, n, 0.5))  # P(B < k) <= alpha/2: ranks k+1 .. n-k (1-based)
    lo, hi = (v[max(k - 1, 0)], v[min(n - k, n - 1)]) if k >= 1 else (v[0], v[-1])
    return float(np.median(v)), float(lo), float(hi)
