"""connbench.results: the models round-trip and refuse wrong shapes; schema 1 is read through the migration;
analysis stays driver-free and names no file itself; the fixtures are what the writers write."""

from __future__ import annotations

import ast
import filecmp
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from connbench import results as R
from connbench.analysis.load import load_run
from connbench.analysis.report import build_report
from connbench.analysis.settings import INTERVAL_COLUMNS
from connbench.analysis.summarize import summarize
from connbench.contract import REQUESTS_COLUMNS
from connbench.results.migrate import SCHEMA_3_TIMING, SCHEMA_5_CONNECTION, SCHEMA_6_HAZARDS
from tests.fixture_runs import FIXTURES, copy_run
from tests.fixtures import make_runs

ROOT = Path(__file__).resolve().parents[2]
CELL = "pool-direct_cma-0"


# -- the models ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("model, path", [
    (R.Manifest, "run_a/manifest.json"), (R.CellDoc, f"run_a/cells/{CELL}/cell.json"),
    (R.CellDoc, "run_a/cells/pool-pgbouncer-session_cma-0/cell.json"), (R.Manifest, "run_probe/manifest.json"),
    (R.ProbeDoc, "run_probe/probe.json"),
])
def test_documents_round_trip(tmp_path, model, path):
    doc = model.load(FIXTURES / path)
    doc.dump(tmp_path / "again.json")
    assert model.load(tmp_path / "again.json") == doc
    assert (tmp_path / "again.json").read_text() == (FIXTURES / path).read_text()  # byte for byte


def test_a_key_a_writer_adds_survives_a_load_and_dump(tmp_path):
    raw = json.loads((FIXTURES / "run_a" / R.MANIFEST_JSON).read_text())
    raw["added_later"] = {"by": "a newer writer"}
    raw["cells"][0]["note"] = "kept"
    m = R.Manifest.from_dict(raw)
    m.dump(tmp_path / R.MANIFEST_JSON)
    back = json.loads((tmp_path / R.MANIFEST_JSON).read_text())
    assert back["added_later"] == {"by": "a newer writer"} and back["cells"][0]["note"] == "kept"


def test_sampler_config_round_trips_privately_and_never_shows_its_password(tmp_path):
    conf = R.SamplerConfig(cell_dir=str(tmp_path), app_role="cb_app", procs_file=str(tmp_path / R.PROCS_JSON),
                           pg=R.ConnInfo(host="127.0.0.1", port=5432, user="postgres", password="s3cret",
                                         dbname="connbench"))
    path = tmp_path / R.SamplerConfig.file_name("cell-1")
    conf.dump(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert R.SamplerConfig.load(path) == conf and conf.process_interval == 0.5 and conf.pgbouncer is None
    assert conf.pg.kwargs() == {"host": "127.0.0.1", "port": 5432, "user": "postgres", "password": "s3cret",
                                "dbname": "connbench"}
    assert "s3cret" not in repr(conf)
    path.write_text(json.dumps({**json.loads(path.read_text()), "interval": "0.1"}))
    with pytest.raises(R.ResultsError, match="interval: Input should be a valid number") as err:
        R.SamplerConfig.load(path)
    assert "s3cret" not in str(err.value)


@pytest.mark.parametrize("doc, message", [
    ([1, 2], "cell.json holds an array, not a JSON object"),
    ({"cell_id": "c"}, "cell.json has no valid schema_version"),
    ({"schema_version": "2"}, "cell.json has no valid schema_version"),
    ({"schema_version": 2, "cell_id": "c", "group": "c", "repeat": 0, "params": {}, "predicted": {},
      "status": "done"}, "cell.json does not match schema 7: status: Input should be 'pending', 'running'"),
    ({"schema_version": 2, "cell_id": "c", "group": "c", "repeat": "0", "params": {}, "predicted": {},
      "status": "completed"}, "repeat: Input should be a valid integer"),  # strict: "0" is not 0
    ({"schema_version": 2, "cell_id": "c", "group": "c", "repeat": 0, "params": {}, "predicted": {},
      "status": "completed", "phases": {"measure": [5.0, 4.0]}}, "phase measure ends before it begins"),
    ({"schema_version": 2, "cell_id": "c", "group": "c", "repeat": 0, "params": {}, "predicted": {},
      "status": "completed", "phases": {"measure": {"begin": 4}}}, "phases.measure: Input should be a valid list"),
])
def test_a_wrong_shape_is_a_clear_error(doc, message):
    with pytest.raises(R.ResultsError, match=message.replace("(", r"\(")):
        R.CellDoc.from_dict(doc)


def test_writers_cannot_build_a_wrong_document():
    with pytest.raises(ValidationError, match="status"):
        R.CellDoc(cell_id="c", group="c", repeat=0, params={}, predicted=R.Predicted(), status="done")
    with pytest.raises(ValidationError, match=f"must be {R.SCHEMA_VERSION}; older documents are read through upgrade"):
        R.Manifest(schema_version=1, run_id="r", started=1.0)
    m = R.Manifest(run_id="r", started=1.0)
    with pytest.raises(ValidationError):
        m.status = "finished"  # assignments are validated too
    doc = R.CellDoc(cell_id="c", group="c", repeat=0, params={}, predicted=R.Predicted(), status="running")
    doc.phases["measure"] = [2.0, 1.0]  # an in-place edit: caught when written
    with pytest.raises(R.ResultsError, match="cell.json not written: phases: Value error, phase measure ends"):
        doc.dump(Path("/nonexistent/cell.json"))


def test_the_probe_shape_analysis_used_to_tolerate_is_refused():
    # what tests/fixtures once wrote into probe.json (and the chart once learned to put up with)
    old = {"plateau": 6, "predicted": 6, "sequential_plateau": 4,
           "headroom": [{"dynos": 1, "connections": 6, "fits": True}]}
    with pytest.raises(R.ResultsError, match="probe.json has no valid schema_version"):
        R.ProbeDoc.from_dict(old)
    with pytest.raises(R.ResultsError, match=r"probe.json does not match schema 7: query: Field required; "
                                             r".* and 9 more"):
        R.ProbeDoc.from_dict({**old, "schema_version": 2})
    doc = json.loads((FIXTURES / "run_probe" / R.PROBE_JSON).read_text())
    doc["results"]["ramp"]["plateau"]["reached_at_step"] = 99
    with pytest.raises(R.ResultsError, match="results.ramp: Value error, plateau.reached_at_step 99 is not one"):
        R.ProbeDoc.from_dict(doc)


def test_manifest_record_takes_a_cells_outcome_and_the_overhead():
    m = R.Manifest(run_id="r", started=1.0, cells=[R.ManifestCell(cell_id="a", group="a"),
                                                   R.ManifestCell(cell_id="b", group="b")])
    for cid, status, overhead in (("a", "completed", 1.0), ("b", "completed", 2.0)):
        m.record(R.CellDoc(cell_id=cid, group=cid, repeat=0, params={}, predicted=R.Predicted(), status=status,
                           overhead_s=overhead, requests=10))
    assert [(c.status, c.requests) for c in m.cells] == [("completed", 10), ("completed", 10)]
    assert (m.overhead.per_cell_mean_s, m.overhead.per_cell_max_s) == (1.5, 2.0)


def test_every_file_name_is_in_the_paths():
    run = R.RunPaths("/r")
    cell = run.cell("c")
    names = {p.name for p in (run.manifest, run.summary, run.summary_groups, run.expectations, run.report,
                              run.probe, run.pids, cell.json, cell.requests, cell.connections, cell.db,
                              cell.pgbouncer, cell.processes, cell.events, cell.procs)}
    assert names == {R.MANIFEST_JSON, R.SUMMARY_CSV, R.SUMMARY_GROUPS_CSV, R.EXPECTATIONS_JSON, R.REPORT_HTML,
                     R.PROBE_JSON, R.PIDS_JSON, R.CELL_JSON, R.REQUESTS_CSV, R.CONNECTIONS_CSV, R.DB_CSV,
                     R.PGBOUNCER_CSV, R.PROCESSES_CSV, R.EVENTS_CSV, R.PROCS_JSON}
    assert cell.locust_raw.parent == cell.locust_started.parent == cell.locust == cell.root / R.LOCUST_DIR
    assert run.probe_app.processes == run.root / "probe-app" / R.PROCESSES_CSV


# -- reading schema 1 ---------------------------------------------------------------------------------
def test_processes_csv_cpu_percent_integrates_into_cumulative_seconds():
    v1 = [  # out of time order, two series, a first sample with no rate (NaN), a torn row without a time
        {"t": "11.5", "component": "locust", "dyno": "", "pid": "7", "cpu_percent": "25.0", "rss_bytes": "9"},
        {"t": "10.0", "component": "locust", "dyno": "", "pid": "7", "cpu_percent": "nan", "rss_bytes": "9"},
        {"t": "10.0", "component": "gunicorn-worker", "dyno": "0", "pid": "8", "cpu_percent": "", "rss_bytes": "9"},
        {"t": "10.5", "component": "locust", "dyno": "", "pid": "7", "cpu_percent": "50", "rss_bytes": "9"},
        {"t": "", "component": "locust", "dyno": "", "pid": "7", "cpu_percent": "90", "rss_bytes": ""},
        {"t": "12.0", "component": "gunicorn-worker", "dyno": "0", "pid": "8", "cpu_percent": "150", "rss_bytes": "9"},
    ]
    v2 = R.update_to_2(R.PROCESSES_CSV, v1)
    assert [(r["t"], r["pid"], r["cpu_seconds"]) for r in v2] == [
        ("11.5", "7", 0.5),  # 0 + 0.5 s x 50 % + 1 s x 25 %
        ("10.0", "7", 0.0), ("10.0", "8", 0.0),
        ("10.5", "7", 0.25),
        ("12.0", "8", 3.0)]  # 2 s x 150 %
    assert all("cpu_percent" not in r and r["rss_bytes"] == "9" for r in v2)
    assert R.upgrade(R.PROCESSES_CSV, v1, 1) == R.update_to_4(R.PROCESSES_CSV, v2)  # 2 -> 3 leaves it as it is
    assert R.upgrade(R.PROCESSES_CSV, v2, 2) == R.update_to_4(R.PROCESSES_CSV, v2)


def test_upgrade_refuses_a_newer_schema_and_fills_what_schema_1_left_out():
    with pytest.raises(R.SchemaVersionError, match="use a newer connbench"):
        R.upgrade(R.MANIFEST_JSON, {}, R.SCHEMA_VERSION + 1)
    m = R.Manifest.from_dict({"schema_version": 1, "run_id": "r", "started": 1.0})
    assert (m.kind, m.schema_version, m.written_version) == ("matrix", R.SCHEMA_VERSION, 1)


def test_a_schema_1_run_loads_through_the_migration(tmp_path):
    run = load_run(copy_run("run_v1", tmp_path))
    assert (run.written_version, run.schema_version, run.manifest.kind) == (1, R.SCHEMA_VERSION, "matrix")
    cell = next(c for c in run.cells if c.cell_id == CELL)
    assert cell.version == 1 and cell.doc.written_version == 1
    procs = cell.csv(R.PROCESSES_CSV)
    assert list(procs.columns) == list(R.PROCESSES_COLUMNS)
    # the fixture's locust ran 5 % outside the measure window, 40/60 % inside, one sample a second
    locust = procs[procs["component"] == "locust"].set_index("t")["cpu_seconds"]
    assert locust.iloc[:3].tolist() == pytest.approx([0.0, 0.05, 0.45])
    raw = (FIXTURES / "run_v1" / "cells" / CELL / R.PROCESSES_CSV).read_text()
    assert raw.startswith("t,component,dyno,pid,cpu_percent,rss_bytes")  # never rewritten


# summary.csv's columns of schema 5's connection life stories: blank for a run that did not record them
LIFE_COLUMNS = R.SUMMARY_COLUMNS[R.SUMMARY_COLUMNS.index("requests_per_connection_p50"):
                                 R.SUMMARY_COLUMNS.index("pss_total_mib") + 1]


def test_a_schema_1_run_summarizes_as_it_did_under_schema_1(tmp_path):
    summarize(copy_run("run_v1", tmp_path))
    new = pd.read_csv(tmp_path / "run_v1" / R.SUMMARY_CSV).set_index("cell_id")
    old = pd.read_csv(FIXTURES.parent / "run_v1_summary.csv").set_index("cell_id")  # schema 1's analysis
    cpu = [c for c in old.columns if c.startswith("cpu_") or c == "locust_cpu_per_proc"]
    # the columns schema 1's analysis wrote, with the same figures; the open model's columns come on top
    added = [c for c in new.columns if c not in old.columns]
    timing = [f"{p}_ms_{s}" for p in ("connect", "pool", "db", "app", "outside") for s in ("mean", "p50", "p95")]
    assert added == ["offered_rps", "achieved_rps", "dropped", "lag_p99_ms", "svc_p50", "svc_p95", "svc_p99",
                     *timing, "new_conn_share", "new_conn_per_s", "connect_new_n", "connect_new_p50",
                     "connect_new_lo", "connect_new_hi", "connect_cost_ms", "server_setup_n", "server_setup_p50",
                     "connect_s_per_s",
                     "predicted_connections_max", "inflight_max", "conn_rise", "conn_rise_per_s", "conn_bounded",
                     "predicted_bounded", "locust_cpu_warning", "generator_lagged", "generators",
                     "generator_busiest", "generator_cpu_max", "generator_laggiest", "generator_lag_p99_max",
                     "generators_lost", "generators_lost_names", "machine_cpus", "machine_cpu_pct", "machine_saturated",
                     *LIFE_COLUMNS, "hazard_requests", "hazard_kinds", "shared_backends", "shared_backend_requests",
                     *INTERVAL_COLUMNS]
    pd.testing.assert_frame_equal(new.drop(columns=[*cpu, *added]), old.drop(columns=cpu))
    done = new[new["status"] == "completed"]
    assert done[list(LIFE_COLUMNS)].isna().all().all()  # not recorded then: blank, never 0
    assert done["hazard_requests"].isna().all() and done["hazard_kinds"].isna().all()  # nor were hazards
    assert done["shared_backends"].isna().all()  # nor the backend each request used
    assert done["offered_rps"].isna().all() and (done["dropped"] == 0).all()  # a closed loop offers no rate
    assert (done["lag_p99_ms"] == 0).all() and not done["generator_lagged"].any()  # t_intended = t_start
    for q in ("p50", "p95", "p99"):  # service_ms = latency_ms
        assert done[f"svc_{q}"].tolist() == done[f"lat_{q}"].tolist()
    # answered: every measured request but the one client timeout (status 0) of CELL
    assert done["achieved_rps"].tolist() == [9.9, 20.0, 5.0] and done["rps"].tolist() == [10.0, 20.0, 5.0]
    assert done["connect_ms_mean"].isna().all()  # schema 1 had no Server-Timing: not measured, never 0
    changed = {(cid, col) for cid in old.index for col in cpu
               if not (math.isclose(new.at[cid, col], old.at[cid, col], rel_tol=1e-12)
                       or (pd.isna(new.at[cid, col]) and pd.isna(old.at[cid, col])))}
    # Integrated back, the percentages give the same means, except where the old rule's window was off by a
    # sample: it averaged rates stamped m0 <= t < m1, each covering the second *before* its t. This cell's
    # locust ran 5 % until t=4 and 40/60 % after: the second (m1-1, m1] is now in, the second (m0-1, m0] out.
    assert changed == {(CELL, "cpu_locust"), (CELL, "locust_cpu_per_proc"), (CELL, "cpu_total")}
    assert (old.at[CELL, "cpu_locust"], new.at[CELL, "cpu_locust"]) == (50, pytest.approx(46.5))  # (500-40+5)/10
    assert new.at[CELL, "cpu_total"] == pytest.approx(138 - 3.5)


def test_a_schema_1_run_gets_a_report_that_says_so(tmp_path):
    text = build_report(copy_run("run_v1", tmp_path)).read_text()
    assert f"1 (read as {R.SCHEMA_VERSION} through the migration in connbench.results)" in text


# -- analysis reads files only, through results -------------------------------------------------------
def test_import_analysis_report_does_not_import_a_driver():
    code = ("import sys, connbench.analysis.report, connbench.analysis.compare; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('psycopg', 'psycopg_pool', 'django', 'gunicorn', 'locust', 'psutil')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_no_file_name_is_spelt_in_analysis():
    spelt = []
    for path in sorted((ROOT / "analysis").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and node.value.endswith((".json", ".csv")) and "\n" not in node.value:
                spelt.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not spelt, "file names belong in connbench/results (RunPaths, CellPaths):\n" + "\n".join(spelt)


# -- the fixtures are what the writers write ----------------------------------------------------------
def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_fixtures_are_what_the_writers_write(tmp_path, capsys):
    make_runs.main(tmp_path)
    for name in make_runs.BUILT:
        built, checked_in = tmp_path / name, FIXTURES / name
        assert _tree(built) == _tree(checked_in), f"{name}: run tests/fixtures/make_runs.py"
        files = [p for p in _tree(built) if (built / p).is_file()]
        _, mismatch, errors = filecmp.cmpfiles(built, checked_in, files, shallow=False)
        assert not mismatch and not errors, f"{name}: {mismatch or errors} differ; run tests/fixtures/make_runs.py"
    assert not (tmp_path / "run_v1").exists()  # frozen, never rebuilt


def test_update_to_3_adds_blank_server_timing_columns():
    row = {c: "1" for c in REQUESTS_COLUMNS[:8]}
    (up,) = R.update_to_3(R.REQUESTS_CSV, [row])
    assert list(up) == [*REQUESTS_COLUMNS[:8], *SCHEMA_3_TIMING] and all(up[c] == "" for c in SCHEMA_3_TIMING)
    assert R.update_to_3(R.CELL_JSON, {"schema_version": 2})["schema_version"] == 3


def test_update_to_5_reads_older_requests_with_blank_connection_ids():
    """Schema 4 did not record the backend, worker, thread or close: blank (not measured), never 0."""
    row = {c: "1" for c in REQUESTS_COLUMNS if c not in SCHEMA_5_CONNECTION}
    (up,) = R.upgrade(R.REQUESTS_CSV, [row], 4)
    assert set(up) == set(REQUESTS_COLUMNS) and all(up[c] == "" for c in SCHEMA_5_CONNECTION)
    assert all(up[c] == "1" for c in row)
    assert R.update_to_5(R.MANIFEST_JSON, {"schema_version": 4})["schema_version"] == 5


def test_update_to_6_reads_older_requests_with_no_hazards():
    """Schema 5 did not look for session-state hazards: blank, and a schema-5 row keeps every value it had."""
    row = {c: "1" for c in REQUESTS_COLUMNS if c not in SCHEMA_6_HAZARDS}
    (up,) = R.upgrade(R.REQUESTS_CSV, [row], 5)
    assert set(up) == set(REQUESTS_COLUMNS) and all(up[c] == "" for c in SCHEMA_6_HAZARDS)
    assert all(up[c] == "1" for c in row)
    assert R.update_to_6(R.CELL_JSON, {"schema_version": 5})["schema_version"] == 6


def test_update_to_7_reads_no_health_check_time_as_not_measured():
    row = {c: "1" for c in REQUESTS_COLUMNS if c != "check_ms"}
    (up,) = R.upgrade(R.REQUESTS_CSV, [row], 6)
    assert set(up) == set(REQUESTS_COLUMNS) and up["check_ms"] == "" and all(up[c] == "1" for c in row)
    assert R.update_to_7(R.CELL_JSON, {"schema_version": 6})["schema_version"] == 7


def test_update_to_4_names_the_one_local_generator():
    row = {c: "1" for c in REQUESTS_COLUMNS[:-1]}
    (up,) = R.update_to_4(R.REQUESTS_CSV, [row])
    assert list(up) == list(REQUESTS_COLUMNS) and up["generator"] == "local"
    (proc,) = R.update_to_4(R.PROCESSES_CSV, [{c: "1" for c in R.PROCESSES_COLUMNS[:-1]}])
    assert list(proc) == list(R.PROCESSES_COLUMNS) and proc["generator"] == ""
    assert R.update_to_4(R.MANIFEST_JSON, {"schema_version": 3})["schema_version"] == 4


def test_a_schema_3_run_reads_as_sent_by_one_local_generator(tmp_path):
    """A run recorded before schema 4 (no generator column) summarizes, its requests from "local"."""
    from connbench.analysis.load import load_run

    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "run_a", run)
    for doc in [run / "manifest.json", *run.glob("cells/*/cell.json")]:
        data = json.loads(doc.read_text())
        doc.write_text(json.dumps({**data, "schema_version": 3}))
    for name, columns in ((R.REQUESTS_CSV, REQUESTS_COLUMNS), (R.PROCESSES_CSV, R.PROCESSES_COLUMNS)):
        for path in run.glob(f"cells/*/{name}"):
            lines = path.read_text().splitlines()
            assert lines[0] == ",".join(columns)
            path.write_text("\n".join(line.rsplit(",", 1)[0] for line in lines) + "\n")
    cell = next(c for c in load_run(run).cells if c.cell_id == "pool-direct_cma-0")
    assert len(cell.requests.df) and set(cell.requests.df["generator"]) == {"local"}
