"""Generator workers, off the machine: [generator] and `connbench worker` refuse bad input with one clean error, and
analysis names each Locust worker's share, CPU and lag (summary_generators.csv, the report) on a run made by
the fixture writers, with the rows and CPU reports a master writes (locustfiles/requestlog.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from connbench import results as R
from connbench.analysis.generators import generator_rows
from connbench.analysis.load import load_run
from connbench.analysis.report import build_report
from connbench.analysis.summarize import summaries
from connbench.contract import GENERATOR_LOST, REQUESTS_COLUMNS, TIMING_COLUMNS
from connbench.scenario import expand
from connbench.services.locust import merge_generators
from tests.fixtures.make_runs import T0, manifest, run_cell, sampler_rows
from tests.support import run_cli, write_scenario

BASE = """
[scenario]
name = "g"
[defaults]
users = 2
"""


@pytest.mark.parametrize("table, key, says", [
    ("workers = -1", "generator.workers", "greater than or equal to 0"),
    ("workers = 1\nremote = 2", "generator", "remote (2) cannot exceed workers (1)"),
    ("workers = 2\nremote = 1", "generator", "remote workers need a fixed port"),
    ('workers = 2\nbind = "10.1.2.3"', "generator", "not a loopback address"),
    ('workers = 2\nbind = "somewhere"', "generator", "is not an IP address"),
    ('workers = 2\nbind = "0.0.0.0"\nallow_remote = true', "generator", "is every address"),
    ('workers = 2\non_worker_lost = "ignore"', "generator.on_worker_lost", "'fail' or 'continue'"),
    ("workers = 2\nprocesses = 3", "generator.processes", "allowed: workers, remote, wait_s"),
])
def test_bad_generator_table_is_one_clean_error(tmp_path, table, key, says):
    path = write_scenario(tmp_path / "g.toml", BASE + "[generator]\n" + table + "\n")
    res = run_cli("validate", str(path))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert str(path) in res.stderr and key in res.stderr and says in res.stderr, res.stderr


def test_generator_flags_conflict_cleanly(tmp_path):
    path = write_scenario(tmp_path / "g.toml", BASE)
    res = run_cli("run", str(path), "--generator-workers", "2", "--locust-processes", "2",
                  "--run-dir", str(tmp_path / "run"))
    assert res.returncode == 2 and "choose one" in res.stderr and not (tmp_path / "run").exists()
    res = run_cli("run", str(path), "--generator-workers", "65", "--run-dir", str(tmp_path / "run"))
    assert res.returncode == 2 and "--generator-workers 65" in res.stderr and "0 to 64" in res.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, says", [
    (["--master", "nowhere"], "expected HOST:PORT"),
    (["--master", "127.0.0.1:99999"], "expected HOST:PORT"),
    (["--master", "10.1.2.3:5557"], "not a loopback address; pass --allow-remote"),
    (["--master", "127.0.0.1:5557", "--name", "a b"], "--name 'a b'"),
    (["--master", "127.0.0.1:5557", "--locustfile", "/nonexistent.py"], "no such file"),
])
def test_bad_worker_arguments_are_one_clean_error(tmp_path, args, says):
    res = run_cli("worker", *args, "--once", "--reports", str(tmp_path / "reports"))
    assert res.returncode == 2 and says in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "reports").exists()  # nothing started


def test_worker_logs_that_cannot_be_written_are_one_clean_error(tmp_path):
    (tmp_path / "file").write_text("")
    res = run_cli("worker", "--master", "127.0.0.1:5557", "--once", "--reports", str(tmp_path / "file"))
    assert res.returncode == 2 and "--reports: cannot write its logs" in res.stderr and "Traceback" not in res.stderr


def test_a_bind_address_this_machine_lacks_is_refused_before_anything_starts(tmp_path):
    path = write_scenario(tmp_path / "g.toml", BASE + '[generator]\nworkers = 1\nbind = "192.0.2.7"\n'
                                                      'allow_remote = true\n')  # TEST-NET-1: never ours
    res = run_cli("run", str(path), "--run-dir", str(tmp_path / "run"))
    assert res.returncode == 2 and "generator.bind 192.0.2.7: cannot listen there" in res.stderr, res.stderr
    assert not (tmp_path / "run").exists()


# Two workers over the measure window [4, 12): w0 sends 200 requests on time; w1 sends 200, each 20 ms late, and
# reports 95 % of a core (w0 40 %); w1 is then lost at t = 10.
RAW = {"scenario": {"name": "fixture-generators"},
       "defaults": {"workers": 2, "users": 4, "duration": 8, "warmup": 2, "cooldown": 2}}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gen") / "run_gen"
    sc = expand.from_dict(RAW, Path("scenarios/fixture-generators.toml"))
    (cell,) = sc.cells
    p = R.RunPaths(root).cell(cell.cell_id)
    base = T0
    rows = []
    for j in range(200):
        t = base + 4 + j * 0.04
        rows.append((repr(t), repr(t), "/db/read", "5.0", "5.0", 200, "", 0, *[""] * len(TIMING_COLUMNS), "w0"))
        rows.append((repr(t), repr(t + 0.02), "/db/read", "25.0", "5.0", 200, "", 0, *[""] * len(TIMING_COLUMNS), "w1"))
    R.write_csv_atomic(p.requests, REQUESTS_COLUMNS, sorted(rows, key=lambda r: float(r[0])))
    sampler_rows(p, base, {t: 2 for t in range(15)}, {t: 10 for t in range(15)})
    doc = run_cell(p, cell, base)
    R.append_event(p.events, base + 10, GENERATOR_LOST, "w1 stopped sending heartbeats")
    # the master's generators.csv, merged into processes.csv as the cell does once the sampler stopped
    p.locust_raw.mkdir(parents=True)
    gen = [(repr(base + t), name, pid, round(rate * t, 4), 1000, repr(base + t))
           for t in range(15) for name, pid, rate in (("w0", 11, 0.40), ("w1", 12, 0.95))]
    R.write_csv_atomic(p.locust_raw / "generators.csv", ("t", "generator", "pid", "cpu_seconds", "rss_bytes",
                                                          "t_master"), gen)
    assert merge_generators(p) == len(gen)
    manifest(root, sc, [doc], T0 - 5, T0 + 100)
    return root


def test_each_worker_is_accounted(run):
    (cell,) = load_run(run).cells
    by = {r["generator"]: r for r in generator_rows(cell)}
    assert set(by) == {"w0", "w1"} and by["w0"]["requests"] == by["w1"]["requests"] == 200
    assert by["w0"]["cpu_pct"] == pytest.approx(40.0) and by["w1"]["cpu_pct"] == pytest.approx(95.0)
    assert by["w0"]["lag_p99_ms"] == pytest.approx(0.0) and by["w1"]["lag_p99_ms"] == pytest.approx(20.0)
    assert (by["w0"]["saturated"], by["w1"]["saturated"], by["w1"]["lagged"]) == (False, True, True)


def test_the_summary_and_report_name_the_saturated_lagging_and_lost_worker(run):
    cells, _ = summaries(load_run(run))
    row = cells.iloc[0]
    assert (row["generators"], row["generator_busiest"], row["generator_laggiest"]) == (2, "w1", "w1")
    assert row["generator_cpu_max"] == pytest.approx(95.0) and bool(row["generator_saturated"])
    assert row["generators_lost"] == 1 and row["generators_lost_names"] == "w1 stopped sending heartbeats"
    html = build_report(run).read_text()
    assert "Locust worker w1 saturated: it used 95" in html
    assert "Locust worker w1 fell behind the schedule" in html
    assert "Locust worker(s) lost mid-test: w1 stopped sending heartbeats" in html
    with open(R.RunPaths(run).summary_generators, newline="") as fh:
        lines = fh.read().splitlines()
    assert lines[0] == ",".join(R.GENERATOR_SUMMARY_COLUMNS) and len(lines) == 3
    # the workers' own reports are a breakdown, never machine CPU: with no sampled component, no total
    assert row["cpu_total"] != row["cpu_total"] and "cpu_locust_worker" not in cells.columns
