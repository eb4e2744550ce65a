"""Settings across repeats: one row per group (summary_groups.csv), each figure with its interval and the
settings ranked into groups that are significantly different (analysis/stats.py says how).

Per-second samples (seconds()): the measure window [m0, m1) cut into whole 1-second bins from m0; the
figures recomputed per bin: rps the requests sent in it (by t_intended, dropped ones left out), lat_p* the
percentile of their response times, churn_per_s db.csv's cumulative sessions interpolated at the bin's
edges, conn_peak the largest server-connection total sampled in it. They feed the single-repeat interval
(bootstrap over bins) and the test when a side has fewer than stats.MIN_REPEATS_TEST repeats.

Rank: closed-loop runs rank on req/s (higher is better); when every cell has an offered rate (open model,
where req/s is what was offered) on p95 response time (lower is better). Only settings under the same load
(LOAD_KNOBS and the mix) are ranked against each other: rank_within names the load level.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd

from connbench import results as R
from connbench.analysis import stats
from connbench.analysis.load import CellData, RunData
from connbench.analysis.windows import connection_totals, measured_requests
from connbench.scenario.knobs import CLOSED_ONLY, LOAD_KNOBS, OPEN_ONLY

SUMMARY_COLUMNS = R.SUMMARY_COLUMNS

# figure -> (per-second key, percentile or None)
FIGURES: dict[str, tuple[str, float | None]] = {
    "rps": ("rps", None), "lat_p50": ("lat", 50), "lat_p95": ("lat", 95), "lat_p99": ("lat", 99),
    "churn_per_s": ("churn", None), "conn_peak": ("conn", None),
}
assert tuple(FIGURES) == R.INTERVAL_FIGURES
HIGHER_IS_BETTER = {"rps": True, "lat_p95": False}


def applies(knob: str, row: dict[str, Any]) -> bool:
    """Does this setting's load model use the knob, and has it a value? A matrix mixing open and closed cells
    varies knobs some cells ignore: arrival_rate (NaN) on a closed cell, the default users on an open one."""
    if knob not in OPEN_ONLY + CLOSED_ONLY:
        return True
    v, rate = row.get(knob), row.get("arrival_rate")
    open_model = rate is not None and not pd.isna(rate)
    return knob in (OPEN_ONLY if open_model else CLOSED_ONLY) and v is not None and not pd.isna(v)


def _plain(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


@dataclass
class Seconds:
    """One cell's measure window in 1-second bins."""
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    lat: list[np.ndarray] = field(default_factory=list)
    churn: np.ndarray = field(default_factory=lambda: np.zeros(0))
    conn: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def samples(self, figure: str) -> np.ndarray:
        key, q = FIGURES[figure]
        if key == "rps":
            return self.counts.astype(float)
        if key == "lat":
            return np.array([np.percentile(v, cast(float, q)) if v.size else np.nan for v in self.lat])
        return self.churn if key == "churn" else self.conn

    def block(self, figure: str) -> Callable[[np.random.Generator], float] | None:
        """The figure recomputed on the window's seconds drawn with replacement (None: no such resample)."""
        key, q = FIGURES[figure]
        n = len(self.counts)
        if n < 2 or key == "conn":  # a peak is a count, exact; a resampled max says nothing more
            return None
        if key == "rps":
            return lambda rng: float(self.counts[rng.integers(0, n, n)].mean())
        if key == "churn":
            return (lambda rng: float(self.churn[rng.integers(0, n, n)].mean())) if len(self.churn) == n else None

        def lat(rng: np.random.Generator) -> float:
            pooled = np.concatenate([self.lat[i] for i in rng.integers(0, n, n)])
            return float(np.percentile(pooled, cast(float, q))) if pooled.size else np.nan
        return lat


def seconds(cell: CellData) -> Seconds:
    m = cell.phase("measure")
    if not cell.completed or not m or m[1] - m[0] < 1:
        return Seconds()
    n = int(np.floor(m[1] - m[0]))
    edges = m[0] + np.arange(n + 1)
    req = measured_requests(cell)
    idx = np.floor(req["t_intended"].to_numpy(float) - m[0]).astype(int)
    keep = (idx >= 0) & (idx < n)
    idx, lat = idx[keep], req["latency_ms"].to_numpy(float)[keep]
    out = Seconds(counts=np.bincount(idx, minlength=n), lat=[lat[idx == i] for i in range(n)])
    s = cell.csv(R.DB_CSV)[["t", "sessions"]].dropna().sort_values("t")
    if len(s) >= 2:
        out.churn = np.diff(np.interp(edges, s["t"].to_numpy(float), s["sessions"].to_numpy(float)))
    tot = connection_totals(cell)
    if len(tot):
        b = np.floor(tot.index.to_numpy(float) - m[0]).astype(int)
        ok = (b >= 0) & (b < n)
        out.conn = pd.Series(tot.to_numpy(float)[ok]).groupby(b[ok]).max().to_numpy(float)
    return out


def rank_figure(summary: pd.DataFrame) -> str:
    done = summary[summary["status"] == "completed"]
    open_model = len(done) > 0 and "offered_rps" in done and done["offered_rps"].notna().all()
    return "lat_p95" if open_model else "rps"


def _param_columns(summary: pd.DataFrame) -> list[str]:
    return [c for c in summary.columns if c not in SUMMARY_COLUMNS and not c.startswith("err_")]


MEDIANS = ("conn_plateau", "conn_held", "predicted_connections", "predicted_connections_max", "pgb_clients_peak",
           "pgb_servers_peak", "machine_cpu_pct", "new_conn_per_s", "new_conn_share", "connect_cost_ms",
           "connect_s_per_s", "conn_rise_per_s", "inflight_max", "connect_new_p50",
           "server_setup_p50")  # per setting, no interval
# per setting, across its repeats: the new-connection cost's interval from the lowest repeat's bound to the
# highest's, and the connections it rests on
SPANS = (("connect_new_lo", "min"), ("connect_new_hi", "max"), ("connect_new_n", "sum"))


class Settings:
    """Each group's completed summary rows and per-second samples: what its figures are tested on."""

    def __init__(self, run: RunData, summary: pd.DataFrame):
        secs = {c.cell_id: seconds(c) for c in run.cells}
        # the matrix's axes in the scenario's order: what tells one setting from another in words
        self.axes: list[str] = list(dict.fromkeys(k for c in run.cells for k in c.axes))
        self.done: dict[str, pd.DataFrame] = {}
        self.seconds: dict[str, list[Seconds]] = {}
        for group, g in summary.groupby("group", sort=False):
            done = g[g["status"] == "completed"]
            self.done[str(group)] = done
            self.seconds[str(group)] = [secs.get(cid, Seconds()) for cid in done["cell_id"]]

    def values(self, group: str, fig: str) -> np.ndarray:
        done = self.done[group]
        return pd.to_numeric(done[fig], errors="coerce").to_numpy(float) if fig in done else np.zeros(0)

    def samples(self, group: str, fig: str) -> np.ndarray:
        return np.concatenate([c.samples(fig) for c in self.seconds[group]] or [np.zeros(0)])

    def test(self, a: str, b: str, fig: str) -> stats.Test:
        return stats.differ(self.values(a, fig), self.values(b, fig), self.samples(a, fig), self.samples(b, fig))


def groups_frame(run: RunData, summary: pd.DataFrame, settings: Settings | None = None) -> pd.DataFrame:
    """One row per group: knobs, each figure's median over completed repeats with _lo/_hi, the interval
    method, rank (1 = best, shared = indistinguishable), the test basis, machine_saturated in any repeat."""
    settings = settings or Settings(run, summary)
    params = _param_columns(summary)
    rows: list[dict[str, Any]] = []
    for group, g in summary.groupby("group", sort=False):
        done, cells = settings.done[str(group)], settings.seconds[str(group)]
        row: dict[str, Any] = {"group": group, "cells": len(g), "completed": len(done)}
        row.update({c: g[c].iloc[0] for c in params})
        methods = set()
        for fig in FIGURES:
            vals = pd.to_numeric(done[fig], errors="coerce").to_numpy(float) if fig in done else np.zeros(0)
            block = cells[0].block(fig) if len(cells) == 1 else None
            iv = stats.interval(vals, block)
            row.update({fig: iv.center, f"{fig}_lo": iv.lo, f"{fig}_hi": iv.hi})
            if iv.method and (fig == "rps" or iv.known):
                methods.add(iv.method)
        row["interval_method"] = "; ".join(sorted(methods))
        for col in MEDIANS:
            v = pd.to_numeric(done[col], errors="coerce").dropna() if col in done else pd.Series(dtype=float)
            row[col] = float(v.median()) if len(v) else np.nan
        for col, how in SPANS:
            v = pd.to_numeric(done[col], errors="coerce").dropna() if col in done else pd.Series(dtype=float)
            row[col] = float(getattr(v, how)()) if len(v) else np.nan
        bounded = done["conn_bounded"].dropna() if "conn_bounded" in done else pd.Series(dtype="boolean")
        row["conn_bounded"] = bool(bounded.astype(bool).all()) if len(bounded) else None  # a leak in any repeat
        said = done["predicted_bounded"].dropna() if "predicted_bounded" in done else pd.Series(dtype="boolean")
        row["predicted_bounded"] = bool(said.iloc[0]) if len(said) else None
        sat = done["machine_saturated"] if "machine_saturated" in done else pd.Series(dtype="boolean")
        row["machine_saturated"] = bool(sat.fillna(False).astype(bool).any()) if len(done) else None
        gen = done["generator_saturated"] if "generator_saturated" in done else pd.Series(dtype="boolean")
        row["generator_saturated"] = bool(gen.fillna(False).astype(bool).any()) if len(done) else None
        rows.append(row)
    out = pd.DataFrame(rows)
    if not len(out):
        return out
    fig = rank_figure(summary)
    # settings are ranked only against settings under the same load: a lighter load would simply win
    load = [c for c in out.columns if (c in LOAD_KNOBS or c.startswith("mix_")) and out[c].map(str).nunique() > 1]
    within = pd.Series([", ".join(f"{k}={_plain(r[k])}" for k in load if applies(k, r))
                        for r in out.to_dict("records")], index=out.index, dtype=str)
    by_name: dict[str, stats.Ranked] = {}
    for _, part in out.groupby(within, sort=False):
        ranked = stats.rank(dict(zip(part["group"].astype(str), part[fig].astype(float), strict=True)),
                            lambda a, b: settings.test(a, b, fig), HIGHER_IS_BETTER[fig])
        by_name.update({r.name: r for r in ranked})
    out["rank_within"] = within
    out["rank_by"] = fig
    out["rank"] = [by_name[g].rank if g in by_name else pd.NA for g in out["group"].astype(str)]
    out["rank"] = out["rank"].astype("Int64")
    out["rank_test"] = [by_name[g].test if g in by_name else "" for g in out["group"].astype(str)]
    return out


INTERVAL_COLUMNS = tuple(f"{f}_{side}" for f in R.INTERVAL_FIGURES for side in ("lo", "hi")) + (
    "interval_method", "rank")


def with_intervals(summary: pd.DataFrame, groups: pd.DataFrame) -> pd.DataFrame:
    """summary.csv's rows with their setting's interval (<figure>_lo/_hi), method and rank filled in, in the
    columns summary_frame already placed."""
    cols = [c for c in INTERVAL_COLUMNS if c in groups]
    if not len(groups) or not cols:
        return summary
    merged = summary.drop(columns=[c for c in cols if c in summary]).merge(
        groups[["group", *cols]], on="group", how="left")
    merged.index = summary.index
    return merged[[c for c in summary.columns if c in merged] + [c for c in merged if c not in summary]]
