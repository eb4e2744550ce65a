"""Issue 11: a finished run directory holds no secret: grepped for every password the run used, and (issue 14)
for the TLS private key made for the run."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from connbench.services.pgbouncer import pgbouncer_binary
from connbench.services.postgres import system_bin_dir
from tests.support import CLI, ROOT, assert_no_leftovers, write_scenario

pytestmark = pytest.mark.e2e

SCENARIO = """
[scenario]
name = "secrets"
[defaults]
workers = 2
conn_max_age = 60
users = 4
spawn_rate = 4
warmup = 0.5
duration = 2
cooldown = 0.5
[matrix]
pooling = ["direct", "pgbouncer-transaction"]
"""
# With Debian's PostgreSQL: a TLS cell through PgBouncer, so the per-run private key is there to leak.
TLS_CELL = """
[[matrix.include]]
id = "tls"
server = "system"
tls = true
pooling = "pgbouncer-transaction"
"""


auth_entries: dict[str, str] = {}


def harvest(private_root, found: set[str]) -> None:
    """Passwords as the harness keeps them while it runs: postgres-*.json and PgBouncer's auth_file."""
    for d in private_root.glob("connbench-private-*"):
        for f in list(d.glob("*")):
            try:
                text = f.read_text()
            except OSError:
                continue  # removed under us: the run is moving on
            if f.name.startswith("postgres-"):
                try:
                    found.update(json.loads(text).values())
                except ValueError:
                    continue
            elif f.name.endswith("server.key"):
                found.update(line for line in text.splitlines()[1:3] if len(line) > 40)  # the key's own bytes
            elif f.name.endswith("userlist.txt"):
                entries = dict(line.split('"')[1::2] for line in text.splitlines() if line.count('"') == 4)
                found.update(entries.values())
                auth_entries.update(entries)


def test_finished_run_directory_holds_no_password(tmp_path):
    if pgbouncer_binary() is None:
        pytest.skip("pgbouncer not installed (make installs it)")
    # pytest's tmp is 0700 root's: the unprivileged PostgreSQL could not read its password file there
    private_root = Path(tempfile.mkdtemp(prefix="cbtest-private-"))
    os.chmod(private_root, 0o755)
    run_dir = tmp_path / "run"
    tls = system_bin_dir() is not None
    scen = write_scenario(tmp_path / "s.toml", SCENARIO + (TLS_CELL if tls else ""))
    env = {**os.environ, "CONNBENCH_PRIVATE_ROOT": str(private_root)}
    proc = subprocess.Popen([*CLI, "run", str(scen), "--run-dir", str(run_dir)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    found: set[str] = set()
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        harvest(private_root, found)
        time.sleep(0.05)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    # postgres: app + superuser; PgBouncer: its admin user and the app role's SCRAM secret; the TLS key
    assert len(found) >= (6 if tls else 4), found
    # PgBouncer's auth_file holds the app role's secret as PostgreSQL stores it, never its password
    assert auth_entries["app"].startswith("SCRAM-SHA-256$4096:"), "plain password in PgBouncer's auth_file"
    assert not list(private_root.iterdir()), "the private directory outlived the run"
    leaks = []
    for root, _dirs, files in os.walk(run_dir):
        for name in files:
            data = open(os.path.join(root, name), "rb").read()
            leaks += [f"{os.path.join(root, name)}" for pw in found if pw.encode() in data]
            leaks += [f"{os.path.join(root, name)}: a private key"] * (b"PRIVATE KEY" in data)
    assert not leaks, leaks
    assert not [p for p in run_dir.rglob("*") if "secret" in p.name or p.name == "pg"]
    for pw in found:
        assert pw not in out and pw not in err
    assert_no_leftovers(run_dir)
    private_root.rmdir()
