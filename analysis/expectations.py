"""Evaluate a scenario's [[expect]] claims against summary.csv: pass/fail with the measured value.

Reads only files: the manifest (the scenario as run, its `expect` list) and the summary. Cells are
selected on the parameters they stored, as they are. Writes expectations.json, which the report shows
and `connbench run/report` turn into the exit code.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypedDict

import pandas as pd
from pydantic import ValidationError

from connbench import results as R
from connbench.analysis.load import RunData
from connbench.scenario.knobs import Expect


class ExpectationResult(TypedDict):
    """One evaluated limit of one expectation in one cell: a row of expectations.json."""

    cell_id: str
    name: str
    check: str
    measured: float | bool | str | None
    limit: str
    passed: bool | None


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _checks(e: Expect, row: dict[str, Any]) -> list[tuple[str, float | None, str, bool | None]]:
    """(check, measured, limit text, passed) for every limit the expectation gives."""
    out: list[tuple[str, float | None, str, bool | None]] = []
    pred = _num(row.get("predicted_connections"))
    pred_max = _num(row.get("predicted_connections_max"))
    plateau = _num(row.get("conn_plateau"))

    def limit(v: Literal["predicted"] | int | None, predicted: float | None = pred) -> float | None:
        return predicted if v == "predicted" else v

    def add(name: str, measured: float | None, lim: float | None, ok: Callable[[float, float], bool],
            lim_text: str | None = None) -> None:
        text = lim_text or str(lim)
        out.append((name, measured, text, None if measured is None or lim is None else ok(measured, lim)))

    if e.p95_ms_max is not None:
        add("p95_ms <=", _num(row.get("lat_p95")), e.p95_ms_max, lambda m, x: m <= x)
    if e.p99_ms_max is not None:
        add("p99_ms <=", _num(row.get("lat_p99")), e.p99_ms_max, lambda m, x: m <= x)
    if e.error_rate_max is not None:
        add("error_rate <=", _num(row.get("failure_rate")), e.error_rate_max, lambda m, x: m <= x)
    for cls, n in e.errors_max.items():
        add(f"errors[{cls}] <=", _num(row.get(f"err_{cls}", 0)) or 0.0, n, lambda m, x: m <= x)
    for cls, n in e.errors_min.items():
        add(f"errors[{cls}] >=", _num(row.get(f"err_{cls}", 0)) or 0.0, n, lambda m, x: m >= x)
    if e.connections is not None:
        add("connections plateau ==", plateau, limit(e.connections), lambda m, x: m == x,
            f"{limit(e.connections)} ({e.connections})" if e.connections == "predicted" else None)
    if e.connections_max is not None:
        lim = limit(e.connections_max, pred_max)  # "predicted": the predicted bound, not the steady figure
        add("connections plateau <=", plateau, lim, lambda m, x: m <= x,
            f"{lim} ({e.connections_max})" if e.connections_max == "predicted" else None)
    if e.pgbouncer_server_max is not None:
        add("pgbouncer servers <=", _num(row.get("pgb_servers_peak")), e.pgbouncer_server_max, lambda m, x: m <= x)
    if e.connections_bounded is not None:
        measured = row.get("conn_bounded")
        measured = None if measured is None or pd.isna(measured) else bool(measured)
        out.append(("connections bounded ==", measured, str(e.connections_bounded).lower(),
                    None if measured is None else measured == e.connections_bounded))
    if e.transaction_pooling_safe is not None:
        hazardous = _num(row.get("hazard_requests"))
        safe = None if hazardous is None else hazardous == 0
        check = "transaction pooling safe =="
        if hazardous:
            check += f" (hazards: {row.get('hazard_kinds')}; {int(hazardous):,} requests)"
        out.append((check, safe, str(e.transaction_pooling_safe).lower(),
                    None if safe is None else safe == e.transaction_pooling_safe))
    if e.held_after_cooldown_max is not None:
        add("held after cool-down <=", _num(row.get("conn_held")), e.held_after_cooldown_max, lambda m, x: m <= x)
    return out


def _unreadable(i: int, e: ValidationError) -> ExpectationResult:
    """An expectation today's Expect cannot read (written by another version): shown, not evaluated."""
    err = e.errors()[0]
    why = f"{'.'.join(map(str, err['loc']))}: {err['msg']}".strip(": ")
    return {"cell_id": "", "name": f"expect[{i}]", "check": "readable", "measured": why, "limit": "",
            "passed": None}


def evaluate(run: RunData, summary: pd.DataFrame) -> list[ExpectationResult]:
    raw = run.manifest.scenario.get("expect") or []
    rows = {r["cell_id"]: r for r in summary.to_dict("records")}
    results: list[ExpectationResult] = []
    for i, item in enumerate(raw if isinstance(raw, list) else []):
        try:
            e = Expect.model_validate(item)
        except ValidationError as exc:
            results.append(_unreadable(i, exc))
            continue
        label = e.name or f"expect[{i}]"
        for cell in run.cells:
            if not e.selects(cell.cell_id, cell.group, cell.params):
                continue
            row = rows.get(cell.cell_id, {})
            if cell.status != "completed":
                results.append({"cell_id": cell.cell_id, "name": label, "check": "cell completed",
                                "measured": cell.status, "limit": "completed",
                                "passed": None if cell.status == "skipped" else False})
                continue
            for check, measured, lim, passed in _checks(e, row):
                results.append({"cell_id": cell.cell_id, "name": label, "check": check,
                                "measured": measured, "limit": lim,
                                "passed": False if passed is None else bool(passed)})
    return results


def write(run_dir: Path, results: list[ExpectationResult]) -> Path:
    path = R.RunPaths(run_dir).expectations
    R.write_json_atomic(path, results)
    return path


def failed(run_dir: Path) -> list[ExpectationResult]:
    path = R.RunPaths(run_dir).expectations
    if not path.exists():
        return []
    return [r for r in R.read_json(path) if r.get("passed") is False]
