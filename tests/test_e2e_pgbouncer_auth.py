"""Issue 14 (part): PgBouncer's auth_file holds the app role's SCRAM secret as PostgreSQL stores it, so a
client login costs PgBouncer no PBKDF2 on its single thread. With a plain password there, PgBouncer
transaction mode at CONN_MAX_AGE=0 ran at half the rate of direct connections (quick.toml: 70 vs 140
req/s), inverting a ranking users act on. Measured alternately in one run."""

from __future__ import annotations

import pytest

from connbench.services.pgbouncer import pgbouncer_binary
from tests.conftest import cell_data, run_cli, write_scenario

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(pgbouncer_binary() is None, reason="pgbouncer not installed (make installs it)")]

PAIRS = 2
SCENARIO = """
[scenario]
name = "pgb-auth"
[defaults]
workers = 2
conn_max_age = 0
users = 8
spawn_rate = 8
warmup = 1
duration = 4
cooldown = 0.5
mix = { read = 1 }
""" + "".join(f"""
[[matrix.include]]
id = "direct-{i}"
pooling = "direct"
[[matrix.include]]
id = "pgb-{i}"
pooling = "pgbouncer-transaction"
""" for i in range(PAIRS))


def rate(run_dir, cell_id) -> float:
    cell = cell_data(run_dir, cell_id)
    assert cell.status == "completed", (cell_id, cell.error)
    m0, m1 = cell.phase("measure")
    req = cell.csv("requests.csv")
    ok = req[(req.t_intended >= m0) & (req.t_intended < m1) & (req.error_class == "")]
    return len(ok) / (m1 - m0)


def test_pgbouncer_with_scram_secrets_is_not_slower_than_direct_at_conn_max_age_0(tmp_path):
    run_dir = tmp_path / "run"
    run_cli("run", str(write_scenario(tmp_path / "s.toml", SCENARIO)), "--run-dir", str(run_dir), "--no-report",
            check=True)
    direct = sum(rate(run_dir, f"direct-{i}") for i in range(PAIRS))
    pgb = sum(rate(run_dir, f"pgb-{i}") for i in range(PAIRS))
    assert direct > 50 and pgb >= 0.9 * direct, (pgb, direct)
