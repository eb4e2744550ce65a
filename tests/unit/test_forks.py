"""Connections inherited across the fork (analysis/forks.py), on a run made by the harness's writers.

cell "shared" (django-pool, preload): workers 11 and 12 both use backend 500 between t=4 and t=6 (one socket in
  two processes); worker 12 also has backend 501 alone.
cell "reused" (direct): backend 600 used by worker 21 until t=5, then by worker 22 from t=7 (the OS reused the pid).
cell "pgb" (pgbouncer-transaction): two workers on one PgBouncer server connection, by design: not judged.
"""

from __future__ import annotations

import pandas as pd
import pytest

from connbench import results as R
from connbench.analysis.forks import fork_metrics, fork_warning, shared
from connbench.analysis.load import load_run
from connbench.analysis.report import warnings
from connbench.analysis.summarize import summaries
from tests.fixture_runs import build_run, closed_requests
from tests.fixtures.make_runs import sampler_rows

RAW = {
    "scenario": {"name": "fixture-forks", "description": "Backends shared across the fork."},
    "defaults": {"workers": 2, "max_connections": 20, "duration": 10, "warmup": 2, "cooldown": 2},
    "matrix": {"include": [
        {"id": "shared", "pooling": "django-pool", "conn_max_age": 0, "preload": True, "app_touch_db_at_import": True},
        {"id": "reused", "conn_max_age": 60},
        {"id": "pgb", "pooling": "pgbouncer-transaction", "conn_max_age": 60},
    ]},
}
# (t, backend_pid, worker_pid) per request, each 20 ms
USES = {"shared": [(4.0, 500, 11), (4.5, 500, 12), (5.0, 500, 11), (5.5, 500, 12), (6.0, 500, 11),
                   (7.0, 501, 12), (8.0, 501, 12)],
        "reused": [(4.0, 600, 21), (5.0, 600, 21), (7.0, 600, 22), (8.0, 600, 22)],
        "pgb": [(4.0, 700, 31), (4.5, 700, 32), (5.0, 700, 31)]}


def write_cell(p: R.CellPaths, cell, base: float) -> None:
    closed_requests(p, base, [{"t": t, "ms": 20, "endpoint": "/db/read", "backend_pid": pid, "worker_pid": worker}
                              for t, pid, worker in USES[cell.cell_id]])
    sampler_rows(p, base, {t: 2 for t in range(2, 17)}, {t: 2 for t in range(2, 17)})


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> dict:
    root = build_run(tmp_path_factory.mktemp("forks") / "run_forks", RAW, write_cell)
    return {c.cell_id: c for c in load_run(root).cells}


def test_a_backend_two_workers_used_at_once_is_shared_and_a_reused_pid_is_not(cells):
    s = shared(cells["shared"])
    assert s.to_dict("records") == [{"backend_pid": 500, "workers": [11, 12], "requests": 5}]
    assert fork_metrics(cells["shared"]) == {"shared_backends": 1, "shared_backend_requests": 5}
    assert fork_metrics(cells["reused"]) == {"shared_backends": 0, "shared_backend_requests": 0}
    assert fork_metrics(cells["pgb"]) == {"shared_backends": None, "shared_backend_requests": None}


def test_older_runs_are_not_judged(cells):
    old = cells["shared"]
    old.version = 4  # before Server-Timing named the backend
    try:
        assert fork_metrics(old) == {"shared_backends": None, "shared_backend_requests": None}
        assert fork_warning(old) is None
    finally:
        old.version = R.SCHEMA_VERSION


def test_the_report_says_so_with_the_evidence_and_the_fix(cells):
    text = fork_warning(cells["shared"])
    assert text is not None and text.startswith(
        "workers shared database connections after fork: 1 backend(s) used by two or more workers at once "
        "(5 requests), e.g. backend 500 by workers 11, 12 (5 requests)")
    assert "gunicorn --preload" in text and "close_pools_before_fork = true" in text
    assert fork_warning(cells["reused"]) is None and fork_warning(cells["pgb"]) is None


def test_summary_and_warnings_carry_it(cells):
    data = load_run(cells["shared"].root.parents[1])
    table, _ = summaries(data)
    s = table.set_index("cell_id")
    assert s.loc["shared", "shared_backends"] == 1 and s.loc["reused", "shared_backends"] == 0
    assert pd.isna(s.loc["pgb", "shared_backends"])
    said = [w for w in warnings(data, table) if "shared database connections" in w["text"]]
    assert [(w["cell"], w["level"]) for w in said] == [("shared", "error")]
