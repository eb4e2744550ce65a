"""Issue 7: injected faults with measured effects, the article's claims as expectations, SIGKILL + resume."""

from __future__ import annotations

import pandas as pd
import pytest

from connbench.services.pgbouncer import pgbouncer_binary
from tests.conftest import ROOT, assert_no_leftovers, read_json, run_cli

pytestmark = pytest.mark.e2e


def cell_frames(run_dir, cell_id):
    d = run_dir / "cells" / cell_id
    doc = read_json(d / "cell.json")
    reqs = pd.read_csv(d / "requests.csv", dtype={"error_class": str}).fillna({"error_class": ""})
    events = pd.read_csv(d / "events.csv", dtype={"kind": str, "detail": str}).fillna({"detail": ""})
    conns = pd.read_csv(d / "connections.csv", dtype={"dyno": str, "worker": str})
    return doc, reqs, events, conns


@pytest.fixture(scope="module")
def faults_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("faults") / "run"
    res = run_cli("run", str(ROOT / "scenarios" / "faults.toml"), "--run-dir", str(run_dir))
    yield run_dir, res
    assert_no_leftovers(run_dir)


def fault_time(events, action):
    rows = events[events.kind == f"fault:{action}"]
    assert len(rows) == 1, events
    return float(rows.t.iloc[0]), rows.detail.iloc[0]


def test_terminated_backends_fail_without_health_checks_and_not_with(faults_run):
    run_dir, _ = faults_run
    doc, reqs, events, _ = cell_frames(run_dir, "terminate-hc-off")
    t, detail = fault_time(events, "terminate_backends")
    assert detail == "terminated 2 backends"  # both workers' persistent connections
    failed = reqs[reqs.error_class != ""]
    assert (failed.error_class == "connection_lost").sum() >= 1
    # every failure is a *later* request on an idle, dead connection, not one in flight
    assert (failed.t_start >= t + 0.1).all(), (failed.t_start - t).tolist()
    # one failed request per dead connection (one per worker), then Django reconnects
    assert 1 <= len(failed) <= 2 and (failed.error_class == "connection_lost").all()
    doc, reqs, events, _ = cell_frames(run_dir, "terminate-hc-on")
    assert fault_time(events, "terminate_backends")[1] == "terminated 2 backends"
    assert (reqs.error_class == "").all() and len(reqs) > 20


def test_restarts_and_a_killed_worker_recover(faults_run):
    run_dir, _ = faults_run
    for cell_id, action in (("restart-postgres-hc-on", "restart_postgres"), ("kill-worker", "kill_worker")) + (
            (("restart-pgbouncer", "restart_pgbouncer"),) if pgbouncer_binary() else ()):
        doc, reqs, events, conns = cell_frames(run_dir, cell_id)
        assert doc["status"] == "completed", (cell_id, doc["error"])
        t, detail = fault_time(events, action)
        assert "failed" not in detail, detail
        after = reqs[reqs.t_start > t + 2]
        assert len(after) > 50 and (after.error_class == "").all(), (cell_id, after.error_class.value_counts())
    # gunicorn replaced the killed worker: a new worker id shows up in pg_stat_activity
    doc, reqs, events, conns = cell_frames(run_dir, "kill-worker")
    t, _ = fault_time(events, "kill_worker")
    workers_before = set(conns[(conns.t < t) & (conns["count"] > 0)].worker.dropna())
    workers_after = set(conns[(conns.t > t + 2) & (conns["count"] > 0)].worker.dropna())
    assert len(workers_after) == 2 and workers_after - workers_before


def test_exhausted_server_and_expectations_gate_the_exit_code(faults_run):
    run_dir, res = faults_run
    _, reqs, _, _ = cell_frames(run_dir, "exhaust-max-connections")
    assert (reqs.error_class == "too_many_clients").sum() > 0
    results = read_json(run_dir / "expectations.json")
    assert results and all(r["passed"] for r in results), [r for r in results if not r["passed"]]
    assert res.returncode == 0, res.stderr
    html = (run_dir / "index.html").read_text()
    assert "Expectations" in html and "too many clients" in html.lower()


def test_heroku_claims_hold(tmp_path, run_dir):
    res = run_cli("run", str(ROOT / "scenarios" / "heroku.toml"), "--run-dir", str(run_dir))
    results = read_json(run_dir / "expectations.json")
    by_name = {}
    for r in results:
        by_name.setdefault(r["name"], []).append(r)
    assert len(by_name) == 3
    assert all(r["passed"] for r in results), [r for r in results if not r["passed"]]
    seventh = [r for r in by_name["a 7th dyno gets 'too many clients'"] if r["check"].startswith("errors")]
    assert seventh[0]["measured"] >= 1
    assert res.returncode == 0


def test_a_failed_expectation_fails_the_run(tmp_path, run_dir):
    scen = tmp_path / "strict.toml"
    scen.write_text((ROOT / "scenarios" / "smoke.toml").read_text()
                    + '\n[[expect]]\nname = "impossible"\np95_ms_max = 0.001\n')
    res = run_cli("run", str(scen), "--run-dir", str(run_dir))
    assert res.returncode == 1
    assert "expectation failed: default: impossible: p95_ms <= 0.001" in res.stderr
