"""Findings, machine saturation and Locust's own CPU warning, on fixture runs with known numbers."""

from __future__ import annotations

import json
import re
from datetime import datetime

import pandas as pd
import pytest

from connbench import results as R
from connbench.analysis.findings import findings
from connbench.analysis.load import load_run
from connbench.analysis.report import build_report
from connbench.analysis.settings import Settings, groups_frame
from connbench.analysis.summarize import summarize, summary_frame
from tests.fixture_runs import copy_run

D0, D600 = "pool-direct_cma-0", "pool-direct_cma-600"


def found(run):
    loaded = load_run(run)
    cells = summary_frame(loaded)
    settings = Settings(loaded, cells)
    return findings(groups_frame(loaded, cells, settings), settings)


def test_the_findings_sentences_are_computed_from_the_run(tmp_path):
    run = copy_run("run_b", tmp_path)  # direct CONN_MAX_AGE=0: p50 20.5 ms in every repeat; 600: 6 ms
    before = found(run)
    cost = next(c for c in before["claims"] if c.startswith("Opening a connection per request"))
    assert "+14.5 ms at p50" in cost and "20.5 [20.5–20.5] vs 6 [6–6] ms" in cost
    assert "a significant difference (Mann-Whitney p = 0.029 on repeats)" in cost  # 4 vs 4, separated: exact
    for r in range(1, 5):  # make every CONN_MAX_AGE=0 request 10 ms slower
        path = run / "cells" / f"{D0}_r{r}" / R.REQUESTS_CSV
        df = pd.read_csv(path, dtype={"error_class": str}, keep_default_na=False)
        df["latency_ms"] = df["latency_ms"] + 10
        df["service_ms"] = df["service_ms"] + 10
        df.to_csv(path, index=False)
    after = next(c for c in found(run)["claims"] if c.startswith("Opening a connection per request"))
    assert "+24.5 ms at p50" in after and "30.5 [30.5–30.5] vs 6 [6–6] ms" in after


def test_findings_table_ranks_and_groups_the_indistinguishable(tmp_path):
    f = found(copy_run("run_b", tmp_path))
    # req/s: direct 0 [20..23] and 600 [19..21] overlap (p = 0.23), django-pool [14..16] is below both
    assert re.search(r"1: pooling=direct, CONN_MAX_AGE=0; pooling=direct, CONN_MAX_AGE=600 \(indistinguishable\) "
                     r"· 2: pooling=django-pool, CONN_MAX_AGE=0", f["ranking"])
    rows = {r[1]: r for r in f["table"]["rows"]}
    assert rows["pooling=direct, CONN_MAX_AGE=0"][-2] == "21.5 [20–23]"
    assert f["table"]["methods"] == ["min-max over 4 repeats"]


def test_machine_saturation_is_the_harness_cpu_against_the_cores(tmp_path):
    run = copy_run("run_a", tmp_path)  # cpu_total 138 % (cma-0) and 218 % (cma-600) of one core, 2 cores
    df = summarize(run, write=False).set_index("cell_id")
    assert df.loc[D0, "machine_cpu_pct"] == 69 and not df.loc[D0, "machine_saturated"]
    assert df.loc[D600, "machine_cpu_pct"] == 109 and df.loc[D600, "machine_saturated"]
    assert found(run)["saturation"].startswith("1 of 3 settings ran with the machine saturated")
    man = json.loads((run / R.MANIFEST_JSON).read_text())
    man["host"]["cpus"] = 4
    (run / R.MANIFEST_JSON).write_text(json.dumps(man))
    df = summarize(run, write=False).set_index("cell_id")
    assert df.loc[D600, "machine_cpu_pct"] == 54.5 and not df.loc[D600, "machine_saturated"]
    assert found(run)["saturation"] is None


def test_locusts_own_cpu_warning_marks_the_generator_saturated(tmp_path):
    run = copy_run("run_a", tmp_path)
    assert not summarize(run, write=False).set_index("cell_id").loc[D0, "generator_saturated"]  # 50 % of a core
    log = R.CellPaths(run / "cells" / D0).locust_log
    log.parent.mkdir(parents=True, exist_ok=True)
    m0, m1 = R.CellDoc.load(run / "cells" / D0 / R.CELL_JSON).phases["measure"]

    def warned_at(t: float) -> bool:  # Locust's format: local time, milliseconds after a comma
        stamp = datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S,%f")[:23]
        log.write_text(f"[{stamp}] host/WARNING/root: CPU usage above 90%! This may constrain your throughput "
                       "and may even give inconsistent response time measurements!\n")
        row = summarize(run, write=False).set_index("cell_id").loc[D0]
        assert row["locust_cpu_warning"] == row["generator_saturated"]
        return bool(row["locust_cpu_warning"])

    assert warned_at((m0 + m1) / 2)
    assert not warned_at(m0 - 3)  # in the warm-up: not the measured load's generator


def test_the_report_opens_with_findings_and_moves_the_environment_below(tmp_path):
    run = copy_run("run_b", tmp_path)
    html = build_report(run).read_text()
    heads = re.findall(r'<h2 id="([^"]+)"', html)
    assert heads[0] == "findings" and heads[-1] == "environment"
    assert "Opening a connection per request cost +14.5 ms at p50" in html


def test_the_connection_cost_is_put_beside_the_churn(tmp_path):
    # direct CONN_MAX_AGE=0: 99 requests opened one, connect = latency / 2 (1..100 ms, the failures' excluded);
    # calibrated 8 ms; PostgreSQL's log 1.95 ms: far apart, and said so with the three numbers
    run = copy_run("run_a", tmp_path)
    first = found(run)["claims"][0]
    assert ("Each cost 25.5 ms to open (median of 99 requests that opened one, by the app's Server-Timing, "
            "95 % CI 20–30.5): 0.25 s spent connecting each second. Calibrated apart from the load: 8 ms. "
            "PostgreSQL's own log (setup total): 1.95 ms.") in first
    assert "They disagree by more than 25% (the requests 25.5 ms, the calibration 8 ms, PostgreSQL 1.95 ms)" in first


@pytest.mark.parametrize("figures, disagree", [
    ({"connect_new_p50": 3.5, "connect_cost_ms": 8.26}, True),  # a busy machine's calibration
    ({"connect_new_p50": 3.5, "connect_cost_ms": 4.0}, False),
    ({"connect_new_p50": 3.5, "connect_cost_ms": 4.0, "server_setup_p50": 1.2}, True),
    ({"connect_new_p50": 3.5}, False),
])
def test_the_cost_sentence_names_every_figure_and_says_when_they_disagree(figures, disagree):
    from connbench.analysis.findings import connect_cost_sentence

    text = connect_cost_sentence({"connect_new_n": 40, "connect_new_lo": 3.0, "connect_new_hi": 4.0,
                                  "connect_s_per_s": 0.6, **figures})
    assert text.startswith(" Each cost 3.5 ms to open (median of 40 requests that opened one")
    assert ("They disagree by more than 25%" in text) is disagree
    for key, label in (("connect_cost_ms", "Calibrated apart from the load"),
                       ("server_setup_p50", "PostgreSQL's own log (setup total)")):
        assert (label in text) is (key in figures)
        if key in figures:
            assert f"{label}: {figures[key]:g} ms." in text


def test_without_server_timing_the_calibration_is_the_figure_and_says_so():
    from connbench.analysis.findings import connect_cost_sentence

    assert connect_cost_sentence({"connect_cost_ms": 8.0, "connect_s_per_s": 0.08}) == \
        " Each cost 8 ms to open (calibrated): 0.08 s spent connecting each second."
    assert connect_cost_sentence({}) == ""


def test_through_pgbouncer_the_table_shows_the_apps_own_churn_beside_the_servers(tmp_path):
    t = found(copy_run("run_a", tmp_path))["table"]
    h = t["headers"]
    assert h[h.index("new server connections/s") + 1] == "app → PgBouncer new connections/s"
    col = h.index("app → PgBouncer new connections/s")
    by = {"pgbouncer" if "pgbouncer-transaction" in row[1] else row[1].split(",")[0]: row[col] for row in t["rows"]}
    assert by == {"pgbouncer": "5", "CONN_MAX_AGE=0": "–", "CONN_MAX_AGE=600": "–"}  # 50 new in 10 s; no PgBouncer


def test_a_setting_is_named_by_the_knobs_its_load_model_uses():
    from connbench.analysis.findings import labels
    groups = pd.DataFrame([  # the capacity scenario's shape: open cells at two rates beside one closed cell
        {"group": "open-800", "pooling": "direct", "users": 8, "arrival_rate": 800.0, "arrival": "poisson"},
        {"group": "open-1600", "pooling": "direct", "users": 8, "arrival_rate": 1600.0, "arrival": "uniform"},
        {"group": "closed", "pooling": "direct", "users": 16, "arrival_rate": float("nan"), "arrival": "poisson"}])
    assert labels(groups) == {"open-800": "arrival_rate=800, arrival=poisson",
                              "open-1600": "arrival_rate=1600, arrival=uniform", "closed": "users=16"}
    # knobs a model does not use still name settings that nothing else tells apart
    twin = pd.concat([groups, groups.iloc[[0]].assign(group="open-800-u16", users=16)], ignore_index=True)
    assert labels(twin)["open-800-u16"] == "users=16, arrival_rate=800, arrival=poisson"


def test_a_load_only_one_setting_ran_under_is_not_ranked():
    from connbench.analysis.findings import ranking, table
    g = pd.DataFrame([{"group": k, "rank": 1, "rank_by": "rps", "rank_within": f"arrival_rate={k}", "rank_test": "",
                       "completed": 1} for k in ("300", "600")])  # the capacity scenario: one setting per rate
    names = {"300": "A", "600": "B", "300b": "C"}
    assert ranking(g, names) is None
    assert [r[:2] for r in table(g, names)["rows"]] == [["–", "A"], ["–", "B"]]
    g = pd.concat([g, g.iloc[[0]].assign(group="300b", rank=2)], ignore_index=True)
    text = ranking(g, names)
    assert "at arrival_rate=300: 1: A · 2: C." in text and "arrival_rate=600" not in text
    assert [r[:2] for r in table(g, names)["rows"]] == [["1", "A"], ["–", "B"], ["2", "C"]]
    g.loc[g["group"] == "300b", "rank"] = None  # its cells failed: unranked, so A is alone under its load again
    assert ranking(g, names) is None and table(g, names)["rows"][0][:2] == ["–", "A"]
