"""Connections set up as in production, on Debian's PostgreSQL (server = "system", built with
OpenSSL). Each auth method is what pg_hba and pg_authid say; with tls every app connection is encrypted
(pg_stat_ssl, sampled), through PgBouncer too; a TLS connection costs more than a plain one, timed in the
same run. (TLS on the embedded server, built without OpenSSL, is pruned: tests/unit/test_scenario.py.)

Counts are certain: one sync worker per cell at CONN_MAX_AGE=none holds exactly one connection from its
first request in the warm-up, so every sample of the measure window sees it.
"""

from __future__ import annotations

import pytest

from connbench import results as R
from connbench.services.pgbouncer import pgbouncer_binary
from connbench.services.postgres import system_bin_dir
from tests.support import Secrets, cell_data

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(system_bin_dir() is None, reason="Debian's PostgreSQL not installed (make does)"),
              pytest.mark.skipif(pgbouncer_binary() is None, reason="pgbouncer not installed (make installs it)")]

SCENARIO = """
[scenario]
name = "connect-cost-e2e"
[defaults]
server = "system"
conn_max_age = "none"
dynos = 1
workers = 1
worker_class = "sync"
users = 4
spawn_rate = 4
warmup = 1
duration = 3
cooldown = 0.5
calibrate_n = 40
mix = { read = 1 }

[[matrix.include]]
id = "scram"

[[matrix.include]]
id = "scram-tls"
tls = true

[[matrix.include]]
id = "md5"
auth = "md5"

[[matrix.include]]
id = "trust"
auth = "trust"

[[matrix.include]]
id = "pgbouncer-tls"
tls = true
pooling = "pgbouncer-transaction"
pgbouncer_pool_size = 1
"""


@pytest.fixture(scope="module")
def harvested(run_factory):
    """The run, its secrets harvested while it runs: TLS keys among them (they must be in nothing it leaves)."""
    secrets = Secrets()
    proc, run_dir = run_factory.spawn(SCENARIO, "--no-report", name="connect")
    out, err = secrets.watch(proc, timeout=600)
    run_factory.finish(proc, run_dir, output=(out, err))
    return run_dir, out, err, secrets


@pytest.fixture(scope="module")
def run(harvested):
    return harvested[0]


def test_no_password_and_no_tls_key_is_left_in_the_run_directory(harvested):
    """Four servers (app + superuser passwords each), PgBouncer's admin and auth_file, a TLS key per server."""
    run_dir, out, err, secrets = harvested
    secrets.assert_none_left(run_dir, out, err, at_least=10)


def _servers(run_dir) -> dict[tuple, R.ServerInfo]:
    m = R.Manifest.load(run_dir / R.MANIFEST_JSON)
    return {(s.auth, s.tls): s for s in m.servers.values()}


def test_each_auth_is_what_pg_hba_and_pg_authid_say(run):
    servers = _servers(run)
    assert servers.keys() == {("scram-sha-256", False), ("scram-sha-256", True), ("md5", False), ("trust", False)}
    for (auth, tls), s in servers.items():
        assert s.kind == "system" and s.build["with_openssl"]
        assert s.verified["hba_methods"] == [auth]
        assert s.verified["app_password_stored"] == ("md5" if auth == "md5" else "SCRAM-SHA-256")
        assert s.verified["ssl"] == ("on" if tls else "off") and s.verified["harness_session_encrypted"] is tls


@pytest.mark.parametrize("cell_id, encrypted", [("scram", False), ("scram-tls", True), ("pgbouncer-tls", True)])
def test_tls_encrypts_every_app_connection(run, cell_id, encrypted):
    cell = cell_data(run, cell_id)
    assert cell.status == "completed", (cell.error, cell.damage)
    m0, m1 = cell.phase("measure")
    db = cell.csv(R.DB_CSV)
    during = db[(db.t >= m0) & (db.t < m1)]
    assert len(during) and (during.client_backends >= 1).all()  # the worker's connection (or PgBouncer's)
    expected = during.client_backends if encrypted else 0
    assert (during.ssl_backends == expected).all()


def test_a_tls_connection_costs_more_than_a_plain_one(run):
    plain = cell_data(run, "scram").doc.connect_cost["direct"]
    tls = cell_data(run, "scram-tls").doc.connect_cost["direct"]
    assert plain.n == tls.n == 40
    # the handshake is extra work on top of SCRAM. Compared by the fastest of 40: the cells run one after the
    # other, and a busy moment can slow a median, never the best case below what the work takes
    assert tls.min_ms > plain.min_ms, (plain, tls)
    bouncer = cell_data(run, "pgbouncer-tls").doc.connect_cost
    assert set(bouncer) == {"direct", "pgbouncer"}
    m = R.Manifest.load(run / R.MANIFEST_JSON)
    assert {"system scram-sha-256 tls=on direct", "system scram-sha-256 tls=on pgbouncer",
            "system scram-sha-256 tls=off direct", "system md5 tls=off direct"} <= set(m.calibration)

