"""The sampler's counts on real processes: plateau = dynos x workers x threads, every
connection attributed; churn from pg_stat_database.sessions follows the request rate at CONN_MAX_AGE=0.

The plateau is certain, not lucky. A gthread worker opens its 2nd connection only when a request
arrives while another is in flight in *that* worker, and nothing balances Locust's keep-alive
sockets across the workers of one gunicorn: when users connect at once, whichever worker is awake
takes most or all of them, and keeps them (measured here: 12 sockets on 2 booted workers split
12/0, 11/1, 10/2, ...). Locust spreads users round-robin over dynos, deterministically. So
cma-none runs 4 dynos of one gthread worker each (12 keep-alive sockets per worker against 2
threads), every request holds its thread for 20 ms (`/db/slow`), and the plateau is asserted as
reached by a deadline and held from then on, and never exceeded. (Several workers in one dyno,
each holding connections under its own id: the kill-worker cell of tests/e2e/test_faults.py, with sync workers,
which share requests certainly: a busy sync worker does not accept.)
"""

from __future__ import annotations

import pytest

from connbench.analysis.summarize import cpu_rates
from connbench.contract import REQUESTS_COLUMNS
from tests.support import cell_data, held_from

pytestmark = pytest.mark.e2e

SCENARIO = """
[scenario]
name = "sampler"
[defaults]
dynos = 2
workers = 2
threads = 2
worker_class = "gthread"
warmup = 1.5
duration = 6
cooldown = 1.5

[[matrix.include]]
id = "cma-none"
conn_max_age = "none"
dynos = 4
workers = 1
users = 48
spawn_rate = 48
mix = { read = 0, slow = 1, slow_ms = 20 }

[[matrix.include]]
id = "cma-0"
conn_max_age = 0
users = 24
spawn_rate = 24
mix = { read = 1 }

# One sync worker: one thread, so one connection, opened by the warm-up's first request; none after.
[[matrix.include]]
id = "cma-none-one"
conn_max_age = "none"
dynos = 1
workers = 1
worker_class = "sync"
threads = 1
users = 4
spawn_rate = 4
mix = { read = 1 }
"""

# Server-Timing parts come from the app's clock inside the request, service_ms from the client's around it.
CLOCK_TOLERANCE_MS = 1.0

# The plateau must be reached this long before measuring ends, and then hold.
HOLD_S = 3.0


def load_cell(run_dir, cell_id):
    cell = cell_data(run_dir, cell_id)
    assert cell.status == "completed", (cell.status, cell.error, cell.damage)
    conns, db, reqs, procs = (cell.csv(f"{n}.csv") for n in ("connections", "db", "requests", "processes"))
    return cell, cell.phase("measure"), conns, db, reqs, procs


@pytest.fixture(scope="module")
def sampled(run_factory):
    return run_factory(SCENARIO, "--no-report", name="sampler").dir


def test_persistent_plateau_is_exactly_dynos_x_workers_x_threads(sampled):
    doc, (m0, m1), conns, db, reqs, procs = load_cell(sampled, "cma-none")
    assert doc.predicted.connections == 8
    c0, c1 = doc.phase("cooldown")
    pg = conns[conns.source == "postgres"]
    totals = pg.groupby("t")["count"].sum()
    assert totals.max() <= 8, totals.value_counts().to_dict()  # never more than one per thread
    # reached during the load (by the deadline), then held through the cool-down: connections are
    # still held after load stops
    since = held_from(totals[totals.index <= c1], 8)
    assert since is not None and since <= m1 - HOLD_S, totals.value_counts().to_dict()
    held = pg[(pg.t >= since) & (pg.t <= c1)]
    assert held.t.nunique() >= 20 and held.t.max() > c0 + 0.3
    # every connection is attributed to a dyno and a worker: 4 dynos x 1 worker, 2 threads each
    attributed = held[held["count"] > 0]
    assert attributed.dyno.notna().all() and attributed.worker.notna().all()
    per_worker = attributed.groupby(["t", "dyno", "worker"])["count"].sum()
    assert (per_worker == 2).all(), per_worker.value_counts().to_dict()
    assert attributed.groupby("dyno").worker.nunique().to_dict() == {"0": 1, "1": 1, "2": 1, "3": 1}
    # the article's exact query agrees with the attributed total (the sampler excluded from both)
    dbh = db[(db.t >= since) & (db.t <= c1)]
    assert len(dbh) and (dbh.article_count == 8).all() and (dbh.client_backends == 8).all()


def test_conn_max_age_0_churn_follows_request_rate(sampled):
    doc, (m0, m1), conns, db, reqs, procs = load_cell(sampled, "cma-0")
    dbm = db[(db.t >= m0) & (db.t <= m1)]
    churn = (dbm.sessions.iloc[-1] - dbm.sessions.iloc[0]) / (dbm.t.iloc[-1] - dbm.t.iloc[0])
    measured = reqs[(reqs.t_start >= m0) & (reqs.t_start < m1)]
    rate = len(measured) / (m1 - m0)
    assert rate > 20
    assert abs(churn / rate - 1) <= 0.10, (churn, rate)
    # and at rest nothing is held
    c0, c1 = doc.phase("cooldown")
    rest = db[(db.t > c0 + 0.5) & (db.t <= c1)]
    assert (rest.client_backends == 0).all()


def test_requests_log_is_raw_and_full_precision(sampled):
    _, (m0, m1), _, _, reqs, _ = load_cell(sampled, "cma-none")
    assert list(reqs.columns) == list(REQUESTS_COLUMNS)
    assert (reqs.t_intended == reqs.t_start).all()  # a closed loop sends when it intends to
    assert reqs.t_start.between(m0 - 60, m1 + 60).all()
    # full precision: not Locust's rounded buckets
    assert (reqs.latency_ms != reqs.latency_ms.round()).mean() > 0.9
    assert set(reqs.dyno) == {"0", "1", "2", "3"}


def test_process_cpu_recorded_for_every_component(sampled):
    _, (m0, m1), _, _, _, procs = load_cell(sampled, "cma-none")
    during = procs[(procs.t >= m0) & (procs.t < m1)]
    assert {"postgres", "gunicorn-master", "gunicorn-worker", "locust", "sampler"} <= set(during.component)
    # raw counters: cumulative CPU seconds never decrease for one process; analysis makes the rates
    for _, series in during.groupby(["component", "pid"]):
        assert series.sort_values("t").cpu_seconds.diff().dropna().ge(-1e-6).all()
    busy = cpu_rates(procs, (m0, m1))
    assert busy["locust"] > 5 and busy["postgres"] > 1
    assert during[during.component == "gunicorn-worker"].pid.nunique() == 4


def _timed(reqs, m0, m1):
    r = reqs[(reqs.t_intended >= m0) & (reqs.t_intended < m1) & (reqs.status > 0)]
    assert len(r) > 20 and r.new_conn.notna().all()  # every answer from the app carries Server-Timing
    return r


def test_server_timing_conn_max_age_0_opens_a_connection_per_request(sampled):
    _, (m0, m1), _, _, reqs, _ = load_cell(sampled, "cma-0")
    r = _timed(reqs, m0, m1)
    opened = (r.new_conn == 1) & (r.connect_ms > 0)
    assert opened.mean() >= 0.95, opened.mean()
    assert (r.pool_ms == 0).all()  # no pool in the path


def test_server_timing_persistent_connection_is_never_reopened(sampled):
    _, (m0, m1), _, _, reqs, _ = load_cell(sampled, "cma-none-one")
    r = _timed(reqs, m0, m1)
    assert (r.new_conn == 0).all() and (r.connect_ms == 0).all()
    assert (r.db_ms > 0).all()


def test_server_timing_parts_fit_in_the_service_time(sampled):
    for cell_id in ("cma-0", "cma-none", "cma-none-one"):
        _, (m0, m1), _, _, reqs, _ = load_cell(sampled, cell_id)
        r = _timed(reqs, m0, m1)
        inside = r.connect_ms + r.pool_ms + r.db_ms + r.app_ms
        assert (inside <= r.service_ms + CLOCK_TOLERANCE_MS).all(), (cell_id, (inside - r.service_ms).max())


def test_every_backend_is_one_threads_own_and_is_reused(sampled):
    """Why it holds 8: each of the 8 threads (4 workers x 2) has its own connection and keeps it.

    Server-Timing names the backend, worker and thread of every request's queries; the counts come from the
    sampler, so the two sides are independent."""
    doc, (m0, m1), conns, db, reqs, procs = load_cell(sampled, "cma-none")
    r = _timed(reqs, m0, m1)
    assert r.backend_pid.notna().all() and r.thread.notna().all() and r.worker_pid.notna().all()
    assert (r.backend_pid > 0).all() and (r.thread > 0).all()
    owners = r.groupby("backend_pid")[["worker_pid", "thread"]].nunique()
    assert (owners == 1).all().all(), owners  # one (worker, thread) per backend
    threads = r.groupby(["worker_pid", "thread"]).backend_pid.nunique()
    assert (threads == 1).all(), threads  # and one backend per thread: none reopened
    pg = conns[(conns.source == "postgres") & (conns.t >= m0) & (conns.t < m1)].groupby("t")["count"].sum()
    assert r.backend_pid.nunique() == pg.max() == 8  # distinct backends = the plateau
    assert r.groupby("backend_pid").size().median() >= 50  # requests per connection: reused, not reopened
    assert (r.conn_close == 0).all()  # CONN_MAX_AGE=None: never due to close
    from connbench.analysis.load import load_run
    from connbench.analysis.summarize import summaries
    row = summaries(load_run(sampled))[0].set_index("cell_id").loc["cma-none"]
    assert row["requests_per_connection_p50"] >= 50 and row["threads_seen"] == 8 and row["connections_used"] == 8
    assert row["threads_per_worker_max"] == 2 and row["connections_per_thread"] == 1


def test_conn_max_age_0_says_each_connection_is_due_to_close(sampled):
    _, (m0, m1), _, _, reqs, _ = load_cell(sampled, "cma-0")
    r = _timed(reqs, m0, m1)
    assert (r.conn_close == 1).mean() >= 0.99  # Django closes it at request end: a new backend per request
    assert r.backend_pid.nunique() >= 0.9 * len(r)
