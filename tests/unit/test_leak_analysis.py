"""Does a cell's connection count settle or grow with requests? (summary conn_bounded, the
connections_bounded expectation and the report's leak sentence), on runs made by the fixture writers."""

from __future__ import annotations

from pathlib import Path

import pytest

from connbench import results as R
from connbench.analysis import expectations
from connbench.analysis.findings import labels, leaks
from connbench.analysis.growth import inflight_max
from connbench.analysis.load import load_run
from connbench.analysis.settings import Settings
from connbench.analysis.summarize import summaries
from connbench.scenario import expand
from tests.fixtures.make_runs import T0, manifest, requests_csv, run_cell, sampler_rows

RAW = {
    "scenario": {"name": "fixture-asgi", "description": "ASGI: a leak, a saw-tooth leak, a pool, per-request."},
    "defaults": {"workers": 2, "max_connections": 20, "worker_class": "asgi", "users": 4, "duration": 8,
                 "warmup": 2, "cooldown": 2, "pool_max_size": 2},
    "matrix": {"include": [
        {"id": "rising", "conn_max_age": "none"},
        {"id": "sawtooth", "conn_max_age": 60},
        {"id": "pool", "pooling": "django-pool"},
        {"id": "per-request", "conn_max_age": 0},
        {"id": "wsgi-unexpected", "worker_class": "sync", "conn_max_age": "none"},  # predicted 2: bounded
    ]},
    "expect": [{"name": "persistent leaks", "cells": ["rising", "sawtooth"], "connections_bounded": False},
               {"name": "the pool is bounded", "cells": ["pool", "per-request"], "connections_bounded": True},
               {"name": "wrong on purpose", "cells": ["pool"], "connections_bounded": False}],
}
# server connections per second of the cell (measure window: t = 4..12): what the sampler would record
TOTALS = {
    "rising": [0, 0, 1, 3] + [3 + 2 * i for i in range(8)] + [19, 19, 19],  # +2 a second, never dropping
    "sawtooth": [0, 0, 6, 9] + [12, 4, 9, 14, 5, 8, 13, 6] + [10, 10, 10],  # a collector's saw-tooth, held after
    "pool": [0, 0, 2, 4] + [4] * 8 + [4, 4, 4],
    "per-request": [0, 0, 2, 3] + [2, 4, 1, 3, 4, 2, 0, 3] + [0, 0, 0],
    "wsgi-unexpected": [0, 0, 2, 2] + [2, 2, 9, 9, 9, 9, 9, 9] + [9, 9, 9],  # 9 where the parameters explain 2
}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("asgi") / "run_asgi"
    sc = expand.from_dict(RAW, Path("scenarios/fixture-asgi.toml"))
    docs = []
    for k, cell in enumerate(sc.cells):
        base, p = T0 + 100 * k, R.RunPaths(root).cell(cell.cell_id)
        # 4 users, 40 ms each, back to back: at most 4 requests in flight
        requests_csv(p, [(base + 4 + j * 0.04, "read", 40.0, 200, "", str(u % 2)) for j in range(200)
                         for u in range(4)],
                     timing=lambda lat, c=cell.cell_id: (0, 0, lat / 2, lat / 4, int(c != "pool")))
        series = TOTALS[cell.cell_id]
        sampler_rows(p, base, dict(enumerate(series)), {t: 10 * t for t in range(len(series))})
        docs.append(run_cell(p, cell, base))
    manifest(root, sc, docs, T0 - 5, T0 + 100 * len(sc.cells))
    return root


@pytest.fixture(scope="module")
def frames(run):
    data = load_run(run)
    cells, groups = summaries(data)
    return data, cells.set_index("cell_id"), groups


def test_bounded_per_cell(frames):
    _, cells, _ = frames
    assert not cells.loc["rising", "conn_bounded"]
    assert not cells.loc["sawtooth", "conn_bounded"]  # no net rise, but far more than the load can use
    assert not cells.loc["wsgi-unexpected", "conn_bounded"] and cells.loc["wsgi-unexpected", "predicted_bounded"]
    assert cells.loc["pool", "conn_bounded"] and cells.loc["per-request", "conn_bounded"]
    # t in [10, 12) against [4, 6) of the measure window [4, 12): 17 - 5
    assert cells.loc["rising", "conn_rise"] == pytest.approx(17 - 5)
    assert cells.loc["rising", "conn_rise_per_s"] == pytest.approx(12 / 6)
    assert cells.loc["sawtooth", "inflight_max"] == 4
    assert not cells.loc["rising", "predicted_bounded"] and cells.loc["pool", "predicted_bounded"]


def test_connections_bounded_expectation_passes_and_fails(frames):
    data, cells, _ = frames
    got = expectations.evaluate(data, cells.reset_index())
    by = {(r["name"], r["cell_id"]): r["passed"] for r in got if r["check"] == "connections bounded =="}
    assert by[("persistent leaks", "rising")] and by[("persistent leaks", "sawtooth")]
    assert by[("the pool is bounded", "pool")] and by[("the pool is bounded", "per-request")]
    assert by[("wrong on purpose", "pool")] is False


def test_findings_name_the_leak_and_the_pool(frames):
    data, cells, groups = frames
    text = leaks(groups, Settings(data, cells.reset_index()), labels(groups))
    asgi = [t for t in text if "#33497" in t]
    assert len(text) == 3 and len(asgi) == 2 and all("left connections behind" in t for t in text)
    assert all("Django's pool" in t and "held at most 4" in t and "(as predicted: no bound)" in t for t in asgi)
    other = next(t for t in text if t not in asgi)
    assert "NOT predicted: the parameters explain at most 2" in other
    # a setting predicted to leak that held steady is said so, not passed over
    quiet = groups.assign(conn_bounded=groups["group"].isin(["rising", "pool", "per-request"]))
    said = leaks(quiet, Settings(data, cells.reset_index()), labels(quiet))
    assert any("was predicted to leave connections behind but held at most" in t for t in said)


def test_inflight_max_counts_overlaps():
    import pandas as pd
    req = pd.DataFrame({"t_start": [0.0, 0.01, 0.02, 0.5], "service_ms": [100.0, 100.0, 5.0, 1.0]})
    assert inflight_max(req) == 3
    # one ends exactly when the next starts: never both in flight
    assert inflight_max(pd.DataFrame({"t_start": [0.0, 0.1], "service_ms": [100.0, 10.0]})) == 1
    assert inflight_max(req.iloc[:0]) == 0


def test_growth_chart_drawn_only_when_a_setting_leaks(frames, tmp_path):
    from connbench.analysis.charts.growth import draw_growth, growth_lines
    data, cells, groups = frames
    summary = cells.reset_index()
    lines = growth_lines(data, summary, labels(groups))
    assert len(lines) == 5 and sum(not bounded for _, bounded in lines.values()) == 3
    charts = draw_growth(data, summary, labels(groups))
    assert [c.kind for c in charts] == ["growth"] and charts[0].png.stat().st_size > 0
    assert growth_lines(data, summary.assign(conn_bounded=True), labels(groups)) == {}


def test_findings_table_has_a_bounded_column_only_when_something_leaks(frames):
    from connbench.analysis.findings import table
    _, _, groups = frames
    t = table(groups, labels(groups))
    col = t["headers"].index("bounded")
    assert sorted(r[col] for r in t["rows"]) == ["NO: left behind"] * 3 + ["yes", "yes"]
    assert "bounded" not in table(groups.assign(conn_bounded=True), labels(groups))["headers"]

