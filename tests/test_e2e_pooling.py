"""Issue 5: every pooling mode is the real thing, proven by the sampler's counts on real processes.

direct is covered in test_e2e_sampler.py (plateau = dynos x workers x threads; churn = request rate).
"""

from __future__ import annotations

import pandas as pd
import pytest

from connbench.services.pgbouncer import pgbouncer_binary
from tests.conftest import read_json, run_cli, write_scenario

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(pgbouncer_binary() is None, reason="pgbouncer not installed (make installs it)")]

SCENARIO = """
[scenario]
name = "modes"
[defaults]
workers = 2
worker_class = "gthread"
threads = 4
users = 16
spawn_rate = 16
warmup = 1
duration = 4
cooldown = 1.5
mix = { read = 1, slow = 1, slow_ms = 30 }

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

# each pool, exceeded: its own timeout error
[[matrix.include]]
id = "django-pool-exceeded"
pooling = "django-pool"
pool_min_size = 1
pool_max_size = 1
pool_timeout = 0.2
mix = { slow = 1, slow_ms = 400 }

[[matrix.include]]
id = "dbcp-exceeded"
pooling = "dj-db-conn-pool"
dbcp_pool_size = 1
dbcp_max_overflow = 0
dbcp_timeout = 0.2
mix = { slow = 1, slow_ms = 400 }

[[matrix.include]]
id = "pgb-exceeded"
pooling = "pgbouncer-transaction"
pgbouncer_pool_size = 1
pgbouncer_query_wait_timeout = 1
mix = { slow = 1, slow_ms = 600 }
"""


class Cell:
    def __init__(self, run_dir, cell_id):
        d = run_dir / "cells" / cell_id
        self.doc = read_json(d / "cell.json")
        assert self.doc["status"] == "completed", self.doc
        self.m0, self.m1 = self.doc["phases"]["measure"]
        self.c0, self.c1 = self.doc["phases"]["cooldown"]
        self.conns = pd.read_csv(d / "connections.csv", dtype={"dyno": str, "worker": str})
        self.db = pd.read_csv(d / "db.csv")
        self.reqs = pd.read_csv(d / "requests.csv", dtype={"error_class": str}).fillna({"error_class": ""})
        self.bouncer = pd.read_csv(d / "pgbouncer.csv") if (d / "pgbouncer.csv").exists() else None

    def window(self, df, t0, t1):
        return df[(df.t >= t0) & (df.t < t1)]

    def server_total(self, t0, t1):
        return self.window(self.db, t0, t1).client_backends

    def per_worker_max(self):
        pg = self.window(self.conns[self.conns.source == "postgres"], self.m0, self.m1)
        return pg.groupby(["t", "dyno", "worker"])["count"].sum().groupby(["dyno", "worker"]).max()

    def errors(self):
        r = self.reqs[(self.reqs.t_start >= self.m0) & (self.reqs.t_start < self.m1)]
        return r.error_class.value_counts().to_dict(), len(r)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("modes")
    run_dir = tmp / "run"
    run_cli("run", str(write_scenario(tmp / "modes.toml", SCENARIO)), "--run-dir", str(run_dir), "--no-report",
            check=True)
    return run_dir


def test_django_pool_between_min_and_max_per_worker_and_idle_kept(run):
    c = Cell(run, "django-pool")
    per_worker = c.per_worker_max()
    assert len(per_worker) == 2 and per_worker.between(1, 2).all() and per_worker.max() == 2
    assert c.server_total(c.m0, c.m1).max() <= 2 * 2
    held = c.server_total(c.c0 + 0.5, c.c1)
    assert len(held) and (held >= 2).all()  # idle connections stay in the pool after load
    assert c.window(c.db, c.m0, c.m1).sessions.diff().fillna(0).sum() <= 2  # no churn: reused


def test_pgbouncer_transaction_caps_server_connections(run):
    c = Cell(run, "pgb-transaction")
    assert c.server_total(c.m0, c.m1).max() <= 3  # default_pool_size 2 + reserve 1
    b = c.window(c.bouncer, c.m0, c.m1)
    clients = b.cl_active + b.cl_waiting
    assert clients.max() == 2 * 3  # app side: one persistent connection per thread
    assert (b.sv_active + b.sv_idle + b.sv_used + b.sv_login).max() <= 3
    assert c.errors()[0] == {"": c.errors()[1]}


def test_pgbouncer_session_pins_a_server_per_client_and_clients_wait(run):
    c = Cell(run, "pgb-session")
    b = c.window(c.bouncer, c.m0, c.m1)
    assert (b.cl_active == b.sv_active).all()  # session mode: each active client holds one server
    assert b.sv_active.max() == 2
    assert b.cl_waiting.max() > 0 and b.maxwait_s.max() > 1.0
    assert c.server_total(c.m0, c.m1).max() == 2


def test_dj_db_conn_pool_at_most_pool_size_plus_overflow_per_worker(run):
    c = Cell(run, "dbcp")
    per_worker = c.per_worker_max()
    assert len(per_worker) == 2 and (per_worker <= 2).all() and per_worker.max() == 2
    held = c.server_total(c.c0 + 0.5, c.c1)
    assert len(held) and (held <= 2).all()  # overflow closed; POOL_SIZE kept per worker


@pytest.mark.parametrize("cell_id, error_class", [
    ("django-pool-exceeded", "django_pool_timeout"),
    ("dbcp-exceeded", "dbcp_pool_timeout"),
    ("pgb-exceeded", "pgbouncer_wait_timeout"),
])
def test_exceeding_a_pool_raises_its_own_timeout(run, cell_id, error_class):
    counts, total = Cell(run, cell_id).errors()
    assert counts.get(error_class, 0) > 0, counts
    assert set(counts) <= {"", error_class}, counts
