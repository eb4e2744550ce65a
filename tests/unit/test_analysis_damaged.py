"""Damaged runs are reported as damaged: lost or corrupted cell files never read as "completed, 0 requests".

Each test copies a checked-in fixture run (tests/fixtures/runs/) and damages one cell of it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from connbench import results as R
from connbench.analysis import AnalysisError
from connbench.analysis.compare import compare
from connbench.analysis.report import build_report
from connbench.analysis.summarize import summarize
from connbench.contract import REQUESTS_COLUMNS
from tests.fixture_runs import copy_run

ROOT = Path(__file__).resolve().parents[2]
CELL = "pool-direct_cma-0"  # run_a: completed, 100 measured requests, 5 of them failed
HEADER = ",".join(REQUESTS_COLUMNS) + "\r\n"


def _write(name: str, data: bytes):
    return lambda cell: (cell / name).write_bytes(data)


# how to damage cells/<CELL>/ -> a phrase the reason must contain
DAMAGES = {
    "requests_missing": (lambda cell: (cell / R.REQUESTS_CSV).unlink(), "requests.csv is missing"),
    "requests_empty": (_write(R.REQUESTS_CSV, b""), "requests.csv is empty"),
    "requests_header_only": (_write(R.REQUESTS_CSV, HEADER.encode()), "requests.csv has a header but no rows"),
    "requests_garbage": (_write(R.REQUESTS_CSV, b"\x89PNG\r\n\x1a\n\x00\xff\xfe\x00garbage,\x80\x81\n" * 50),
                         "requests.csv is unparseable"),
    "requests_rows_unparseable": (_write(R.REQUESTS_CSV, (HEADER + "soon,read,fast,ok,,0\r\n" * 20).encode()),
                                  "requests.csv has no parseable row"),
    "requests_a_directory": (lambda cell: ((cell / R.REQUESTS_CSV).unlink(), (cell / R.REQUESTS_CSV).mkdir()),
                             "requests.csv is not a regular file"),
    "cell_json_list": (_write(R.CELL_JSON, b"[1, 2, 3]\n"), "cell.json holds an array, not a JSON object"),
    "cell_json_number": (_write(R.CELL_JSON, b"42\n"), "cell.json holds a number, not a JSON object"),
    "cell_json_invalid": (_write(R.CELL_JSON, b'{"status": "completed", '), "cell.json is not valid JSON"),
    "cell_json_wrong_shape": (_write(R.CELL_JSON, b'{"schema_version": 2, "cell_id": "x", "status": "done"}'),
                              "cell.json does not match schema 7: group: Field required"),
    "cell_json_no_version": (_write(R.CELL_JSON, b'{"cell_id": "x"}'), "cell.json has no valid schema_version"),
    "cell_json_missing": (lambda cell: (cell / R.CELL_JSON).unlink(),
                          "cell.json is missing although the manifest records the cell as completed"),
}


@pytest.fixture
def intact(tmp_path):
    return copy_run("run_a", tmp_path / "a")


@pytest.fixture
def no_charts(monkeypatch):
    monkeypatch.setattr("connbench.analysis.report.draw_charts", lambda *a, **k: [])  # charts are not the point here


def damaged_copy(tmp_path: Path, how: str) -> Path:
    run = copy_run("run_a", tmp_path / "b")
    DAMAGES[how][0](run / "cells" / CELL)
    return run


def summary_row(run: Path, cell: str = CELL) -> dict:
    df = pd.read_csv(run / R.SUMMARY_CSV, dtype={"damage": str})
    return df.set_index("cell_id").loc[cell].to_dict()


def compare_lines(a: Path, b: Path, cell_group: str = CELL) -> list[str]:
    return [line for line in compare(a, b).splitlines() if line.startswith(cell_group + " ")]


@pytest.mark.parametrize("how", sorted(DAMAGES))
def test_damaged_cell_is_damaged_in_summary_report_and_compare(tmp_path, intact, no_charts, how):
    run = damaged_copy(tmp_path, how)
    reason = DAMAGES[how][1]
    index = build_report(run)

    row = summary_row(run)
    assert row["status"] == "damaged"
    assert reason in row["damage"]
    assert pd.isna(row["requests"]) and pd.isna(row["rps"])  # never "0 requests"
    assert summary_row(run, "pool-direct_cma-600")["status"] == "completed"  # the rest of the run is intact

    html = index.read_text(encoding="utf-8")
    banner = html.index('id="damaged"')
    assert banner < html.index('id="environment"')  # near the top, before any table
    top = html[banner: html.index("</div>", banner)]
    assert CELL in top and reason in top
    assert f"cell damaged: {reason}" in html  # and among the warnings

    lines = compare_lines(intact, run)
    assert any("damaged in B" in line and reason in line for line in lines), lines
    assert not any("-100" in line for line in lines), lines
    # run the other way round: the damaged side is A and still never a change of -100 % or +inf
    back = compare_lines(run, intact)
    assert any("damaged in A" in line for line in back) and not any("inf" in line for line in back), back


def test_completed_cell_without_a_directory_is_damaged(tmp_path, intact, no_charts):
    run = copy_run("run_a", tmp_path / "b")
    for p in sorted((run / "cells" / CELL).rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    (run / "cells" / CELL).rmdir()  # the manifest still records the cell as completed
    build_report(run)
    row = summary_row(run)
    assert row["status"] == "damaged" and "is missing although the manifest records" in row["damage"]
    assert any("damaged in B" in line for line in compare_lines(intact, run))


# the writer killed mid-row: the last line is short, or unterminated and unparseable
TORN = {
    "short_unterminated": "1700000005.5,read,12",
    "short_terminated": "1700000005.5,read,12\r\n",
    "t_start_cut": "17000",
    "full_width_unparseable": "1700000005.5,read,1e,200,,0",
}


@pytest.mark.parametrize("tail", sorted(TORN))
def test_truncated_last_line_is_dropped_and_reported_not_a_failure(tmp_path, no_charts, tail):
    run = copy_run("run_a", tmp_path / "b")
    with open(run / "cells" / CELL / R.REQUESTS_CSV, "a", newline="") as fh:
        fh.write(TORN[tail])
    index = build_report(run)
    row = summary_row(run)
    assert row["status"] == "completed" and pd.isna(row["damage"])
    assert (row["requests"], row["failures"], row["dropped_lines"]) == (100, 5, 1)  # as if the line were not there
    assert pd.isna(row.get("err_no_response")) or row["err_no_response"] == 0  # not a failed request
    assert summary_row(run, "pool-direct_cma-600")["dropped_lines"] == 0
    html = index.read_text(encoding="utf-8")
    assert f'{CELL}</a>: dropped 1 line(s) of requests.csv: the truncated last line' in html


def test_malformed_lines_inside_the_file_are_dropped_and_counted(tmp_path):
    run = copy_run("run_a", tmp_path / "b")
    path = run / "cells" / CELL / R.REQUESTS_CSV
    lines = path.read_text().splitlines(keepends=True)
    lines[50:50] = ["1700000005.5,read\r\n", "1700000005.6,read,oops,200,,0\r\n"]  # inside the measure window
    path.write_text("".join(lines))
    row = summarize(run, write=False).set_index("cell_id").loc[CELL]
    assert (row["status"], row["requests"], row["failures"], row["dropped_lines"]) == ("completed", 100, 5, 2)


@pytest.mark.parametrize("where, make", [
    ("charts", lambda p: p.write_text("not a directory")),
    ("index.html", lambda p: p.mkdir()),
    ("summary.csv", lambda p: p.mkdir()),
    ("summary_groups.csv", lambda p: p.mkdir()),
    ("expectations.json", lambda p: p.mkdir()),
    ("charts/connections_x.png", lambda p: (p.parent.mkdir(), p.mkdir())),
])
def test_output_path_of_the_wrong_kind_is_a_clean_error_before_writing(tmp_path, where, make):
    run = copy_run("run_a", tmp_path)
    make(run / where)
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    with pytest.raises(AnalysisError) as exc:
        build_report(run)
    assert str(run / where) in str(exc.value)
    assert "\n" not in str(exc.value)
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before  # nothing written


@pytest.mark.parametrize("where, make", [("charts", "file"), ("index.html", "dir"), ("summary.csv", "dir")])
def test_cli_report_wrong_kind_exits_2_without_traceback(tmp_path, where, make):
    run = copy_run("run_a", tmp_path)
    (run / where).write_text("x") if make == "file" else (run / where).mkdir()
    res = subprocess.run([sys.executable, "-m", "connbench.cli", "report", str(run)], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and str(run / where) in res.stderr


def test_summarize_alone_checks_its_outputs(tmp_path):
    run = copy_run("run_a", tmp_path)
    (run / R.SUMMARY_CSV).mkdir()
    with pytest.raises(AnalysisError, match="is a directory"):
        summarize(run)


def test_unreadable_manifest_is_still_a_clean_analysis_error(tmp_path):
    run = copy_run("run_a", tmp_path)
    (run / R.MANIFEST_JSON).write_text("[1, 2]")
    with pytest.raises(AnalysisError, match="manifest.json holds an array, not a JSON object"):
        build_report(run)


def test_damaged_cell_fails_its_expectations_instead_of_passing_on_nothing(tmp_path, no_charts):
    run = damaged_copy(tmp_path, "requests_missing")
    man = json.loads((run / R.MANIFEST_JSON).read_text())
    man["scenario"]["expect"] = [{"name": "errors", "error_rate_max": 0.5}]
    (run / R.MANIFEST_JSON).write_text(json.dumps(man))
    build_report(run)
    results = json.loads((run / "expectations.json").read_text())
    mine = [r for r in results if r["cell_id"] == CELL]
    assert mine and all(r["passed"] is False and r["measured"] == "damaged" for r in mine)
