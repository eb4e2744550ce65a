"""build_report(): files, charts, relative links only, warnings and the optional hook sections."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from connbench import results as R
from connbench.analysis import AnalysisError
from connbench.analysis.charts import draw_charts
from connbench.analysis.report import build_report
from tests.fixture_runs import copy_run


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs: list[str] = []
        self.hrefs: list[str] = []
        self.scripts_with_src: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.srcs.append(a["src"])
        if a.get("href"):
            self.hrefs.append(a["href"])
        if tag in ("script", "link") and (a.get("src") or tag == "link"):
            self.scripts_with_src.append(str(a))

    def handle_data(self, data):
        self.text.append(data)


def parse(path: Path) -> Links:
    p = Links()
    p.feed(path.read_text(encoding="utf-8"))
    return p


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    run = copy_run("run_a", tmp_path_factory.mktemp("report"))
    return run, build_report(run)


def test_writes_summary_charts_and_index(built):
    run, index = built
    assert index == run / "index.html" and index.is_file()
    assert (run / R.SUMMARY_CSV).is_file() and (run / R.SUMMARY_GROUPS_CSV).is_file()
    # 3 overview charts and the Server-Timing breakdown as PNG and SVG; the 7 per-cell charts as SVG only
    assert len(list((run / "charts").glob("*.png"))) == 4 and len(list((run / "charts").glob("*.svg"))) == 11


def test_every_link_is_relative_and_exists(built):
    run, index = built
    page = parse(index)
    assert page.srcs and not page.scripts_with_src  # no external JS or CSS
    for ref in page.srcs + page.hrefs:
        assert not re.match(r"^[a-z]+:|^//", ref), f"not a relative link: {ref}"
        if ref.startswith("#"):
            continue
        assert (run / ref).is_file(), f"broken link {ref}"
    assert f"cells/pool-direct_cma-0/{R.LOCUST_DIR}/report.html" in page.hrefs
    assert f"cells/pool-pgbouncer-transaction_cma-0/{R.PGBOUNCER_CSV}" in page.hrefs
    assert "cells/pool-direct_cma-0/requests.csv" in page.hrefs
    assert "summary.csv" in page.hrefs


def test_manifest_facts_warnings_and_hooks(built):
    run, index = built
    text = " ".join(parse(index).text)
    scenario_hash = R.Manifest.load(run / R.MANIFEST_JSON).scenario_hash
    for fact in ("fixture-a", scenario_hash, "0a1b2c3d4e5f", "django 5.2.8", "fixture-host", "2023-11-14",
                 "completed_with_failures", "Django's pool requires CONN_MAX_AGE=0"):  # expand.prune_reason
        assert fact in text, fact
    assert "3 requests failed with 'too many clients'" in text
    assert "5 of 100 measured requests failed (5 %): client_timeout 1, http_503 1, too_many_clients 3" in text
    assert "load generator saturated: Locust averaged 95 % of a core" in text
    assert "add Locust processes ([generator] workers, or --generator-workers N)" in text
    assert "cell failed: ServiceError: gunicorn dyno 0 did not answer" in text
    assert "cell skipped: PgBouncer is not installed" in text
    # the scenario's [[expect]], as the manifest stores the scenario: one holds, one does not
    assert "1 of 2 passed." in text and "failure rate <= 1%" in text and "plateau == predicted" in text
    assert 'id="probe"' not in index.read_text()  # a matrix run has no probe.json


def test_probe_run_report(tmp_path):
    run = copy_run("run_probe", tmp_path)
    index = build_report(run)
    html, text = index.read_text(), " ".join(parse(index).text)
    assert 'id="probe"' in html and "charts/probe.png" in html
    assert (run / "charts" / "probe.png").is_file() and (run / "charts" / "probe.svg").is_file()
    assert "select count(*) from pg_stat_activity" in text and "dynos that fit" in text
    assert "sequential hits plateaued at 1, concurrent load at 2" in text  # the probe's notes
    assert "run kind" in text and "probe" in text


def test_unusable_probe_json_is_said_not_drawn(tmp_path):
    run = copy_run("run_probe", tmp_path)
    doc = json.loads((run / R.PROBE_JSON).read_text())
    del doc["results"]["ramp"]["steps"]
    (run / R.PROBE_JSON).write_text(json.dumps(doc))
    html = build_report(run).read_text()
    assert "probe.json does not match schema 7: results.ramp.steps: Field required" in html
    assert not (run / "charts" / "probe.png").exists()


def test_hooks_absent_when_their_inputs_are(tmp_path, monkeypatch):
    run = copy_run("run_c", tmp_path)
    monkeypatch.setattr("connbench.analysis.report.draw_charts", lambda *a, **k: [])  # charts are not the point here
    html = build_report(run).read_text()
    assert 'id="probe"' not in html and 'id="expectations"' not in html
    assert 'id="groups"' in html  # repeats: the groups table is shown
    assert "None: every cell completed" in html


def test_chart_descriptors(tmp_path):
    run = copy_run("run_a", tmp_path)
    charts = draw_charts(run)
    kinds = [c.kind for c in charts]
    assert kinds[:3] == ["comparison", "predicted", "churn"]
    assert all(c.cell_id is None for c in charts[:3])
    assert kinds.count("connections") == 3  # the failed cell left one sample: no curve, no chart
    assert kinds.count("latency") == 3 and kinds.count("pgbouncer") == 1
    assert {c.cell_id for c in charts if c.kind == "pgbouncer"} == {"pool-pgbouncer-transaction_cma-0"}
    for c in charts:
        assert c.title and c.svg.read_text().lstrip().startswith("<?xml")
        if c.cell_id is None:  # matplotlib's: a PNG for the report
            assert c.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        else:  # hand-built: the report shows the SVG itself
            assert c.png == c.svg and c.svg.name.startswith(f"{c.kind}_")


def test_charts_skipped_when_there_is_no_data(tmp_path):
    run = R.RunPaths(tmp_path / "empty")
    R.Manifest(run_id="empty", started=1.7e9, status="completed_with_failures", cells=[
        R.ManifestCell(cell_id="c1", group="c1", status="failed", error="boom"),
        R.ManifestCell(cell_id="c2", group="c2", status="skipped", skip_reason="no pgbouncer")]).dump(run.manifest)
    R.CellDoc(cell_id="c1", group="c1", repeat=0, params={}, predicted=R.Predicted(), status="failed",
              error="boom").dump(run.cell("c1").json)
    run = run.root
    assert draw_charts(run) == []
    html = build_report(run).read_text()
    assert "boom" in html and "no pgbouncer" in html and "<img" not in html


def test_build_report_rejects_a_non_run(tmp_path):
    with pytest.raises(AnalysisError, match="no manifest.json"):
        build_report(tmp_path)


def test_without_charts_the_report_has_everything_else_and_leaves_charts_alone(tmp_path):
    from connbench.analysis.report import build_report

    run = copy_run("run_a", tmp_path)
    (run / "charts").mkdir()
    (run / "charts" / "mine.png").write_bytes(b"\x89PNG kept")  # what a charted report drew before
    index = build_report(run, charts=False)
    html = index.read_text()
    assert (run / R.SUMMARY_CSV).is_file() and (run / "expectations.json").is_file()
    assert 'id="findings"' in html and "<img" not in html
    assert [p.name for p in (run / "charts").iterdir()] == ["mine.png"]
