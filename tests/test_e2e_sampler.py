"""Issue 4: the sampler's counts on real processes: plateau = dynos x workers x threads, every
connection attributed; churn from pg_stat_database.sessions follows the request rate at CONN_MAX_AGE=0."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.conftest import read_json, run_cli, write_scenario

pytestmark = pytest.mark.e2e

SCENARIO = """
[scenario]
name = "sampler"
[defaults]
dynos = 2
workers = 2
threads = 2
worker_class = "gthread"
users = 24
spawn_rate = 24
warmup = 1.5
duration = 6
cooldown = 1.5
mix = { read = 1 }
[matrix]
conn_max_age = ["none", 0]
"""


def load_cell(run_dir, cell_id):
    d = run_dir / "cells" / cell_id
    doc = read_json(d / "cell.json")
    m0, m1 = doc["phases"]["measure"]
    conns = pd.read_csv(d / "connections.csv", dtype={"dyno": str, "worker": str})
    db = pd.read_csv(d / "db.csv")
    reqs = pd.read_csv(d / "requests.csv")
    procs = pd.read_csv(d / "processes.csv")
    return doc, (m0, m1), conns, db, reqs, procs


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sampler")
    run_dir = tmp / "run"
    scen = write_scenario(tmp / "s.toml", SCENARIO)
    run_cli("run", str(scen), "--run-dir", str(run_dir), "--no-report", check=True)
    return run_dir


def test_persistent_plateau_is_exactly_dynos_x_workers_x_threads(sampled):
    doc, (m0, m1), conns, db, reqs, procs = load_cell(sampled, "cma-none")
    assert doc["predicted"]["connections"] == 8
    pg = conns[(conns.source == "postgres") & (conns.t >= m0 + 1) & (conns.t < m1)]
    totals = pg.groupby("t")["count"].sum()
    assert len(totals) >= 20
    assert (totals == 8).all(), totals.value_counts().to_dict()
    # every connection is attributed to a dyno and a worker: 2 dynos x 2 workers, 2 threads each
    attributed = pg[pg["count"] > 0]
    assert attributed.dyno.notna().all() and attributed.worker.notna().all()
    per_worker = attributed.groupby(["t", "dyno", "worker"])["count"].sum()
    assert (per_worker == 2).all()
    assert set(attributed.dyno) == {"0", "1"}
    assert attributed.groupby("dyno").worker.nunique().to_dict() == {"0": 2, "1": 2}
    # the article's exact query agrees with the attributed total (the sampler excluded from both)
    dbm = db[(db.t >= m0 + 1) & (db.t < m1)]
    assert (dbm.article_count == 8).all() and (dbm.client_backends == 8).all()
    # connections are still held after load stops (cool-down)
    c0, c1 = doc["phases"]["cooldown"]
    cool = conns[(conns.source == "postgres") & (conns.t > c0 + 0.3) & (conns.t <= c1)].groupby("t")["count"].sum()
    assert len(cool) and (cool == 8).all()


def test_conn_max_age_0_churn_follows_request_rate(sampled):
    doc, (m0, m1), conns, db, reqs, procs = load_cell(sampled, "cma-0")
    dbm = db[(db.t >= m0) & (db.t <= m1)]
    churn = (dbm.sessions.iloc[-1] - dbm.sessions.iloc[0]) / (dbm.t.iloc[-1] - dbm.t.iloc[0])
    measured = reqs[(reqs.t_start >= m0) & (reqs.t_start < m1)]
    rate = len(measured) / (m1 - m0)
    assert rate > 20
    assert abs(churn / rate - 1) <= 0.10, (churn, rate)
    # and at rest nothing is held
    c0, c1 = doc["phases"]["cooldown"]
    rest = db[(db.t > c0 + 0.5) & (db.t <= c1)]
    assert (rest.client_backends == 0).all()


def test_requests_log_is_raw_and_full_precision(sampled):
    _, (m0, m1), _, _, reqs, _ = load_cell(sampled, "cma-none")
    assert list(reqs.columns) == ["t_start", "endpoint", "latency_ms", "status", "error_class", "dyno"]
    assert reqs.t_start.between(m0 - 60, m1 + 60).all()
    # full precision: not Locust's rounded buckets
    assert (reqs.latency_ms != reqs.latency_ms.round()).mean() > 0.9
    assert set(reqs.dyno) == {0, 1}


def test_process_cpu_recorded_for_every_component(sampled):
    _, (m0, m1), _, _, _, procs = load_cell(sampled, "cma-none")
    during = procs[(procs.t >= m0) & (procs.t < m1)]
    assert {"postgres", "gunicorn-master", "gunicorn-worker", "locust", "sampler"} <= set(during.component)
    busy = during.groupby("component").cpu_percent.mean()
    assert busy["locust"] > 5 and busy["postgres"] > 1
    assert during[during.component == "gunicorn-worker"].pid.nunique() == 4
    # password never written in the sampler's readable outputs
    secrets = json.loads((sampled / ".secrets-maxc-100.json").read_text())
    for f in (sampled / "cells" / "cma-none").glob("*.csv"):
        assert secrets["app"] not in f.read_text()
