"""Stale connections: what the requests right after each fault saw, and what Django's health check costs.

A fault's effect on a persistent connection shows on the next request that uses it: a connection the server (or
PgBouncer) closed while idle is handed out dead unless something checks it first. The window starts when
requests meet the fault: the fault itself, or a pause's end (fault:resume), since nothing is sent during one.
From events.csv and requests.csv alone.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from connbench import results as R
from connbench.analysis.findings import num
from connbench.analysis.load import CellData, RunData
from connbench.analysis.stats import median_interval

AFTER_S = 2.0  # a failed request this soon after the fault is taken as the fault's doing


@dataclass(frozen=True)
class Aftermath:
    """One setting's requests in the AFTER_S seconds after one kind of fault, over its completed repeats."""

    group: str
    action: str
    faults: int  # how many times it fired (one per repeat, usually)
    requests: int
    failed: int
    classes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckCost:
    """Django's health check (CONN_HEALTH_CHECKS) in one setting: its round trip per reused request."""

    group: str
    checks: int  # requests that ran one
    median_ms: float
    lo_ms: float
    hi_ms: float
    caught: int  # checks that found the connection dead: the request reconnected instead of failing


def _windows(cell: CellData) -> list[tuple[str, float, float]]:
    """(action, from, to) for each fault: the requests sent then meet it. A pause's window opens at its start
    (nothing is sent during one; the harness marks its end a moment after the generator resumes) and closes
    AFTER_S after its end."""
    ev = cell.csv(R.EVENTS_CSV)
    if not len(ev):
        return []
    ev = ev[ev["kind"].astype(str).str.startswith("fault:")].sort_values("t")
    out: list[tuple[str, float, float]] = []
    for kind, t in zip(ev["kind"].astype(str), ev["t"].astype(float), strict=True):
        if kind == R.FAULT_RESUME:
            if out and out[-1][0] == "pause":
                out[-1] = ("pause", out[-1][1], t + AFTER_S)
            continue
        out.append((kind.removeprefix("fault:"), t, t + AFTER_S))
    return out


def cell_aftermath(cell: CellData) -> list[tuple[str, int, int, Counter[str]]]:
    """Per fault in the cell: (action, requests, failed, classes) sent in its window."""
    df = cell.requests.df
    out = []
    for action, t0, t1 in _windows(cell):
        w = df[(df["t_intended"] >= t0) & (df["t_intended"] < t1)]
        bad = w[w["error_class"].astype(str) != ""]
        out.append((action, len(w), len(bad), Counter(bad["error_class"].astype(str))))
    return out


def aftermath(run: RunData) -> list[Aftermath]:
    acc: dict[tuple[str, str], list[Any]] = {}
    for cell in run.cells:
        if not cell.completed:
            continue
        for action, n, failed, classes in cell_aftermath(cell):
            a = acc.setdefault((str(cell.group), action), [0, 0, 0, Counter()])
            a[0] += 1
            a[1] += n
            a[2] += failed
            a[3].update(classes)
    return [Aftermath(g, act, f, n, bad, dict(cls)) for (g, act), (f, n, bad, cls) in acc.items()]


def check_costs(run: RunData) -> list[CheckCost]:
    by_group: dict[str, list[pd.DataFrame]] = {}
    for cell in run.cells:
        df = cell.requests.df
        if cell.completed and "check_ms" in df:
            by_group.setdefault(str(cell.group), []).append(df[df["check_ms"].notna()])
    out = []
    for group, frames in by_group.items():
        rows = pd.concat(frames)
        if not len(rows):
            continue
        ok = rows[(rows["new_conn"] == 0) & (rows["error_class"].astype(str) == "")]
        values = ok["check_ms"].to_numpy(dtype=float) if len(ok) else np.zeros(0)
        med, lo, hi = median_interval(values) if len(values) else (float("nan"),) * 3
        out.append(CheckCost(group, len(rows), med, lo, hi, int((rows["new_conn"] == 1).sum())))
    return out


def sentences(run: RunData) -> list[str]:
    """The findings: which settings handed out a dead connection after each kind of fault, and the checks' cost."""
    out = []
    by_action: dict[str, list[Aftermath]] = {}
    for a in aftermath(run):
        by_action.setdefault(a.action, []).append(a)
    for action, rows in sorted(by_action.items()):
        parts = []
        for a in sorted(rows, key=lambda r: r.group):
            cls = ", ".join(f"{k} {v:,}" for k, v in sorted(a.classes.items()))
            parts.append(f"{a.group}: {a.failed:,} of {a.requests:,} failed"
                         + (f" ({cls})" if cls else ""))
        when = "the pause's end" if action == "pause" else action
        out.append(f"Dead connections handed out after {when} (requests sent in the {AFTER_S:g} s after it): "
                   + "; ".join(parts) + ".")
    for c in sorted(check_costs(run), key=lambda c: c.group):
        if np.isnan(c.median_ms):
            continue
        caught = (f"; {c.caught:,} found the connection dead and reconnected instead of failing" if c.caught
                  else "; none found a dead connection")
        out.append(f"CONN_HEALTH_CHECKS in {c.group}: {num(c.median_ms)} ms per reused request "
                   f"(median of {c.checks:,} checks, 95% CI {num(c.lo_ms)}–{num(c.hi_ms)} ms){caught}.")
    return out
