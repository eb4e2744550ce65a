"""A pool smaller than a worker's concurrency: predicted in cell.json, and the report's warning gives what the
cell measured of it (Server-Timing's pool wait, the pool's timeouts), on a run made by the harness's writers.

cell "short" (gthread 4 threads, Django's pool max_size 2): 10 requests, 4 waited 40 ms, 2 failed with
django_pool_timeout. cell "fits" (threads 2, max_size 2): no warning.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from connbench import results as R
from connbench.analysis.load import load_run
from connbench.analysis.report import warnings
from connbench.analysis.summarize import summaries
from tests.fixture_runs import build_run, closed_requests
from tests.fixtures.make_runs import sampler_rows

RAW = {
    "scenario": {"name": "fixture-pool-wait", "description": "A pool smaller than the threads."},
    "defaults": {"workers": 1, "worker_class": "gthread", "pooling": "django-pool", "pool_max_size": 2,
                 "pool_timeout": 3, "duration": 10, "warmup": 2, "cooldown": 2},
    "matrix": {"include": [{"id": "short", "threads": 4}, {"id": "fits", "threads": 2}]},
}


def write_cell(p: R.CellPaths, cell, base: float) -> None:
    short = cell.cell_id == "short"
    waits, failed = ([40.0] * 4 + [0.01] * 6, 2) if short else ([0.01] * 10, 0)
    closed_requests(p, base, [{"t": 4 + i / 2, "ms": 50, "endpoint": "/db/read", "status": 500 if i < failed else 200,
                               "error_class": "django_pool_timeout" if i < failed else "", "connect_ms": "0.0",
                               "pool_ms": repr(ms), "db_ms": "1.0", "app_ms": "1.0"} for i, ms in enumerate(waits)])
    sampler_rows(p, base, {t: 2 for t in range(2, 17)}, {t: 2 for t in range(2, 17)})


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return build_run(tmp_path_factory.mktemp("poolwait") / "run_pool_wait", RAW, write_cell)


def test_cell_json_carries_the_prediction(run):
    docs = {c.cell_id: c.doc for c in load_run(run).cells}
    assert docs["short"].predicted.pool_wait == (
        "each worker runs up to 4 threads at once on Django's pool (max_size 2): up to 2 of them wait for a "
        "connection, and a wait past 3 s fails with django_pool_timeout")
    assert docs["fits"].predicted.pool_wait is None


def test_the_report_warns_with_what_was_measured(run):
    data = load_run(run)
    cells, _ = summaries(data)
    said = [w for w in warnings(data, cells) if "pool smaller than concurrency" in w["text"]]
    assert [w["cell"] for w in said] == ["short"] and said[0]["level"] == "warn"
    assert said[0]["text"].endswith("Measured: pool wait p95 40 ms (Server-Timing); 2 requests failed with the "
                                    "pool's timeout")
