"""The app and the locustfile know the harness only through connbench.contract."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from connbench.contract import APP_ENV, AppConfig, Database, LoadConfig
from connbench.run.stack import app_config, load_config
from connbench.scenario.expand import prune_reason
from connbench.scenario.knobs import POOLINGS, Knobs, ScenarioMeta
from tests.support import ROOT

DB = Database("127.0.0.1", 5432, "connbench", "app", "pw")


def run_py(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=60)


def test_contract_and_classifier_load_nothing_but_the_standard_library():
    res = run_py("import sys, connbench.contract, connbench.errorclass; "
                 "print(sorted(m for m in sys.modules if m.split('.')[0] in "
                 "('pydantic', 'psycopg', 'django', 'pandas', 'rich', 'psutil')))")
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stderr


@pytest.mark.parametrize("pooling", POOLINGS)
def test_app_config_round_trips_and_builds_djangos_database(pooling):
    k = Knobs(pooling=pooling, conn_max_age=0 if pooling == "django-pool" else "none", pool_max_size=3,
              dbcp_pool_size=5)
    cfg = app_config(k, DB)
    env = cfg.to_env()
    assert list(env) == [APP_ENV]
    back = AppConfig.from_dict(json.loads(env[APP_ENV]))
    assert back == cfg
    db = back.django_database()
    assert (db["HOST"], db["PORT"], db["USER"]) == ("127.0.0.1", "5432", "app")
    assert db["CONN_MAX_AGE"] == (0 if pooling == "django-pool" else None)
    assert ("pool" in db["OPTIONS"]) == (pooling == "django-pool")
    assert db["ENGINE"].startswith("dj_db_conn_pool") == (pooling == "dj-db-conn-pool")
    assert db.get("DISABLE_SERVER_SIDE_CURSORS", False) == (pooling == "pgbouncer-transaction")
    for ssc, disabled in (("on", False), ("off", True)):
        forced = AppConfig.from_dict({**json.loads(env[APP_ENV]), "server_side_cursors": ssc}).django_database()
        assert forced.get("DISABLE_SERVER_SIDE_CURSORS", False) == disabled
    if pooling == "django-pool":
        assert db["OPTIONS"]["pool"]["max_size"] == 3
    if pooling == "dj-db-conn-pool":
        assert db["POOL_OPTIONS"]["POOL_SIZE"] == 5


def test_session_timeouts_are_libpq_options_and_pgbouncer_cells_are_pruned():
    k = Knobs(conn_max_age=60, idle_session_timeout_ms=300, idle_in_transaction_session_timeout_ms=1000)
    cfg = app_config(k, DB)
    assert AppConfig.from_dict(json.loads(cfg.to_env()[APP_ENV])) == cfg
    assert cfg.django_database()["OPTIONS"]["options"] == (
        "-c idle_in_transaction_session_timeout=1000 -c idle_session_timeout=300")
    assert "options" not in app_config(Knobs(), DB).django_database()["OPTIONS"]  # nothing unless asked
    pgb = Knobs(pooling="pgbouncer-transaction", idle_session_timeout_ms=300)
    assert "PgBouncer refuses" in (prune_reason(pgb, ScenarioMeta(name="t")) or "")


def test_load_config_round_trips(tmp_path):
    from connbench.results import CellPaths

    cfg = load_config(Knobs(rate=2.5, mix={"read": 1, "slow": 1, "slow_ms": 80}), ["http://127.0.0.1:1"],
                      CellPaths(tmp_path))
    back = LoadConfig.from_dict(json.loads(cfg.to_env()["CONNBENCH_LOAD"]))
    assert back == cfg and back.rate == 2.5 and back.mix["slow_ms"] == 80


def test_the_app_has_no_defaults_of_its_own():
    """Started without the harness's configuration, the app refuses at once instead of guessing."""
    env = {"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "connbench.target_app.settings"}
    res = run_py("import django; django.setup()", env=env)
    assert res.returncode != 0 and "CONNBENCH_APP is not set" in res.stderr
    res = run_py("import django; django.setup()", env={**env, APP_ENV: '{"db": {}}'})
    assert res.returncode != 0 and "CONNBENCH_APP is malformed" in res.stderr
    good = app_config(Knobs(conn_max_age=60), DB).to_env()
    res = run_py("import django; django.setup(); from django.conf import settings; "
                 "print(settings.DATABASES['default']['CONN_MAX_AGE'])", env={**env, **good})
    assert res.returncode == 0 and res.stdout.strip() == "60", res.stderr
