"""A 2-cell matrix killed after its first cell, resumed, ends complete with one manifest."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from connbench.contract import REQUESTS_COLUMNS
from tests.support import CLI, ROOT, assert_no_leftovers, read_json, run_cli, write_scenario

pytestmark = [pytest.mark.e2e, pytest.mark.beside_others]

TWO_CELLS = """
[scenario]
name = "two"
[defaults]
workers = 2
users = 4
spawn_rate = 4
warmup = 0.5
duration = 3
cooldown = 0.5
[matrix]
conn_max_age = [0, 60]
"""


def test_kill_after_first_cell_then_resume(tmp_path, run_dir):
    scen = write_scenario(tmp_path / "two.toml", TWO_CELLS)
    proc = subprocess.Popen([*CLI, "run", str(scen), "--run-dir", str(run_dir), "--no-report"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    second = run_dir / "cells" / "cma-60" / "events.csv"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not second.exists():
        time.sleep(0.1)
    assert second.exists(), "second cell never started"
    proc.send_signal(signal.SIGKILL)  # no cleanup at all: resume must do it
    proc.wait(timeout=10)
    first = read_json(run_dir / "cells" / "cma-0" / "cell.json")
    assert first["status"] == "completed"
    first_requests = (run_dir / "cells" / "cma-0" / "requests.csv").read_bytes()
    # what an interrupted attempt of the second cell may have left: its per-process request log
    stale = run_dir / "cells" / "cma-60" / "locust" / "raw"
    stale.mkdir(parents=True, exist_ok=True)
    (stale / "requests-999999.csv").write_text(",".join(REQUESTS_COLUMNS) + "\n" + "1.0,1.0,/db/read,5,5,200,,0\n" * 5)

    res = run_cli("run", str(scen), "--resume", str(run_dir), "--no-report")
    assert res.returncode == 0, res.stderr
    assert "cleaned up processes left by the previous harness" in res.stderr
    manifest = read_json(run_dir / "manifest.json")
    assert [c["status"] for c in manifest["cells"]] == ["completed", "completed"]
    assert len(manifest["resumes"]) == 1 and manifest["status"] == "completed"
    # the completed cell was not rerun
    assert (run_dir / "cells" / "cma-0" / "requests.csv").read_bytes() == first_requests
    assert read_json(run_dir / "cells" / "cma-60" / "cell.json")["status"] == "completed"
    rerun = (run_dir / "cells" / "cma-60" / "requests.csv").read_text()
    assert "\n1.0,1.0," not in rerun  # the rerun's log is its own, never merged with an earlier attempt's
    assert manifest["overhead"]["per_cell_mean_s"] is not None
    assert_no_leftovers(run_dir)

    # the same run, resumed with a changed scenario: refused before anything is touched
    scen.write_text(TWO_CELLS.replace("duration = 3", "duration = 1"))
    before = (run_dir / "manifest.json").read_bytes()
    res = run_cli("run", str(scen), "--resume", str(run_dir))
    assert res.returncode == 2 and "changed since" in res.stderr
    assert (run_dir / "manifest.json").read_bytes() == before


def test_failing_cell_is_recorded_and_the_matrix_goes_on(tmp_path, run_dir, monkeypatch):
    from connbench.run.matrix import MatrixRunner
    from connbench.scenario import expand as sc
    from connbench.services import gunicorn

    real_verify, calls = gunicorn.verify, []

    def verify_fails_once(dynos, *a, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise gunicorn.ServiceError("dyno 0 /db/read failed: HTTP 503 (injected)")
        return real_verify(dynos, *a, **kw)

    monkeypatch.setattr(gunicorn, "verify", verify_fails_once)
    scen = sc.load(write_scenario(tmp_path / "two.toml", TWO_CELLS))
    assert MatrixRunner(scen, run_dir).run() == 1
    manifest = read_json(run_dir / "manifest.json")
    assert [c["status"] for c in manifest["cells"]] == ["failed", "completed"]
    assert "HTTP 503 (injected)" in manifest["cells"][0]["error"]
    assert manifest["status"] == "completed_with_failures"
    assert_no_leftovers(run_dir)


def test_pgbouncer_cells_are_skipped_with_a_visible_reason_when_it_is_missing(tmp_path, run_dir, monkeypatch):
    from connbench.analysis.report import build_report
    from connbench.run.matrix import MatrixRunner
    from connbench.scenario import expand as sc
    from connbench.services import pgbouncer

    monkeypatch.setattr(pgbouncer, "pgbouncer_binary", lambda: None)
    scen = sc.load(write_scenario(tmp_path / "s.toml", TWO_CELLS.replace(
        "conn_max_age = [0, 60]", 'pooling = ["pgbouncer-transaction", "direct"]')))
    assert MatrixRunner(scen, run_dir).run() == 0  # a skip is not a failure
    cells = {c["cell_id"]: c for c in read_json(run_dir / "manifest.json")["cells"]}
    assert cells["pool-pgbouncer-transaction"]["status"] == "skipped"
    assert "PgBouncer is not installed" in cells["pool-pgbouncer-transaction"]["skip_reason"]
    assert cells["pool-direct"]["status"] == "completed"
    html = build_report(run_dir).read_text()
    assert "PgBouncer is not installed" in html
