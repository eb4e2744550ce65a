"""What will break under transaction pooling: the session-state hazards the app's requests had (hazards.csv).

The app's wrapper classifies every statement it runs (connbench.sqlhazards) and says per request which kinds
it saw (requests.csv `hazards`), with an example the first time a worker sees a kind on a path. This works in
any cell, pooled or not: a hazard is one whatever the cell, and a direct cell tells before PgBouncer does.
Every request of a completed cell counts, warm-up included: a hazard that ran once is a hazard.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from connbench import results as R
from connbench.analysis.load import CellData, RunData
from connbench.contract import DROPPED, OK
from connbench.sqlhazards import KINDS

TRANSACTION_POOLING = "pgbouncer-transaction"


def _kinds(cell: CellData) -> pd.DataFrame:
    """(endpoint, kind, failed, error_class, examples) per request and kind, for a completed cell's requests."""
    df = cell.requests.df
    if not cell.completed or not len(df) or "hazards" not in df:
        return pd.DataFrame(columns=["endpoint", "kind", "error_class", "examples"])
    q = df[df["hazards"].fillna("").str.strip() != ""][["endpoint", "hazards", "error_class", "hazard_examples"]]
    q = q.assign(kind=q["hazards"].str.split()).explode("kind")
    return q[q["kind"].isin(list(KINDS))].rename(columns={"hazard_examples": "examples"})


def hazard_metrics(cell: CellData) -> dict[str, Any]:
    """summary.csv's hazard_requests (requests with any hazard) and hazard_kinds (space-separated)."""
    df = cell.requests.df
    if cell.version < 6 or "hazards" not in df:  # not recorded then: blank, never 0
        return {"hazard_requests": None, "hazard_kinds": None}
    marked = df["hazards"].fillna("").str.strip()
    kinds = sorted({k for v in marked[marked != ""] for k in v.split() if k in KINDS})
    return {"hazard_requests": int((marked != "").sum()), "hazard_kinds": " ".join(kinds)}


def _example(values: pd.Series, kind: str) -> str:
    for raw in values:
        if isinstance(raw, str) and raw:
            try:
                found = json.loads(raw).get(kind)
            except (ValueError, AttributeError):
                continue
            if isinstance(found, str) and found:
                return found[:200]
    return ""


def hazards_frame(run: RunData) -> pd.DataFrame:
    """hazards.csv's rows (R.HAZARDS_COLUMNS), most requests first."""
    parts = []
    for cell in run.cells:
        q = _kinds(cell)
        if len(q):
            pooled = cell.params.get("pooling") == TRANSACTION_POOLING
            failed = ~q["error_class"].fillna("").isin([OK, DROPPED])
            parts.append(q.assign(cell=cell.cell_id, pooled_failure=failed & pooled))
    if not parts:
        return pd.DataFrame(columns=list(R.HAZARDS_COLUMNS))
    q = pd.concat(parts, ignore_index=True)
    rows = []
    for (endpoint, kind), g in q.groupby(["endpoint", "kind"], sort=True):
        classes = sorted(set(g.loc[g["pooled_failure"], "error_class"]))
        rows.append({"endpoint": endpoint, "kind": kind, "requests": len(g), "cells": g["cell"].nunique(),
                     "example": _example(g["examples"], str(kind)),
                     "pooled_failures": int(g["pooled_failure"].sum()), "error_classes": " ".join(classes)})
    out = pd.DataFrame(rows, columns=list(R.HAZARDS_COLUMNS))
    return out.sort_values(["requests", "endpoint", "kind"], ascending=[False, True, True], kind="stable")


def write_hazards(run: RunData, frame: pd.DataFrame) -> None:
    R.write_text_atomic(run.paths.hazards, frame.to_csv(index=False))


@dataclass(frozen=True)
class PoolingVerdict:
    """The report's "Transaction pooling" section: safe, or what was seen, why it breaks and the fix."""

    safe: bool
    headline: str
    rows: list[dict[str, Any]]
    shim_note: str | None  # what the harness set that hid a hazard (DISABLE_SERVER_SIDE_CURSORS)


def verdict(run: RunData, frame: pd.DataFrame) -> PoolingVerdict | None:
    """None when no completed cell recorded hazards at all (a run older than schema 6, or no request logged)."""
    looked = [c for c in run.cells if c.completed and c.version >= 6 and len(c.requests.df)]
    if not looked:
        return None
    shim = None
    if any(c.params.get("pooling") == TRANSACTION_POOLING and c.params.get("server_side_cursors", "auto") == "auto"
           for c in looked):
        shim = ("In the pgbouncer-transaction cells connbench set DISABLE_SERVER_SIDE_CURSORS (server_side_cursors "
                "= \"auto\"), so QuerySet.iterator() ran client-side there; server_side_cursors = \"on\" shows "
                "what your settings would do.")
    if not len(frame):
        return PoolingVerdict(True, f"Safe: none of {sum(len(c.requests.df) for c in looked):,} requests in "
                                    f"{len(looked)} cells ran a statement that relies on session state.", [], shim)
    rows = []
    for r in frame.to_dict("records"):
        h = KINDS[r["kind"]]
        failed = (f"{r['pooled_failures']:,} failed under transaction pooling ({r['error_classes']})"
                  if r["pooled_failures"] else "")
        rows.append({"endpoint": r["endpoint"], "hazard": h.title, "requests": f"{r['requests']:,}",
                     "example": r["example"], "why": h.why, "fix": h.fix, "failed": failed})
    kinds, endpoints = frame["kind"].nunique(), frame["endpoint"].nunique()
    headline = (f"Not safe for transaction pooling: {kinds} kind{'s' if kinds != 1 else ''} of session-state "
                f"hazard across {endpoints} endpoint{'s' if endpoints != 1 else ''} "
                f"({len(frame)} endpoint-kind pair{'s' if len(frame) != 1 else ''}).")
    return PoolingVerdict(False, headline, rows, shim)
