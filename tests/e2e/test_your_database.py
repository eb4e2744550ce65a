"""`connbench run --database-url` against a PostgreSQL the test starts itself, not through the
harness: counts right, nothing created beyond the app's tables, nothing left running, no password written."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest

from connbench.services.postgres import pg_bin_dir
from connbench.services.procs import free_port, service_user
from tests.support import cell_data, read_json, run_cli, write_scenario

pytestmark = [pytest.mark.e2e, pytest.mark.beside_others]

SCENARIO = """
[scenario]
name = "yours"
[defaults]
workers = 2
conn_max_age = 60
users = 4
warmup = 1
duration = 3
cooldown = 1
calibrate_n = 5
[[matrix.include]]
id = "persistent"
[[matrix.include]]
id = "needs-its-own-server"
max_connections = 7
"""


@pytest.fixture
def their_postgres(tmp_path):
    """A cluster as a user would have one: its own superuser, an app role with a password, the app's database."""
    user = service_user()
    base = Path(tempfile.mkdtemp(prefix="connbench-theirs-"))  # under /tmp: the service user can reach it
    if user:
        shutil.chown(base, user.uid, user.gid)
    as_user = {"user": user.uid, "group": user.gid, "extra_groups": []} if user else {}
    bins, port = pg_bin_dir("embedded", user), free_port()  # a read-only copy when the venv is out of its reach
    pw = secrets.token_hex(8)
    (base / "pw").write_text(pw)
    if user:
        shutil.chown(base / "pw", user.uid, user.gid)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    subprocess.run([str(bins / "initdb"), "-D", str(base / "data"), "-U", "owner", "--pwfile", str(base / "pw"),
                    "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"],
                   check=True, capture_output=True, env=env, **as_user)
    subprocess.run([str(bins / "pg_ctl"), "-D", str(base / "data"), "-l", str(base / "log"), "-w", "start", "-o",
                    f"-p {port} -c listen_addresses=127.0.0.1 -k {base} -c max_connections=40"],
                   check=True, capture_output=True, env=env, **as_user)
    try:
        with psycopg.connect(host="127.0.0.1", port=port, user="owner", password=pw, dbname="postgres",
                             autocommit=True) as c:
            c.execute(f"CREATE ROLE shopper LOGIN PASSWORD '{pw}'")
            c.execute("CREATE DATABASE shopdb OWNER shopper")
        yield {"url": f"postgresql://shopper:{pw}@127.0.0.1:{port}/shopdb", "port": port, "password": pw,
               "owner": dict(host="127.0.0.1", port=port, user="owner", password=pw)}
    finally:
        subprocess.run([str(bins / "pg_ctl"), "-D", str(base / "data"), "-m", "fast", "-w", "stop"],
                       capture_output=True, env=env, **as_user)
        shutil.rmtree(base, ignore_errors=True)


def _catalog(owner: dict) -> tuple[set, set, set]:
    with psycopg.connect(**owner, dbname="postgres") as c:
        dbs = {r[0] for r in c.execute("SELECT datname FROM pg_database")}
        roles = {r[0] for r in c.execute("SELECT rolname FROM pg_roles")}
    with psycopg.connect(**owner, dbname="shopdb") as c:
        tables = {r[0] for r in c.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    return dbs, roles, tables


def test_run_on_your_database(tmp_path, run_dir, their_postgres):
    before = _catalog(their_postgres["owner"])
    scenario = write_scenario(tmp_path / "yours.toml", SCENARIO)
    res = run_cli("run", str(scenario), "--run-dir", str(run_dir), "--database-url", their_postgres["url"])
    assert res.returncode == 0, res.stdout + res.stderr
    manifest = read_json(run_dir / "manifest.json")
    # the cell that needs another max_connections is pruned with the reason; the other runs on theirs
    assert [c["cell_id"] for c in manifest["cells"]] == ["persistent"]
    assert any("max_connections = 7" in p["reason"] and "--database-url" in p["reason"] for p in manifest["pruned"])
    srv = manifest["servers"]["external"]
    assert srv["kind"] == "external" and srv["max_connections"] == 40 and srv["settings"]["user"] == "shopper"
    # counts right: 2 sync workers, persistent connections -> 2, attributed per worker
    cell = cell_data(run_dir, "persistent")
    conns = cell.csv("connections.csv")
    m0, m1 = cell.phase("measure")
    pg = conns[(conns.source == "postgres") & conns.worker.notna() & (conns.t >= m0 + (m1 - m0) / 2) & (conns.t < m1)]
    assert (pg.groupby("t")["count"].sum() == 2).all() and len(pg)
    # the server is not connbench's: its backends' memory is not read, and the manifest and cell.json say so
    assert manifest["cells"][0]["memory"].startswith("not measured") and cell.doc.memory.startswith("not measured")
    assert not any(cell.csv("backends.csv").event == "mem") and (cell.csv("backends.csv").event == "seen").sum() >= 2
    # nothing created beyond the app's tables: no database, no role; only the migrations' tables
    dbs, roles, tables = _catalog(their_postgres["owner"])
    assert dbs == before[0] and roles == before[1] and before[2] == set()
    assert tables == {"bench_item", "django_migrations", "django_content_type"}
    # the password is in no output
    pw = their_postgres["password"].encode()
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert pw not in path.read_bytes(), path
    assert pw.decode() not in res.stdout + res.stderr


def test_a_remote_database_needs_allow_remote(tmp_path):
    scenario = write_scenario(tmp_path / "yours.toml", SCENARIO)
    res = run_cli("run", str(scenario), "--run-dir", str(tmp_path / "run"), "--database-url",
                  "postgresql://u:hunter2@10.9.8.7:5432/db")
    assert res.returncode == 2 and "--allow-remote" in res.stderr and "hunter2" not in res.stderr + res.stdout
    assert not (tmp_path / "run").exists()
