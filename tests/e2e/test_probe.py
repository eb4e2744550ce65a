"""`connbench probe` on real processes."""

from __future__ import annotations

import pytest

from tests.support import assert_no_leftovers, read_json, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.beside_others]


def probe(run_dir, *args):
    res = run_cli("probe", "--run-dir", str(run_dir), "--no-report", *args)
    assert res.returncode == 0, res.stdout + res.stderr
    return read_json(run_dir / "probe.json"), res.stdout + res.stderr, run_dir


def test_gthread_ramp_reaches_workers_x_threads_and_sequential_is_explained(tmp_path, run_dir):
    # One gthread worker per dyno: the probe's clients go round-robin over dynos, so each worker's share
    # of the load is fixed. Two workers behind one port split keep-alive sockets by chance (12 sockets
    # split 12/0 to 7/5 in 12 trials here), and a worker with too few never starts its 3rd thread.
    doc, out, _ = probe(run_dir, "--mode", "both", "--dynos", "2", "--workers", "1", "--threads", "3",
                        "--worker-class", "gthread", "--conn-max-age", "none", "--path", "/db/slow?ms=20")
    ramp, seq = doc["results"]["ramp"], doc["results"]["sequential"]
    assert ramp["plateau"]["plateau"] == 6 and ramp["plateau"]["settled"]
    assert seq["plateau"]["plateau"] is not None and seq["plateau"]["plateau"] <= 6
    assert doc["predicted"]["at_rest"] == 6 and doc["matches"]
    if seq["plateau"]["plateau"] < 6:
        assert "thread pool starts a new thread only when none is idle" in " ".join(doc["notes"])
        assert "sequential hits plateaued at" in out
    assert "select count(*) from pg_stat_activity where pid <> pg_backend_pid() and usename = current_user" in out


@pytest.fixture(scope="module")
def two_by_three(tmp_path_factory):
    """2 dynos x 3 sync workers, persistent, on a 22-connection server (20 for the app): one probe, with its report,
    for the plateau, the headroom table and the report's chart."""
    run_dir = tmp_path_factory.mktemp("probe") / "run"
    res = run_cli("probe", "--run-dir", str(run_dir), "--mode", "ramp", "--dynos", "2", "--workers", "3",
                  "--conn-max-age", "600", "--max-connections", "22")
    assert_no_leftovers(run_dir)
    assert res.returncode == 0, res.stdout + res.stderr
    return read_json(run_dir / "probe.json"), res.stdout + res.stderr, run_dir


def test_two_dynos_three_workers_persistent_matches(two_by_three):
    doc, out, _ = two_by_three
    assert doc["plateau"] == 6 and doc["matches"] and doc["per_dyno"] == 3
    assert "matches" in out


def test_conn_max_age_0_rests_near_zero(tmp_path, run_dir):
    doc, _, _ = probe(run_dir, "--mode", "ramp", "--workers", "3", "--conn-max-age", "0")
    assert doc["plateau"] <= 1  # counted at rest, after each step
    assert doc["results"]["ramp"]["peak_during_load"] >= 1  # while requests ran, they had connections


def test_headroom_for_a_20_connection_plan(two_by_three):
    doc, out, _ = two_by_three
    assert doc["server"]["app_slots"] == 20 and doc["per_dyno"] == 3 and doc["max_dynos"] == 6
    assert "at most 6 dynos of this shape fit in 20 connections (18 connections)" in out
    last = doc["headroom"][-1]
    assert {k: v for k, v in last.items() if not k.startswith("memory")} == {
        "dynos": 7, "connections": 21, "limit": 20, "fits": False, "preboot": False, "one_off": 0, "note": None}
    # server memory: one backend's median PSS (a few MiB on this PostgreSQL) times the row's connections
    per_backend = [row["memory_mib"] / row["connections"] for row in doc["headroom"]]
    assert last["memory_measure"] == "pss" and 0.3 < per_backend[0] < 30
    assert max(per_backend) - min(per_backend) < 1e-9 and "server memory" in out and "MiB PSS" in out


def test_remote_target_needs_allow_remote(tmp_path):
    res = run_cli("probe", "--target", "http://10.1.2.3:8000", "--database-url", "postgresql://u:s3cretpw@127.0.0.1/db",
                  "--run-dir", str(tmp_path / "p"))
    assert res.returncode == 2 and "--allow-remote" in res.stderr and "s3cretpw" not in res.stderr


def test_probe_report_has_its_chart_and_no_phantom_cell(two_by_three):
    _, _, run_dir = two_by_three
    assert (run_dir / "charts" / "probe.png").stat().st_size > 5000
    html = (run_dir / "index.html").read_text()
    assert "charts/probe.png" in html and "Probe" in html and "cell.json missing" not in html
    assert not (run_dir / "cells").exists() and (run_dir / "probe-app" / "connections.csv").exists()
