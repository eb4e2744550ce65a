"""Injected faults with measured effects, the article's claims as expectations, SIGKILL + resume."""

from __future__ import annotations

import re

import pytest

from connbench.services.pgbouncer import pgbouncer_binary
from tests.support import ROOT, cell_data, read_json

pytestmark = pytest.mark.e2e


def cell_frames(run_dir, cell_id):
    cell = cell_data(run_dir, cell_id)
    return cell, cell.csv("requests.csv"), cell.csv("events.csv"), cell.csv("connections.csv")


# faults.toml's persistent-connection cells, timed against their faults: alone on the machine. Its pooled cells
# are only reported as measured, and run beside other tests (test_stale.py).
TIMED = "terminate-hc-off,terminate-hc-on,restart-postgres-hc-on,restart-pgbouncer,kill-worker,exhaust-max-connections"


@pytest.fixture(scope="module")
def faults_run(run_factory):
    r = run_factory(str(ROOT / "scenarios" / "faults.toml"), "--no-charts", "--cells", TIMED, name="faults")
    return r.dir, r.result


def fault_time(events, action):
    rows = events[events.kind == f"fault:{action}"]
    assert len(rows) == 1, events
    return float(rows.t.iloc[0]), rows.detail.iloc[0]


def ends(reqs):
    return reqs.t_start + reqs.latency_ms / 1000.0


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


# Recovery is judged from when the fault's action ended (a restart's own duration is in its
# detail, "... (0.12 s)"), plus this much for each worker's next request to reconnect.
RECOVERY_GRACE_S = 1.0


def fault_done(t, detail):
    took = re.search(r"\(([0-9.]+) s\)", detail)
    return t + (float(took.group(1)) if took else 0.0)


def test_restarts_and_a_killed_worker_recover(faults_run):
    run_dir, _ = faults_run
    for cell_id, action in (("restart-postgres-hc-on", "restart_postgres"), ("kill-worker", "kill_worker")) + (
            (("restart-pgbouncer", "restart_pgbouncer"),) if pgbouncer_binary() else ()):
        doc, reqs, events, conns = cell_frames(run_dir, cell_id)
        assert doc.status == "completed", (cell_id, doc.error)
        t, detail = fault_time(events, action)
        assert "failed" not in detail, detail
        m0, m1 = doc.phase("measure")
        recovered = max(t + 2, fault_done(t, detail) + RECOVERY_GRACE_S)
        assert recovered <= m1 - 1, (cell_id, detail)  # recovery is observed for at least a second
        # the fault is the only cause of errors: each failed request was in flight at or after it
        # started, and started before the recovery deadline
        failed = reqs[reqs.error_class != ""]
        assert (ends(failed) >= t).all() and (failed.t_start < recovered).all(), \
            (cell_id, (failed.t_start - t).round(3).tolist(), failed.error_class.tolist())
        after = reqs[reqs.t_start >= recovered]
        assert len(after) > 50 and (after.error_class == "").all(), (cell_id, after.error_class.value_counts())
    # gunicorn replaced the killed worker: the killed worker's connection is gone and a new worker
    # id holds one, by the end of the load (the deadline), and from then on (persistent connections)
    doc, reqs, events, conns = cell_frames(run_dir, "kill-worker")
    t, _ = fault_time(events, "kill_worker")
    m1, (_, c1) = doc.phase("measure")[1], doc.phase("cooldown")
    pg = conns[conns.source == "postgres"]
    holders = {ts: frozenset(g.worker[(g["count"] > 0) & g.worker.notna()]) for ts, g in pg.groupby("t")}
    before = holders[max(ts for ts in holders if ts < t)]
    final = holders[max(ts for ts in holders if ts < m1)]
    assert len(before) == 2 and len(final) == 2 and len(final & before) == 1, (before, final)
    changed = max((ts for ts in holders if t < ts <= c1 and holders[ts] != final), default=t)
    assert changed < m1 and all(holders[ts] == final for ts in holders if changed < ts <= c1)


def test_exhausted_server_and_expectations_gate_the_exit_code(faults_run):
    run_dir, res = faults_run
    _, reqs, _, _ = cell_frames(run_dir, "exhaust-max-connections")
    assert (reqs.error_class == "too_many_clients").sum() > 0
    results = read_json(run_dir / "expectations.json")
    assert results and all(r["passed"] for r in results), [r for r in results if not r["passed"]]
    assert res.returncode == 0, res.stderr
    html = (run_dir / "index.html").read_text()
    assert "Expectations" in html and "too many clients" in html.lower()


def test_heroku_claims_hold(run_factory):
    r = run_factory(str(ROOT / "scenarios" / "heroku.toml"), "--no-charts", name="heroku")
    res, run_dir = r.result, r.dir
    results = read_json(run_dir / "expectations.json")
    by_name = {}
    for r in results:
        by_name.setdefault(r["name"], []).append(r)
    assert len(by_name) == 3
    assert all(r["passed"] for r in results), [r for r in results if not r["passed"]]
    seventh = [r for r in by_name["a 7th dyno gets 'too many clients'"] if r["check"].startswith("errors")]
    assert seventh[0]["measured"] >= 1
    assert res.returncode == 0


def test_a_failed_expectation_fails_the_run(run_factory):
    strict = (ROOT / "scenarios" / "smoke.toml").read_text() + '\n[[expect]]\nname = "impossible"\np95_ms_max = 0.001\n'
    res = run_factory(strict, "--no-charts", name="strict", expect=1).result
    assert res.returncode == 1
    assert "expectation failed: default: impossible: p95_ms <= 0.001" in res.stderr
