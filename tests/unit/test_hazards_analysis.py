"""Transaction-pooling hazards in analysis (analysis/hazards.py): hazards.csv, the summary's hazard columns, the
report's verdict and the `transaction_pooling_safe` expectation, on a run made by the harness's writers.

cell "direct" (direct): /h/set ran SET twice, once failing nowhere; /h/lock a session advisory lock; /db/read none.
cell "pooled" (pgbouncer-transaction, server_side_cursors auto): /h/hold a held cursor, 2 of 3 failing with
  invalid_cursor; /h/set again; one row names a kind this version does not know (ignored).
cell "clean" (direct): no hazard at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from connbench import results as R
from connbench.analysis import expectations
from connbench.analysis.hazards import hazard_metrics, hazards_frame, verdict
from connbench.analysis.load import load_run
from connbench.analysis.summarize import summarize
from connbench.scenario.knobs import Expect
from tests.fixture_runs import build_run, closed_requests
from tests.fixtures.make_runs import sampler_rows

RAW = {
    "scenario": {"name": "fixture-hazards", "description": "Session-state hazards per endpoint."},
    "defaults": {"workers": 1, "max_connections": 20, "duration": 10, "warmup": 2, "cooldown": 2},
    "matrix": {"include": [
        {"id": "direct", "conn_max_age": 60},
        {"id": "pooled", "conn_max_age": 60, "pooling": "pgbouncer-transaction"},
        {"id": "clean", "conn_max_age": 60},
    ]},
}
LONG = "SET search_path = " + "x" * 300
# (endpoint, hazards, examples, error_class) per request
ROWS = {
    "direct": [("/h/set", "set_session", {"set_session": LONG}, ""), ("/h/set", "set_session", None, ""),
               ("/h/lock", "advisory_lock_session", {"advisory_lock_session": "SELECT pg_advisory_lock(?)"}, ""),
               ("/db/read", "", None, "")],
    "pooled": [("/h/hold", "cursor_with_hold", {"cursor_with_hold": "DECLARE c CURSOR WITH HOLD FOR SELECT ?"},
                "invalid_cursor"), ("/h/hold", "cursor_with_hold", None, "invalid_cursor"),
               ("/h/hold", "cursor_with_hold", None, ""), ("/h/set", "set_session", None, ""),
               ("/h/new", "some_future_kind", None, "")],
    "clean": [("/db/read", "", None, ""), ("/db/read", "", None, "")],
}


def write_cell(p: R.CellPaths, cell, base: float) -> None:
    closed_requests(p, base, [{"t": 4 + i / 10, "ms": 5, "endpoint": endpoint, "status": 500 if error else 200,
                               "error_class": error, "hazards": hazards,
                               "hazard_examples": json.dumps(examples) if examples else ""}
                              for i, (endpoint, hazards, examples, error) in enumerate(ROWS[cell.cell_id])])
    sampler_rows(p, base, {t: 1 for t in range(2, 17)}, {t: 1 for t in range(2, 17)})


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return build_run(tmp_path_factory.mktemp("hazards") / "run_hazards", RAW, write_cell)


def test_hazards_csv_per_endpoint_and_kind(run):
    frame = hazards_frame(load_run(run))
    got = {(r["endpoint"], r["kind"]): r for r in frame.to_dict("records")}
    assert set(got) == {("/h/set", "set_session"), ("/h/lock", "advisory_lock_session"),
                        ("/h/hold", "cursor_with_hold")}  # /db/read ran none; an unknown kind is not one
    assert (got["/h/set", "set_session"]["requests"], got["/h/set", "set_session"]["cells"]) == (3, 2)
    assert got["/h/set", "set_session"]["example"] == LONG[:200]  # one example, cut to 200 characters
    hold = got["/h/hold", "cursor_with_hold"]
    assert (hold["requests"], hold["pooled_failures"], hold["error_classes"]) == (3, 2, "invalid_cursor")
    assert hold["example"] == "DECLARE c CURSOR WITH HOLD FOR SELECT ?"
    assert list(frame["requests"]) == sorted(frame["requests"], reverse=True)  # most requests first


def test_summary_columns_and_hazards_csv_written(run):
    summarize(run)
    s = pd.read_csv(run / R.SUMMARY_CSV).set_index("cell_id")
    assert s.loc["direct", "hazard_requests"] == 3 and s.loc["direct", "hazard_kinds"] == (
        "advisory_lock_session set_session")
    assert s.loc["pooled", "hazard_requests"] == 5 and s.loc["pooled", "hazard_kinds"] == "cursor_with_hold set_session"
    assert s.loc["clean", "hazard_requests"] == 0 and pd.isna(s.loc["clean", "hazard_kinds"])
    written = pd.read_csv(run / R.HAZARDS_CSV)
    assert list(written.columns) == list(R.HAZARDS_COLUMNS) and len(written) == 3


def test_the_verdict_names_why_and_the_fix_and_the_shim(run):
    data = load_run(run)
    v = verdict(data, hazards_frame(data))
    assert v is not None and not v.safe
    assert v.headline.startswith("Not safe for transaction pooling: 3 kinds of session-state hazard across 3 endpoints")
    by = {r["endpoint"]: r for r in v.rows}
    assert "SET LOCAL" in by["/h/set"]["fix"] and "pg_advisory_xact_lock" in by["/h/lock"]["fix"]
    assert by["/h/hold"]["failed"] == "2 failed under transaction pooling (invalid_cursor)"
    assert v.shim_note and "DISABLE_SERVER_SIDE_CURSORS" in v.shim_note  # the pooled cell ran with "auto"


def test_a_run_without_hazards_is_safe_and_says_how_much_it_looked_at(run):
    data = load_run(run)
    data.cells = [c for c in data.cells if c.cell_id == "clean"]
    v = verdict(data, hazards_frame(data))
    assert v is not None and v.safe and v.headline == (
        "Safe: none of 2 requests in 1 cells ran a statement that relies on session state.")


def test_an_older_run_is_blank_not_safe(run):
    data = load_run(run)
    for c in data.cells:
        c.version = 5  # written before the app recorded hazards
    assert verdict(data, hazards_frame(data)) is None
    assert hazard_metrics(data.cells[0]) == {"hazard_requests": None, "hazard_kinds": None}


@pytest.mark.parametrize("row, want, passed", [
    ({"hazard_requests": 3, "hazard_kinds": "prepare set_session"}, True, False),
    ({"hazard_requests": 3, "hazard_kinds": "prepare set_session"}, False, True),
    ({"hazard_requests": 0, "hazard_kinds": ""}, True, True),
    ({"hazard_requests": None, "hazard_kinds": None}, True, None),  # not recorded: not evaluated
])
def test_the_expectation(row, want, passed):
    (check, measured, limit, ok), = expectations._checks(Expect(name="x", transaction_pooling_safe=want), row)
    assert check.startswith("transaction pooling safe ==") and limit == str(want).lower() and ok is passed
    if row["hazard_requests"]:
        assert measured is False and "prepare set_session; 3 requests" in check
