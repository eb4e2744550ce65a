"""summary.csv figures on hand-built fixtures (see tests/fixtures/make_runs.py for how each was chosen)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from connbench import results as R
from connbench.analysis import AnalysisError
from connbench.analysis.load import load_run, read_csv
from connbench.analysis.summarize import cpu_rates, summarize
from tests.fixture_runs import copy_run

DIRECT0, PERSIST, PGB = "pool-direct_cma-0", "pool-direct_cma-600", "pool-pgbouncer-transaction_cma-0"
FAILED, SKIPPED = "pool-direct_cma-none", "pool-pgbouncer-session_cma-0"


@pytest.fixture
def run_a(tmp_path):
    return copy_run("run_a", tmp_path)


@pytest.fixture
def rows(run_a):
    df = summarize(run_a)
    return {r["cell_id"]: r for r in df.to_dict("records")}


def approx(v):
    return pytest.approx(v, rel=1e-12, abs=1e-9)


def test_requests_latency_and_errors_of_the_measure_window_only(rows):
    r = rows[DIRECT0]
    # 100 requests in [m0, m1): the one at exactly m0 counts, the one at m1 and the warm-up ones do not.
    assert (r["requests"], r["measure_s"], r["rps"]) == (100, 10.0, 10.0)
    assert (r["failures"], r["failure_rate"]) == (5, approx(0.05))
    assert (r["err_too_many_clients"], r["err_client_timeout"], r["err_http_503"]) == (3, 1, 1)
    # latencies 1..100 ms; numpy linear: p = 1 + q * 99
    assert r["lat_p50"] == approx(50.5)
    assert r["lat_p90"] == approx(90.1)
    assert r["lat_p95"] == approx(95.05)
    assert r["lat_p99"] == approx(99.01)
    assert r["lat_p999"] == approx(99.901)
    assert (r["lat_max"], r["lat_mean"]) == (100.0, approx(50.5))
    p = rows[PERSIST]  # 0.5..50 ms over a 5 s window
    assert (p["requests"], p["rps"], p["failures"]) == (100, 20.0, 0)
    assert (p["lat_p50"], p["lat_p95"], p["lat_p99"]) == (approx(25.25), approx(47.525), approx(49.505))
    b = rows[PGB]  # 1..50 ms over 10 s
    assert (b["rps"], b["lat_p50"], b["lat_p95"], b["lat_p99"]) == (5.0, approx(25.5), approx(47.55), approx(49.51))
    assert b["err_too_many_clients"] == 0  # a class seen elsewhere in the run is 0 here, not blank


def test_latency_is_computed_from_raw_values_not_buckets(run_a):
    req = read_csv(run_a / "cells" / DIRECT0 / R.REQUESTS_CSV)
    m0 = json.loads((run_a / "cells" / DIRECT0 / R.CELL_JSON).read_text())["phases"]["measure"][0]
    inside = req[(req["t_start"] >= m0) & (req["t_start"] < m0 + 10)]["latency_ms"]
    assert summarize(run_a, write=False).set_index("cell_id").loc[DIRECT0, "lat_p95"] == approx(
        np.percentile(inside, 95))


def test_connections_peak_plateau_mean_held_and_prediction(rows):
    r = rows[DIRECT0]
    # measure totals [2,1,3,2,1 | 2,2,1,2,2]; cool-down ends at 0 (the sampler's "none" row)
    assert (r["conn_peak"], r["conn_mean"], r["conn_plateau"], r["conn_held"]) == (3, approx(1.8), 2, 0)
    # CONN_MAX_AGE=0 predicts no steady count (one connection per request in flight): no gap either
    assert pd.isna(r["predicted_connections"]) and pd.isna(r["conn_gap"])
    assert (r["article_count_peak"], r["max_connections_observed"]) == (3, 20)
    p = rows[PERSIST]  # a fault at t=6 drops the count to 0 for one sample; persistent: held after load
    assert (p["conn_peak"], p["conn_mean"], p["conn_plateau"], p["conn_held"]) == (2, approx(1.6), 2, 2)
    b = rows[PGB]  # pgbouncer rows in connections.csv must not count as server connections
    assert (b["conn_peak"], b["conn_mean"], b["conn_plateau"], b["conn_held"], b["conn_gap"]) == (4, 4, 4, 4, 0)


def test_churn_from_cumulative_sessions(rows):
    assert rows[DIRECT0]["churn_per_s"] == approx(20.0)  # +200 sessions over 10 s
    assert rows[PERSIST]["churn_per_s"] == approx(0.4)  # 2 reconnects after the fault over 5 s
    assert rows[PGB]["churn_per_s"] == approx(0.0)  # PgBouncer keeps server connections open


def test_pgbouncer_peaks(rows):
    b = rows[PGB]
    assert (b["pgb_clients_peak"], b["pgb_servers_peak"], b["pgb_waiting_peak"], b["pgb_maxwait_s"]) == (
        8, 5, 4, 0.25)
    assert math.isnan(rows[DIRECT0]["pgb_clients_peak"])


def test_cpu_rates_from_cumulative_seconds_and_generator_saturation(rows):
    r = rows[DIRECT0]  # rates over the measure window from processes.csv's cumulative cpu_seconds
    assert (r["cpu_locust"], r["cpu_gunicorn_worker"], r["cpu_postgres"]) == (approx(50), approx(60), approx(25))
    # gunicorn-master is the dyno's tree (1 + workers); worker rows are a breakdown, not added to the total
    assert (r["cpu_gunicorn_master"], r["cpu_sampler"], r["cpu_total"]) == (
        approx(61), approx(2), approx(50 + 61 + 25 + 2))
    assert (r["locust_procs"], r["locust_cpu_per_proc"], r["generator_saturated"]) == (1, approx(50), False)
    p = rows[PERSIST]
    assert (p["cpu_locust"], p["cpu_gunicorn_worker"], p["cpu_total"], p["generator_saturated"]) == (
        approx(95), approx(90), approx(218), True)
    b = rows[PGB]
    assert (b["cpu_pgbouncer"], b["cpu_gunicorn_worker"], b["cpu_total"], b["generator_saturated"]) == (
        approx(10), approx(40), approx(98), False)


def test_saturation_scales_with_recorded_locust_processes(run_a):
    doc_path = run_a / "cells" / PERSIST / R.CELL_JSON
    doc = json.loads(doc_path.read_text())
    doc["services"]["locust"] = {"processes": 2}  # 95 % over two processes: 47.5 % each
    doc_path.write_text(json.dumps(doc))
    r = summarize(run_a, write=False).set_index("cell_id").loc[PERSIST]
    assert (r["locust_procs"], r["locust_cpu_per_proc"], r["generator_saturated"]) == (2, approx(47.5), False)


def test_failed_and_skipped_cells_have_status_error_and_empty_metrics(rows):
    f = rows[FAILED]
    assert f["status"] == "failed" and "did not answer /health/" in f["error"]
    s = rows[SKIPPED]  # cell.json only: nothing was started
    assert s["status"] == "skipped" and "PgBouncer is not installed" in s["skip_reason"]
    for r in (f, s):
        for col in ("rps", "lat_p50", "conn_peak", "conn_plateau", "churn_per_s", "cpu_locust"):
            assert pd.isna(r[col]), col
        assert pd.isna(r["requests"]) and pd.isna(r["generator_saturated"])
    assert f["pooling"] == "direct" and f["conn_max_age"] == "none"


def test_columns_params_flattened_and_files_written(run_a):
    df = summarize(run_a)
    cols = list(df.columns)
    assert cols[:6] == list(R.SUMMARY_COLUMNS[:6])
    assert cols.index("dynos") < cols.index("measure_s") and "mix_read" in cols and "mix_slow_ms" in cols
    assert cols[-3:] == ["err_client_timeout", "err_http_503", "err_too_many_clients"]
    assert set(R.SUMMARY_COLUMNS) <= set(cols)
    back = pd.read_csv(run_a / R.SUMMARY_CSV)
    assert list(back["cell_id"]) == [DIRECT0, PERSIST, PGB, FAILED, SKIPPED]
    assert back.set_index("cell_id").loc[DIRECT0, "lat_p95"] == approx(95.05)
    assert (run_a / R.SUMMARY_GROUPS_CSV).is_file()
    assert not list(run_a.glob(".*summary*"))  # no temporary files left behind


def test_write_false_writes_nothing(run_a):
    summarize(run_a, write=False)
    assert not (run_a / R.SUMMARY_CSV).exists()


def test_groups_median_and_spread(tmp_path):
    run_b = copy_run("run_b", tmp_path)
    summarize(run_b)
    g = pd.read_csv(run_b / R.SUMMARY_GROUPS_CSV).set_index("group")
    d0 = g.loc["pool-direct_cma-0"]
    assert (d0["cells"], d0["completed"]) == (4, 4)
    # 4 repeats: the interval is the min-max, named
    assert (d0["rps"], d0["rps_lo"], d0["rps_hi"]) == (21.5, 20, 23)
    assert (d0["lat_p95"], d0["conn_peak"]) == (20.5, 2)
    assert d0["interval_method"] == "min-max over 4 repeats"
    d6 = g.loc["pool-direct_cma-600"]
    assert (d6["rps"], d6["rps_lo"], d6["rps_hi"], d6["conn_peak_hi"]) == (20.5, 19, 21, 3)
    assert g.loc["pool-django-pool_cma-0", "cells"] == 4
    # summary.csv: every repeat's row carries its setting's interval and rank
    s = pd.read_csv(run_b / R.SUMMARY_CSV)
    rows = s[s["group"] == "pool-direct_cma-0"]
    assert list(rows["rps_lo"]) == [20] * 4 and list(rows["rps_hi"]) == [23] * 4
    assert rows["rank"].nunique() == 1


def test_clock_fallback_when_db_samples_do_not_line_up(run_a):
    db = run_a / "cells" / DIRECT0 / R.DB_CSV
    df = pd.read_csv(db)
    df["t"] = df["t"] + 0.01
    df.to_csv(db, index=False)
    conns = run_a / "cells" / DIRECT0 / R.CONNECTIONS_CSV
    c = pd.read_csv(conns, dtype=str, keep_default_na=False)
    c[c["state"] != "none"].to_csv(conns, index=False)  # a sampler that wrote nothing for an empty sample
    r = summarize(run_a, write=False).set_index("cell_id").loc[DIRECT0]
    # without db.csv's clock an empty sample is invisible: the last sample with rows is t=14 (1 connection)
    assert r["conn_held"] == 1


def test_torn_and_missing_files_do_not_crash(run_a):
    cell = run_a / "cells" / DIRECT0
    with open(cell / R.REQUESTS_CSV, "a") as fh:
        fh.write("1700000005.5,read,12")  # torn last line (the writer was killed): dropped and counted
    (cell / R.PROCESSES_CSV).write_bytes(b"\x00\xff\xfe garbage")
    (cell / R.DB_CSV).unlink()
    r = summarize(run_a, write=False).set_index("cell_id").loc[DIRECT0]
    assert r["requests"] == 100 and r["failures"] == 5 and r["dropped_lines"] == 1  # never a failed request
    assert pd.isna(r["churn_per_s"]) and pd.isna(r["cpu_locust"]) and pd.isna(r["generator_saturated"])
    assert r["conn_peak"] == 3  # connections.csv alone still gives the counts


def test_cell_status_from_manifest_when_cell_json_is_stale_or_missing(run_a):
    doc_path = run_a / "cells" / PERSIST / R.CELL_JSON
    doc = json.loads(doc_path.read_text())
    doc["status"] = "running"  # the harness was killed mid-cell
    doc_path.write_text(json.dumps(doc))
    man = json.loads((run_a / R.MANIFEST_JSON).read_text())
    man["cells"][1].update(status="interrupted", error="interrupted (Ctrl-C)")
    (run_a / R.MANIFEST_JSON).write_text(json.dumps(man))
    (run_a / "cells" / "orphan").mkdir()
    (run_a / "cells" / DIRECT0 / R.CELL_JSON).unlink()  # completed, says the manifest: a lost file
    df = summarize(run_a, write=False).set_index("cell_id")
    assert df.loc[PERSIST, "status"] == "interrupted" and pd.isna(df.loc[PERSIST, "rps"])
    assert df.loc["orphan", "status"] == "failed" and "cell.json missing" in df.loc["orphan", "error"]
    assert df.loc[DIRECT0, "status"] == "damaged" and "cell.json is missing although" in df.loc[DIRECT0, "damage"]


def test_bad_run_directories_raise_actionable_errors(tmp_path):
    with pytest.raises(AnalysisError, match="not a directory"):
        summarize(tmp_path / "nope")
    copy_run("run_a", tmp_path)
    with pytest.raises(AnalysisError, match=r"no manifest\.json.*run_a"):
        summarize(tmp_path)  # the reports/ root, not a run
    (tmp_path / "run_a" / R.MANIFEST_JSON).write_text("{not json")
    with pytest.raises(AnalysisError, match="not valid JSON"):
        load_run(tmp_path / "run_a")
    (tmp_path / "run_a" / R.MANIFEST_JSON).write_text(json.dumps({"schema_version": R.SCHEMA_VERSION, "cells": {}}))
    with pytest.raises(AnalysisError, match=r"does not match schema 7: run_id: Field required; started: .*"
                                            r"cells: Input should be a valid list"):
        load_run(tmp_path / "run_a")
    assert issubclass(AnalysisError, ValueError)


def frame(rows):
    return pd.DataFrame(rows, columns=["t", "component", "dyno", "pid", "cpu_seconds"])


def test_cpu_rate_interpolates_at_the_window_and_covers_restarts():
    # postgres restarted at t=5: pid 1 ran [0, 5] at 50 %, pid 2 [6, 10] at 100 %; window [1, 9]
    rows = [(t, "postgres", "", 1, 10 + 0.5 * t) for t in range(0, 6)]
    rows += [(t, "postgres", "", 2, 1.0 * (t - 6)) for t in range(6, 11)]
    # the window [1, 9]: pid 1 used 2 s over [1, 5], pid 2 3 s over [6, 9]: 5 s over 8 s
    assert cpu_rates(frame(rows), (1.0, 9.0)) == {"postgres": approx(62.5)}
    # a window edge between samples is interpolated
    assert cpu_rates(frame(rows[:6]), (0.5, 2.5)) == {"postgres": approx(50.0)}


def test_cpu_rate_never_negative_when_a_counter_dips():
    # a grandchild's CPU leaves the tree total when it exits: a dip, then the counter climbs again
    rows = [(0, "locust", "", 7, 10.0), (1, "locust", "", 7, 10.5), (2, "locust", "", 7, 10.2),
            (3, "locust", "", 7, 10.7)]
    assert cpu_rates(frame(rows), (0.0, 3.0)) == {"locust": approx(100 * 1.0 / 3)}  # 0.5 + 0 + 0.5 s
    assert cpu_rates(frame(rows), (5.0, 9.0)) == {}  # no sample in the window: no figure, not 0


def test_server_timing_parts_and_client_side_churn(run_a):
    df = summarize(run_a, write=False).set_index("cell_id")
    d0 = df.loc[DIRECT0]  # 99 answered requests (the client timeout got no header): latencies 1..100 but 46
    mean = (5050 - 46) / 99
    assert d0["connect_ms_mean"] == approx(mean / 2) and d0["db_ms_mean"] == approx(mean / 4)
    assert d0["app_ms_mean"] == approx(mean / 8) and d0["outside_ms_mean"] == approx(mean / 8)
    assert d0["pool_ms_mean"] == 0 and d0["new_conn_share"] == 1
    assert d0["new_conn_per_s"] == approx(99 / 10)  # the app's side of churn, beside churn_per_s (20)
    persistent = df.loc[PERSIST]
    assert persistent["connect_ms_p95"] == 0 and persistent["new_conn_share"] == 0
    assert persistent["new_conn_per_s"] == 0
    pgb = df.loc["pool-pgbouncer-transaction_cma-0"]  # latencies 1..50: connect /4, pool /8
    assert pgb["pool_ms_p50"] == approx(25.5 / 8) and pgb["connect_ms_p95"] == approx(np.percentile(
        np.arange(1, 51), 95) / 4)


def test_requests_without_server_timing_give_no_timing_figures(tmp_path):
    r = summarize(copy_run("run_b", tmp_path), write=False)
    assert r["connect_ms_mean"].isna().all() and r["new_conn_per_s"].isna().all()  # not measured, never 0


def test_the_headline_connect_cost_is_what_the_requests_that_opened_one_paid(run_a):
    """connect_new_p50: the median Server-Timing connect over the measured requests with new_conn = 1, with its
    interval; connect_s_per_s: the window's connect time per second, summed, not multiplied; the calibration
    stays a second figure (its median)."""
    import csv

    df = summarize(run_a, write=False).set_index("cell_id")
    with open(run_a / "cells" / DIRECT0 / "requests.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["new_conn"] == "1"]
    m0, m1 = (float(x) for x in json.loads((run_a / "cells" / DIRECT0 / "cell.json").read_text())["phases"]["measure"])
    paid = sorted(float(r["connect_ms"]) for r in rows if m0 <= float(r["t_intended"]) < m1)
    row = df.loc[DIRECT0]
    assert row["connect_new_n"] == len(paid) == 99
    assert row["connect_new_p50"] == approx(float(np.median(paid)))
    assert row["connect_new_lo"] < row["connect_new_p50"] < row["connect_new_hi"]
    assert row["connect_new_lo"] in paid and row["connect_new_hi"] in paid  # order statistics, never made up
    assert row["connect_s_per_s"] == approx(sum(paid) / 1000 / (m1 - m0))
    assert row["connect_cost_ms"] == 8  # the direct path's calibration, beside it
    pgb = df.loc["pool-pgbouncer-transaction_cma-0"]  # the app's path is PgBouncer's: its calibration, 4 ms
    assert pgb["connect_cost_ms"] == 4 and pgb["connect_new_n"] > 0
    assert np.isnan(df.loc[PERSIST, "connect_cost_ms"])  # not calibrated: no figure
    assert df.loc[PERSIST, "connect_new_n"] == 0 and np.isnan(df.loc[PERSIST, "connect_new_p50"])  # none opened
    m = R.Manifest.load(run_a / R.MANIFEST_JSON)
    assert m.calibration["embedded scram-sha-256 tls=off pgbouncer"].mean_ms == 4


def test_without_server_timing_the_connect_time_is_estimated_from_the_calibration():
    from connbench.analysis.summarize import cost_metrics

    class Doc:
        connect_cost = {"direct": R.ConnectCost(n=5, mean_ms=9.0, p50_ms=8.0, p95_ms=12.0, min_ms=5.0)}

    class Cell:
        doc = Doc()

    assert cost_metrics(Cell(), churn=10.0, measured=False) == {"connect_cost_ms": 8.0,
                                                                 "connect_s_per_s": approx(0.08)}
    assert cost_metrics(Cell(), churn=10.0, measured=True) == {"connect_cost_ms": 8.0}  # measured wins


def test_the_medians_interval_takes_the_sign_tests_order_statistics():
    from scipy.stats import binom

    from connbench.analysis.stats import median_interval

    v = list(range(10, 0, -1))  # 10 values, unsorted: ranks 2 and 9 (P(B <= 1) = 1.1 % <= 2.5 %)
    assert median_interval(v) == (5.5, 2.0, 9.0)
    assert binom.cdf(1, 10, 0.5) <= 0.025 < binom.cdf(2, 10, 0.5)
    assert all(np.isnan(x) for x in median_interval([]))
    assert median_interval([3.0, 1.0]) == (2.0, 1.0, 3.0)  # too few for 95 %: the extremes
    rng = np.random.default_rng(7)  # and it covers the true median at least 95 % of the time
    hits = 0
    for _ in range(2000):
        _, lo, hi = median_interval(rng.exponential(1.0, 30))
        hits += lo <= np.log(2) <= hi
    assert hits / 2000 >= 0.95
