"""Every pooling mode is the real thing, proven by the sampler's counts on real processes.

direct is covered in tests/e2e/test_sampler.py (plateau = dynos x workers x threads; churn = request rate).

No count below depends on scheduling luck. A gthread worker starts its k-th thread (and so
opens its k-th connection) only when a request arrives while k-1 are in flight in *that*
worker, and nothing balances Locust's keep-alive sockets across the workers of one gunicorn:
when users connect at once, whichever worker is awake takes most or all of them, and keeps them
(measured here: 12 sockets on 2 booted workers split 12/0, 11/1, 10/2, ...). Locust spreads
users round-robin over dynos, deterministically. So:
- the two worker processes are two dynos of one worker each: 16 keep-alive sockets apiece;
- every request holds its connection for 50 ms (`/db/slow`), so 16 sockets keep all 3-4
  threads of each worker busy;
- counts that grow and stay (threads' persistent connections, a pool that grew) are asserted as
  "reached by a deadline and held from then on"; counts that only a cap decides are asserted as
  that cap, at every sample.
"""

from __future__ import annotations

import re

import pandas as pd
import pytest

from connbench.analysis.load import load_run
from connbench.analysis.report import warnings
from connbench.analysis.summarize import summaries
from connbench.services.pgbouncer import pgbouncer_binary
from tests.support import cell_data, held_from

pytestmark = [pytest.mark.e2e, pytest.mark.beside_others,
              pytest.mark.skipif(pgbouncer_binary() is None, reason="pgbouncer not installed (make installs it)")]

SCENARIO = """
[scenario]
name = "modes"
[defaults]
dynos = 2
workers = 1
worker_class = "gthread"
threads = 4
users = 32
spawn_rate = 32
warmup = 1
duration = 4
cooldown = 1.5
mix = { read = 0, slow = 1, slow_ms = 50 }

[[matrix.include]]
id = "django-pool"
pooling = "django-pool"
pool_min_size = 1
pool_max_size = 2

[[matrix.include]]
id = "pgb-transaction"
pooling = "pgbouncer-transaction"
conn_max_age = "none"
threads = 3
pgbouncer_pool_size = 2
pgbouncer_reserve_pool = 1

[[matrix.include]]
id = "pgb-session"
pooling = "pgbouncer-session"
conn_max_age = "none"
threads = 3
pgbouncer_pool_size = 2
pgbouncer_query_wait_timeout = 30

[[matrix.include]]
id = "dbcp"
pooling = "dj-db-conn-pool"
dbcp_pool_size = 1
dbcp_max_overflow = 1

# each pool, exceeded: its own timeout error (any worker with two requests in flight shows it)
[[matrix.include]]
id = "django-pool-exceeded"
pooling = "django-pool"
pool_min_size = 1
pool_max_size = 1
pool_timeout = 0.2
users = 16
mix = { slow = 1, slow_ms = 400 }

[[matrix.include]]
id = "dbcp-exceeded"
pooling = "dj-db-conn-pool"
dbcp_pool_size = 1
dbcp_max_overflow = 0
dbcp_timeout = 0.2
users = 16
mix = { slow = 1, slow_ms = 400 }

[[matrix.include]]
id = "pgb-exceeded"
pooling = "pgbouncer-transaction"
pgbouncer_pool_size = 1
pgbouncer_query_wait_timeout = 1
users = 16
mix = { slow = 1, slow_ms = 600 }
"""

# A state that grows and then holds must hold for at least this long before measuring ends.
HOLD_S = 2.0


class Cell:
    def __init__(self, run_dir, cell_id):
        cell = cell_data(run_dir, cell_id)
        assert cell.status == "completed", (cell.status, cell.error, cell.damage)
        self.m0, self.m1 = cell.phase("measure")
        self.c0, self.c1 = cell.phase("cooldown")
        self.conns = cell.csv("connections.csv")
        self.db = cell.csv("db.csv")
        self.reqs = cell.csv("requests.csv")
        self.bouncer = cell.csv("pgbouncer.csv") if cell.has("pgbouncer.csv") else None

    def window(self, df, t0=float("-inf"), t1=float("inf")):
        return df[(df.t >= t0) & (df.t < t1)]

    def server_total(self, t0=float("-inf"), t1=float("inf")) -> pd.Series:
        return self.window(self.db, t0, t1).set_index("t").client_backends

    def per_worker(self, t0=float("-inf"), t1=float("inf")) -> pd.Series:
        """Server connections per sample per (dyno, worker)."""
        pg = self.window(self.conns[self.conns.source == "postgres"], t0, t1)
        pg = pg[pg.worker.notna()]
        return pg.groupby(["t", "dyno", "worker"])["count"].sum()

    def errors(self):
        r = self.reqs[(self.reqs.t_start >= self.m0) & (self.reqs.t_start < self.m1)]
        return r.error_class.value_counts().to_dict(), len(r)


@pytest.fixture(scope="module")
def run(run_factory):
    return run_factory(SCENARIO, "--no-report", name="modes").dir


def test_django_pool_between_min_and_max_per_worker_and_idle_kept(run):
    c = Cell(run, "django-pool")
    per_worker = c.per_worker()
    assert per_worker.max() <= 2, per_worker.value_counts().to_dict()  # max_size, at every sample
    assert c.server_total().max() <= 2 * 2
    # saturated (4 threads, 2 connections): each worker's pool grows to max_size during the load
    peak = c.per_worker(c.m0, c.m1).groupby(["dyno", "worker"]).max()
    assert len(peak) == 2 and (peak == 2).all(), peak.to_dict()
    held = c.server_total(c.c0 + 0.5, c.c1)
    assert len(held) and (held == 2 * 2).all(), held.tolist()  # the grown pools' idle connections stay
    assert c.window(c.db, c.m0, c.m1).sessions.diff().fillna(0).sum() <= 2  # no churn: at most pool growth


def test_pgbouncer_transaction_caps_server_connections(run):
    c = Cell(run, "pgb-transaction")
    b = c.bouncer.set_index("t")
    # the cap, at every sample of the cell: default_pool_size 2 + reserve_pool 1
    assert c.server_total().max() <= 3
    assert (b.sv_active + b.sv_idle + b.sv_used + b.sv_login).max() <= 3
    # 6 clients want the server at once: the pool fills (the reserve may add one)
    assert 2 <= c.server_total(c.m0, c.m1).max() <= 3
    # app side: one persistent connection per thread, at most 2 x 3; every thread busy, so all 6
    # are opened, and kept
    clients = b.cl_active + b.cl_waiting
    assert clients.max() <= 2 * 3, clients.value_counts().to_dict()
    measured = clients[(clients.index >= c.m0) & (clients.index < c.m1)]
    since = held_from(measured, 2 * 3)
    assert since is not None and since <= c.m1 - HOLD_S, measured.value_counts().to_dict()
    counts, total = c.errors()
    assert counts == {"": total}, counts


def test_pgbouncer_session_pins_a_server_per_client_and_clients_wait(run):
    c = Cell(run, "pgb-session")
    b = c.bouncer.set_index("t")
    assert c.server_total().max() <= 2 and b.sv_active.max() <= 2  # default_pool_size 2
    clients = b.cl_active + b.cl_waiting
    assert clients.max() <= 2 * 3
    m = b[(b.index >= c.m0) & (b.index < c.m1)]
    assert (m.sv_active <= m.cl_active).all()  # an active server always serves an active client
    # once every thread has its client connection (reached by the deadline, then held): 2 clients
    # pin the 2 servers for their whole session, and the other 4 wait
    since = held_from(m.cl_active + m.cl_waiting, 2 * 3)
    assert since is not None and since <= c.m1 - HOLD_S, (m.cl_active + m.cl_waiting).value_counts().to_dict()
    steady = m[m.index >= since]
    assert (steady.cl_active == 2).all() and (steady.sv_active == 2).all(), steady.cl_active.value_counts()
    assert (steady.cl_waiting == 4).all(), steady.cl_waiting.value_counts().to_dict()
    assert steady.maxwait_s.iloc[-1] > 1.0, steady.maxwait_s.tolist()  # waited since they came, > HOLD_S
    assert (c.server_total(since, c.m1) == 2).all()


def test_dj_db_conn_pool_at_most_pool_size_plus_overflow_per_worker(run):
    c = Cell(run, "dbcp")
    per_worker = c.per_worker()
    assert per_worker.max() <= 2, per_worker.value_counts().to_dict()  # POOL_SIZE 1 + MAX_OVERFLOW 1
    # saturated (4 threads, at most 2 connections): every worker uses its overflow connection
    peak = c.per_worker(c.m0, c.m1).groupby(["dyno", "worker"]).max()
    assert len(peak) == 2 and (peak == 2).all(), peak.to_dict()
    held = c.server_total(c.c0 + 0.5, c.c1)
    assert len(held) and (held == 2).all(), held.tolist()  # overflow closed; POOL_SIZE kept per worker


@pytest.mark.parametrize("cell_id, error_class", [
    ("django-pool-exceeded", "django_pool_timeout"),
    ("dbcp-exceeded", "dbcp_pool_timeout"),
    ("pgb-exceeded", "pgbouncer_wait_timeout"),
])
def test_exceeding_a_pool_raises_its_own_timeout(run, cell_id, error_class):
    counts, total = Cell(run, cell_id).errors()
    assert counts.get(error_class, 0) > 0, counts
    assert set(counts) <= {"", error_class}, counts


CLOCK_TOLERANCE_MS = 1.0  # the app's clock inside the request against the client's around it


def _answered(c: Cell) -> pd.DataFrame:
    r = c.reqs[(c.reqs.t_intended >= c.m0) & (c.reqs.t_intended < c.m1) & (c.reqs.status == 200)]
    assert len(r) > 10 and r.new_conn.notna().all()
    return r


def test_server_timing_shows_the_wait_for_django_pool(run):
    # 4 busy threads per worker share a pool of at most 2: half of them wait, and the pool (not the request)
    # opens connections, so no request shows connect time
    r = _answered(Cell(run, "django-pool"))
    assert (r.pool_ms > 10).mean() > 0.1  # a checkout without a wait takes microseconds, never 10 ms
    assert (r.new_conn == 0).all() and (r.connect_ms == 0).all()
    assert (r.db_ms >= 50).all()  # pg_sleep(0.05) in every request


def test_server_timing_parts_fit_in_the_service_time_in_every_mode(run):
    for cell_id in ("django-pool", "pgb-transaction", "pgb-session", "dbcp"):
        r = _answered(Cell(run, cell_id))
        inside = r.connect_ms + r.pool_ms + r.db_ms + r.app_ms
        assert (inside <= r.service_ms + CLOCK_TOLERANCE_MS).all(), (cell_id, (inside - r.service_ms).max())
        assert (r.db_ms >= 50).all(), cell_id


def test_a_pool_smaller_than_the_threads_is_predicted_and_the_warning_gives_the_measured_wait(run):
    """4 threads per worker on pools of 1 or 2: predicted before the run (cell.json, `connbench list`), and the
    report's warning says what happened: the wait (Server-Timing) and, past the pool's timeout, the failures."""
    data = load_run(run)
    predicted = {c.cell_id: c.doc.predicted.pool_wait for c in data.cells if c.doc is not None}
    assert {cid for cid, w in predicted.items() if w} == {"django-pool", "dbcp", "django-pool-exceeded",
                                                          "dbcp-exceeded"}, predicted
    assert predicted["django-pool-exceeded"].endswith("up to 3 of them wait for a connection, and a wait past "
                                                      "0.2 s fails with django_pool_timeout")
    said = {w["cell"]: w["text"] for w in warnings(data, summaries(data)[0]) if "pool smaller" in w["text"]}
    assert set(said) == {cid for cid, w in predicted.items() if w}
    failed = re.search(r"pool wait p95 ([\d,.]+) ms \(Server-Timing\); ([\d,]+) requests failed", said[
        "django-pool-exceeded"])
    assert failed and int(failed[2].replace(",", "")) > 0  # the run shows it happening
    waited = re.search(r"pool wait p95 ([\d,.]+) ms", said["django-pool"])
    assert waited and float(waited[1].replace(",", "")) > 10  # a checkout without a wait takes microseconds
