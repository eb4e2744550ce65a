"""Helpers for the analysis tests: the checked-in run fixtures, always copied before use."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from connbench import results as R
from connbench.scenario import expand

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "runs"


def copy_run(name: str, dest: Path) -> Path:
    """A private copy of tests/fixtures/runs/<name> (analysis writes summary.csv, charts, index.html)."""
    target = dest / name
    shutil.copytree(FIXTURES / name, target)
    return target


def request_row(**fields: object) -> list[str]:
    """One requests.csv row in REQUESTS_COLUMNS' order: the named fields, every other one blank."""
    from connbench.contract import REQUESTS_COLUMNS

    unknown = set(fields) - set(REQUESTS_COLUMNS)
    assert not unknown, f"not requests.csv columns: {unknown}"
    return ["" if fields.get(c) is None else str(fields[c]) for c in REQUESTS_COLUMNS]


def build_run(root: Path, raw: dict, write_cell: Callable[[R.CellPaths, expand.Cell, float], None]) -> Path:
    """A run as the harness leaves it: per cell (base time T0 + 100 s per cell) `write_cell` writes the raw files
    it needs, then cell.json and events.csv (tests/fixtures/make_runs.py run_cell), then the manifest."""
    from tests.fixtures.make_runs import T0, manifest, run_cell

    sc = expand.from_dict(raw, Path(f"scenarios/{raw['scenario']['name']}.toml"))
    docs = []
    for k, cell in enumerate(sc.cells):
        base, paths = T0 + 100 * k, R.RunPaths(root).cell(cell.cell_id)
        write_cell(paths, cell, base)
        docs.append(run_cell(paths, cell, base))
    manifest(root, sc, docs, T0 - 5, T0 + 100 * len(sc.cells))
    return root


def closed_requests(paths: R.CellPaths, base: float, rows: list[dict]) -> None:
    """requests.csv of a closed loop as the request log writes it: each row's `t` (seconds after base) is both
    t_intended and t_start, its `ms` both latency_ms and service_ms; status 200 unless given, every other
    column as given or blank."""
    from connbench.contract import REQUESTS_COLUMNS

    out = []
    for r in rows:
        fields = {k: v for k, v in r.items() if k not in ("t", "ms")}
        t, ms = repr(base + r["t"]), repr(float(r["ms"]))
        out.append(request_row(**{"status": 200, "new_conn": 0, "generator": "local", "t_intended": t,
                                  "t_start": t, "latency_ms": ms, "service_ms": ms, **fields}))
    R.write_csv_atomic(paths.requests, REQUESTS_COLUMNS, out)
