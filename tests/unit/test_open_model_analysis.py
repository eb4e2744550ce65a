"""Analysis of the open model on its fixture (tests/fixtures/make_runs.py, run_open: pooling direct /
django-pool x arrival_rate 8, 16, 32 req/s; pool-direct_ar-32p0 has dropped and late-sent requests).

Every expected figure below is worked out by hand in make_runs.py's docstring."""

from __future__ import annotations

import csv
import json
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from connbench import results as R
from connbench.analysis.charts.cell import latency_bins
from connbench.analysis.charts.hockey import hockey_lines
from connbench.analysis.load import load_run, read_requests
from connbench.analysis.report import build_report
from connbench.analysis.summarize import summarize
from connbench.contract import REQUESTS_COLUMNS
from tests.fixture_runs import FIXTURES, copy_run

LAGGED, D16, P32 = "pool-direct_ar-32p0", "pool-direct_ar-16p0", "pool-django-pool_ar-32p0"
OPEN_CELLS = ("pool-direct_ar-8p0", D16, LAGGED, "pool-django-pool_ar-8p0", "pool-django-pool_ar-16p0", P32)


def approx(v):
    return pytest.approx(v, rel=1e-12, abs=1e-9)


@pytest.fixture
def run_open(tmp_path):
    return copy_run("run_open", tmp_path)


@pytest.fixture
def rows(run_open):
    return summarize(run_open, write=False).set_index("cell_id")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = copy_run("run_open", tmp_path_factory.mktemp("open-report"))
    return run, build_report(run)


def _rewrite_requests(run, cell_id, change) -> None:
    """Rewrite a cell's requests.csv row by row (change(row) -> row, or None to leave the row out)."""
    path = run / "cells" / cell_id / R.REQUESTS_CSV
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    kept = [r for r in (change(dict(row)) for row in rows) if r is not None]
    R.write_csv_atomic(path, REQUESTS_COLUMNS, [[r[c] for c in REQUESTS_COLUMNS] for r in kept])


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.text, self.srcs, self.headers, self._th = [], [], [], False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])
        self._th = tag == "th"

    def handle_endtag(self, tag):
        self._th = False

    def handle_data(self, data):
        self.text.append(data)
        if self._th:
            self.headers.append(data.strip())


def _page(index) -> _Page:
    page = _Page()
    page.feed(index.read_text(encoding="utf-8"))
    return page


# -- summary.csv ---------------------------------------------------------------------------------------
def test_dropped_requests_are_counted_apart_never_as_requests_failures_or_latency(run_open, rows):
    r = rows.loc[LAGGED]
    # 128 scheduled in the window: 4 dropped (one more in warm-up, not counted), 124 sent, 1 of them refused
    assert (r["dropped"], r["requests"], r["failures"]) == (4, 124, 1)
    assert r["failure_rate"] == approx(1 / 124) and r["err_connection_refused"] == 1
    assert "err_dropped" not in rows.columns  # not a failure class
    assert all(rows.loc[c, "dropped"] == 0 for c in OPEN_CELLS if c != LAGGED)
    # without the dropped rows every other figure is the same: they never were requests or latency samples
    _rewrite_requests(run_open, LAGGED, lambda row: None if row["error_class"] == "dropped" else row)
    again = summarize(run_open, write=False).set_index("cell_id").loc[LAGGED]
    assert again["dropped"] == 0
    same = ["requests", "failures", "rps", "achieved_rps", "lag_p99_ms", "lat_p50", "lat_p99", "lat_max",
            "lat_mean", "svc_p50", "svc_p99"]
    assert again[same].tolist() == r[same].tolist()


def test_offered_rate_from_params_achieved_from_answers(rows, tmp_path):
    r = rows.loc[LAGGED]
    assert r["offered_rps"] == 32.0  # cell.json params arrival_rate
    assert r["rps"] == approx(124 / 4)  # every request sent in the 4 s window
    assert r["achieved_rps"] == approx(123 / 4)  # answered: the connection_refused one (status 0) was not
    for cid in OPEN_CELLS:
        if cid != LAGGED:  # sent on time, all answered: offered = sent = answered
            rate = rows.loc[cid, "offered_rps"]
            assert rows.loc[cid, ["rps", "achieved_rps"]].tolist() == [rate, rate] and rate in (8, 16, 32)
    closed = summarize(copy_run("run_a", tmp_path), write=False).set_index("cell_id").loc["pool-direct_cma-0"]
    assert pd.isna(closed["offered_rps"]) and closed["rps"] == 10.0 and closed["achieved_rps"] == approx(9.9)


def test_the_window_takes_what_the_schedule_placed_in_it_even_if_sent_late(run_open, rows):
    run = load_run(run_open)
    m0, m1 = next(c for c in run.cells if c.cell_id == LAGGED).phase("measure")
    req = read_requests(run_open / "cells" / LAGGED / R.REQUESTS_CSV).df
    last = req.iloc[-1]
    assert m0 <= last["t_intended"] < m1 <= last["t_start"]  # scheduled in the window, sent after it
    assert rows.loc[LAGGED, "requests"] == 124  # counted (by t_start it would be 123)
    assert rows.loc[LAGGED, "lat_max"] == 202.125  # the warm-up's 1000 ms answers are not in the window


def test_schedule_lag_p99_is_exact_and_zero_when_sent_on_time(run_open, rows, tmp_path):
    # lags: 104 x 0, then 3.90625 x (1..20) ms; numpy linear at 0.99 x 123 = 121.77
    assert rows.loc[LAGGED, "lag_p99_ms"] == approx(73.3203125)  # 3.90625 x (18 + 0.77)
    req = read_requests(run_open / "cells" / LAGGED / R.REQUESTS_CSV).df
    sent = req[(req["error_class"] != "dropped") & (req["t_intended"] >= req["t_intended"].iloc[0] + 2)]
    assert rows.loc[LAGGED, "lag_p99_ms"] == np.percentile((sent["t_start"] - sent["t_intended"]) * 1000, 99)
    for cid in OPEN_CELLS:
        if cid != LAGGED:
            assert rows.loc[cid, "lag_p99_ms"] == 0
    closed = summarize(copy_run("run_a", tmp_path), write=False)
    assert (closed.loc[closed["status"] == "completed", "lag_p99_ms"] == 0).all()  # t_intended = t_start


def test_response_and_service_percentiles(rows):
    r = rows.loc[LAGGED]
    # service 1..124 ms; response: 1..104, then 104 + 4.90625 m for the 20 sent m/256 s late
    assert (r["svc_p50"], r["svc_p95"], r["svc_p99"]) == (approx(62.5), approx(117.85), approx(122.77))
    assert (r["lat_p50"], r["lat_p95"], r["lat_p99"]) == (approx(62.5), approx(171.9515625), approx(196.0903125))
    assert r["lat_max"] == 202.125
    d = rows.loc[D16]  # on time: response time is service time, 0.25 x (1..64)
    assert (d["lat_p50"], d["lat_p99"]) == (approx(8.125), approx(15.8425)) == (d["svc_p50"], d["svc_p99"])
    p = rows.loc[P32]  # 0.125 x (1..128)
    assert (p["svc_p50"], p["svc_p95"], p["lat_p99"]) == (approx(8.0625), approx(15.20625), approx(15.84125))


def test_generator_lagged_flag(run_open, rows):
    assert rows["generator_lagged"].tolist() == [c == LAGGED for c in rows.index]
    # the same cell sent on time: no lag, no flag
    _rewrite_requests(run_open, LAGGED, lambda row: {**row, "t_start": row["t_intended"]})
    again = summarize(run_open, write=False).set_index("cell_id").loc[LAGGED]
    assert (again["lag_p99_ms"], again["generator_lagged"]) == (0, False)


def test_summary_columns_are_declared_once_and_written(run_open):
    df = summarize(run_open)
    for col in ("offered_rps", "achieved_rps", "dropped", "lag_p99_ms", "svc_p50", "svc_p95", "svc_p99",
                "generator_lagged"):
        assert col in R.SUMMARY_COLUMNS and col in df.columns
    back = pd.read_csv(run_open / R.SUMMARY_CSV).set_index("cell_id")
    assert back.loc[LAGGED, ["dropped", "lag_p99_ms", "generator_lagged"]].tolist() == [4, approx(73.3203125), True]


# -- the report ----------------------------------------------------------------------------------------
def test_report_warns_when_the_generator_limited_the_test(report):
    _, index = report
    text = " ".join(_page(index).text)
    warning = "the generator, not the app, limited this test: schedule lag p99 = 73.32 ms"
    assert text.count(warning) == 1 and re.search(rf"{LAGGED}\s*:\s*{re.escape(warning)}", text)
    assert "4 scheduled requests dropped in the measure window: max_in_flight (50 per Locust process)" in text


def test_report_table_puts_response_and_service_time_side_by_side(report, tmp_path):
    _, index = report
    headers = _page(index).headers
    for q in ("p50", "p95", "p99"):
        assert headers[headers.index(f"resp {q} ms") + 1] == f"svc {q} ms"
    for label in ("offered req/s", "req/s", "answered req/s", "dropped", "schedule lag p99 ms", "generator lagged"):
        assert label in headers
    closed = _page(build_report(copy_run("run_a", tmp_path))).headers  # a closed loop: no open-model columns
    assert "resp p50 ms" in closed and "svc p50 ms" in closed and "dropped" not in closed
    assert "offered req/s" not in closed


def test_hockey_stick_chart_is_drawn_first_and_linked(report):
    run, index = report
    assert (run / "charts" / "hockey_stick.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run / "charts" / "hockey_stick.svg").is_file()
    srcs = _page(index).srcs
    assert srcs[0] == "charts/hockey_stick.png"  # the first chart of the report


def test_hockey_stick_lines_one_per_connection_setting(run_open, rows):
    summary = rows.reset_index()
    lines = hockey_lines(summary)
    assert list(lines) == ["pooling=direct", "pooling=django-pool"]  # labelled by the knob that differs
    direct = lines["pooling=direct"]
    assert direct.index.tolist() == [8.0, 16.0, 32.0]
    assert direct["p99"].tolist() == [approx(7.9225), approx(15.8425), approx(196.0903125)]
    assert direct["p50"].tolist() == [approx(4.125), approx(8.125), approx(62.5)]
    assert (direct["lagged"].tolist(), direct["lost"].tolist()) == ([False, False, True], [False, False, True])
    assert lines["pooling=django-pool"]["p99"].tolist() == [approx(3.96125), approx(7.92125), approx(15.84125)]
    assert hockey_lines(summary[summary["offered_rps"] == 16.0]) == {}  # one rate: not an axis, no chart


def test_latency_chart_draws_response_time_and_service_p50_for_open_cells(run_open, tmp_path):
    run = load_run(run_open)
    bins = latency_bins(next(c for c in run.cells if c.cell_id == LAGGED))
    # schedule seconds 2, 3 are warm-up (1000 ms answers), 4..7 the window; the late 20 are in second 7
    assert bins.index.tolist() == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0] and list(bins.columns)[-1] == "svc_p50"
    assert (bins.loc[[4.0, 5.0, 6.0], "p50"] == bins.loc[[4.0, 5.0, 6.0], "svc_p50"]).all()
    assert bins.loc[7.0, "p50"] > bins.loc[7.0, "svc_p50"]  # response time counts the generator's lag
    closed = load_run(copy_run("run_a", tmp_path))
    assert "svc_p50" not in latency_bins(next(c for c in closed.cells if c.completed))


# -- reading schema 1 ----------------------------------------------------------------------------------
def test_a_schema_1_requests_csv_reads_with_t_intended_and_service_time(tmp_path):
    v1 = [{"t_start": "10.5", "endpoint": "read", "latency_ms": "12.25", "status": "200", "error_class": "",
           "dyno": "0"}]
    assert R.update_to_2(R.REQUESTS_CSV, v1) == [
        {"t_intended": "10.5", "t_start": "10.5", "endpoint": "read", "latency_ms": "12.25", "service_ms": "12.25",
         "status": "200", "error_class": "", "dyno": "0"}]
    path = FIXTURES / "run_v1" / "cells" / "pool-direct_cma-0" / R.REQUESTS_CSV
    before = path.read_bytes()
    got = read_requests(path, version=1)
    assert got.problem is None and len(got.df) == 111
    assert (got.df["t_intended"] == got.df["t_start"]).all() and (got.df["service_ms"] == got.df["latency_ms"]).all()
    assert path.read_bytes() == before  # never rewritten
    run = load_run(copy_run("run_v1", tmp_path))  # and through the run's recorded schema
    df = next(c for c in run.cells if c.cell_id == "pool-direct_cma-0").csv(R.REQUESTS_CSV)
    assert list(df.columns[:5]) == ["t_intended", "t_start", "endpoint", "latency_ms", "service_ms"]
    assert (df["t_intended"] == df["t_start"]).all() and (df["service_ms"] == df["latency_ms"]).all()


def test_blank_times_are_allowed_on_dropped_rows_only(tmp_path):
    path = tmp_path / R.REQUESTS_CSV
    ids = ",,,,,,,"  # backend_pid, worker_pid, thread, conn_close, hazards, hazard_examples, check_ms
    path.write_text(",".join(REQUESTS_COLUMNS) + "\n"
                    f"1.0,1.0,read,,,0,dropped,0,,,,,{ids},local\n"  # dropped: blank times by design
                    f"2.0,2.0,read,5.0,5.0,200,,0,1,0,2,1,0{ids},local\n"
                    f"3.0,3.0,read,,,0,client_timeout,0,,,,,{ids},local\n"  # blank times on a sent request: malformed
                    f"4.0,4.0,read,abc,5.0,200,,0,,,,,{ids},local\n"  # not a number: malformed
                    "5.0,5.0,read,5.0,5.0,200,,0,,,,,,4242,311,312,0,set,,,local\n"
                    "6.0,6.0,rea")  # torn last line
    got = read_requests(path)
    assert got.df["t_start"].tolist() == [1.0, 2.0, 5.0] and got.dropped == 3
    assert got.df["latency_ms"].isna().tolist() == [True, False, False]
    assert got.dropped_note == ("dropped 3 line(s) of requests.csv: the truncated last line (the writer stopped "
                                "mid-row) and 2 malformed line(s) (wrong field count or a value that is not a "
                                "number; first at line 4)")


def test_fixture_cells_record_the_open_model(run_open):
    doc = json.loads((run_open / "cells" / LAGGED / R.CELL_JSON).read_text())
    assert (doc["params"]["arrival_rate"], doc["params"]["arrival"], doc["params"]["max_in_flight"]) == (
        32.0, "uniform", 50)
