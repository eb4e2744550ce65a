"""Each connection's life story (analysis/lifecycle.py): backends.csv joined with requests.csv, connections_life.csv,
the summary's life columns and the findings they feed, on a run made by the harness's writers.

Times are B + seconds (B per cell); measure [4, 14); the sampler's samples every 0.5 s, memory every 1 s.
cell "life" (direct, CONN_MAX_AGE=60, gthread 1 worker x 4 threads; worker pid 100):
  L1 pid 500  opened 2.9  gone 7.5   thread 11: 2.89 (opens it) 4 5 6 7 (the last conn_close=1)   new_thread
  L2 pid 500  opened 7.2  open       thread 11: 7.19 (opens it) 9 11 12 13: the OS reused pid 500  max_age
  L3 pid 501  opened 4.4  gone 10.0  thread 12: 4.39 (opens it) 6.5 8.5 (kept)                    new_thread
  L4 pid 502  opened 10.01 gone 15.0 thread 12: 10.0 (opens it, 30 ms) 11.5 13.5: L3 was unusable  health_check
  L5 pid 503  opened 5.2  gone 6.0   never used by a request                                       unknown
  U1 pid 600  never sampled          thread 13: 12.5 (opens it) 13.2 (conn_close=1)                new_thread
  U2 pid 600  never sampled          thread 13: 13.6 (opens it): pid 600 again                     max_age
  one request ran no query (8.0); every other took 20 ms.
  PSS MiB per mem sample: L1 2; L2 1 at t=8, else 3; L3 4; L4 5, 6 at t=13. RSS = PSS + 10.
cell "pool" (Django's pool): pid 700 opened by the pool, requests with new_conn=0 from threads 21 and 22: pool.
cell "asgi" (CONN_MAX_AGE=none): 8 requests in the window, each on its own thread and connection, left open.
cell "old": no backends.csv (as an older run, or a sampler that did not write one): no file, blank columns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from connbench import results as R
from connbench.analysis.findings import asgi_threads, gthread_threads, memory
from connbench.analysis.lifecycle import LIFE_SUMMARY
from connbench.analysis.load import load_run
from connbench.analysis.report import build_report
from connbench.analysis.settings import Settings
from connbench.analysis.summarize import summaries, summarize
from connbench.contract import REQUESTS_COLUMNS
from connbench.scenario import expand
from tests.fixtures.make_runs import T0, manifest, run_cell, sampler_rows

MIB = 2**20
RAW = {
    "scenario": {"name": "fixture-life", "description": "Each connection's life story."},
    "defaults": {"workers": 1, "max_connections": 20, "duration": 10, "warmup": 2, "cooldown": 2},
    "matrix": {"include": [
        {"id": "life", "conn_max_age": 60, "worker_class": "gthread", "threads": 4},
        {"id": "pool", "pooling": "django-pool", "conn_max_age": 0},
        {"id": "asgi", "conn_max_age": "none", "worker_class": "asgi"},
        {"id": "old", "conn_max_age": 60},
    ]},
}
# (t_start, backend_pid, thread, new_conn, conn_close, service_ms) of cell "life", worker pid 100
LIFE_REQUESTS = [
    (2.89, 500, 11, 1, 0, 20), (4.0, 500, 11, 0, 0, 20), (5.0, 500, 11, 0, 0, 20), (6.0, 500, 11, 0, 0, 20),
    (7.0, 500, 11, 0, 1, 20),
    (7.19, 500, 11, 1, 0, 20), (9.0, 500, 11, 0, 0, 20), (11.0, 500, 11, 0, 0, 20), (12.0, 500, 11, 0, 0, 20),
    (13.0, 500, 11, 0, 0, 20),
    (4.39, 501, 12, 1, 0, 20), (6.5, 501, 12, 0, 0, 20), (8.5, 501, 12, 0, 0, 20),
    (10.0, 502, 12, 1, 0, 30), (11.5, 502, 12, 0, 0, 20), (13.5, 502, 12, 0, 0, 20),
    (12.5, 600, 13, 1, 0, 20), (13.2, 600, 13, 0, 1, 20), (13.6, 600, 13, 1, 0, 20),
    (8.0, None, None, None, None, 20),  # /health: no query, so no backend, thread or close
]
# pid, opened, seen, gone (None: open at the end, 16.0), samples, idle_samples
LIVES = [(500, 2.9, 3.0, 7.5, 9, 7), (500, 7.2, 7.5, None, 18, 15), (501, 4.4, 4.5, 10.0, 11, 9),
         (502, 10.01, 10.5, 15.0, 9, 7), (503, 5.2, 5.5, 6.0, 1, 1)]
# pid, opened -> {t: PSS MiB} (memory every second while shown)
MEM = {(500, 2.9): dict.fromkeys(range(3, 8), 2), (500, 7.2): {8: 1, **dict.fromkeys(range(9, 17), 3)},
       (501, 4.4): dict.fromkeys(range(5, 10), 4), (502, 10.01): {11: 5, 12: 5, 13: 6, 14: 5}}


def _num(v) -> str:
    return "" if v is None else repr(v) if isinstance(v, float) else str(v)


def write_requests(p: R.CellPaths, base: float, rows, worker: int = 100) -> None:
    """requests.csv as the request log writes it (closed loop: t_intended = t_start), with Server-Timing's ids."""
    out = []
    for t, pid, thread, new, close, ms in sorted(rows):
        timing = ("0.5" if new else "0.0", "0.0", "1.0", "1.0", _num(new), _num(pid), str(worker), _num(thread),
                  _num(close), "", "", "")  # no hazards, no examples, no health check
        out.append((repr(base + t), repr(base + t), "read", repr(float(ms)), repr(float(ms)), 200, "", "0", *timing,
                    "local"))
    R.write_csv_atomic(p.requests, REQUESTS_COLUMNS, out)


def write_backends(p: R.CellPaths, base: float, lives, mem, end: float = 16.0) -> None:
    """backends.csv as the sampler appends it, in time order: seen, mem, gone / open."""
    rows = []
    for pid, opened, seen, gone, samples, idle in lives:
        start = repr(base + opened)
        rows.append((seen, 0, (base + seen, "seen", pid, start, "0", "0", "idle", "", "", "", "")))
        for t, mib in mem.get((pid, opened), {}).items():
            rows.append((t, 1, (base + t, "mem", pid, start, "", "", "", "", "", mib * MIB, (mib + 10) * MIB)))
        event, t = ("gone", gone) if gone is not None else ("open", end)
        rows.append((t, 2, (base + t, event, pid, start, "", "", "", samples, idle, "", "")))
    out = R.CsvAppender(p.backends, R.BACKENDS_COLUMNS)
    for _, _, row in sorted(rows, key=lambda r: (r[0], r[1])):
        out.write(row)
    out.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("life") / "run_life"
    sc = expand.from_dict(RAW, Path("scenarios/fixture-life.toml"))
    docs = []
    for k, cell in enumerate(sc.cells):
        base, p = T0 + 100 * k, R.RunPaths(root).cell(cell.cell_id)
        cid = cell.cell_id
        if cid == "life":
            write_requests(p, base, LIFE_REQUESTS)
            write_backends(p, base, LIVES, MEM)
        elif cid == "pool":
            write_requests(p, base, [(4.0 + i / 2, 700, 21 + i % 2, 0, 0, 20) for i in range(10)])
            write_backends(p, base, [(700, 2.5, 3.0, None, 26, 20)], {(700, 2.5): {5: 2, 6: 2}})
        elif cid == "asgi":  # a fresh executor thread and a fresh connection per request, never closed
            write_requests(p, base, [(4.0 + i, 800 + i, 900 + i, 1, 0, 20) for i in range(8)])
            write_backends(p, base, [(800 + i, 4.005 + i, 4.5 + i, None, 23 - 2 * i, 22 - 2 * i) for i in range(8)], {})
        else:
            write_requests(p, base, [(4.0 + i, None, None, None, None, 20) for i in range(5)])
        sampler_rows(p, base, {t: 3 for t in range(2, 17)}, {t: 10 * t for t in range(2, 17)})
        docs.append(run_cell(p, cell, base))
    manifest(root, sc, docs, T0 - 5, T0 + 100 * len(sc.cells))
    m = R.Manifest.load(R.RunPaths(root).manifest)
    m.versions = {**m.versions, "asgiref": "3.8.1"}
    m.dump(R.RunPaths(root).manifest)
    return root


@pytest.fixture(scope="module")
def frames(run):
    data = load_run(run)
    cells, groups = summaries(data)
    return data, cells.set_index("cell_id"), groups


@pytest.fixture(scope="module")
def lives(run) -> pd.DataFrame:
    summarize(run)
    return pd.read_csv(R.RunPaths(run).cell("life").connections_life, dtype={"worker_pids": str, "threads": str})


def test_requests_join_the_life_that_held_them_never_the_pid_alone(lives):
    assert list(lives.columns) == list(R.CONNECTIONS_LIFE_COLUMNS)
    by = lives.assign(at=(lives["opened"] - T0).round(2)).set_index("at")
    assert by["pid"].tolist() == [500, 501, 503, 500, 502]  # by backend_start
    # pid 500 twice: the request at 7.19 (sent before its backend started, answered after) opens the second life
    assert by.loc[2.9, "requests"] == 5 and by.loc[7.2, "requests"] == 5
    assert by.loc[2.9, "first_request"] == pytest.approx(T0 + 2.89) and by.loc[2.9, "last_request"] == T0 + 7.0
    assert by.loc[7.2, "first_request"] == pytest.approx(T0 + 7.19) and by.loc[7.2, "last_request"] == T0 + 13.0
    assert by.loc[4.4, "requests"] == 3 and by.loc[10.01, "requests"] == 3
    assert by.loc[2.9, "threads"] == "11" and by.loc[2.9, "worker_pids"] == "100"
    assert by["dyno"].tolist() == [0] * 5 and by["worker"].tolist() == [0] * 5


def test_each_life_how_it_ended_and_how_long_it_idled(lives):
    by = lives.assign(at=(lives["opened"] - T0).round(2)).set_index("at")
    assert by["end"].tolist() == ["closed", "closed", "closed", "open", "closed"]
    assert by.loc[2.9, "closed"] == T0 + 7.5 and pd.isna(by.loc[7.2, "closed"])  # open at the end: blank
    assert by.loc[2.9, "lifetime_s"] == pytest.approx(4.6)
    assert by.loc[7.2, "lifetime_s"] == pytest.approx(16.0 - 7.2)  # to the last sample
    assert by.loc[2.9, "idle_s"] == pytest.approx(4.6 - 5 * 0.02)
    assert by.loc[10.01, "idle_s"] == pytest.approx(4.99 - 0.07)
    assert by.loc[2.9, "idle_share"] == pytest.approx(7 / 9) and by.loc[4.4, "idle_share"] == pytest.approx(9 / 11)
    assert by.loc[2.9, "pss_bytes_p50"] == 2 * MIB and by.loc[2.9, "rss_bytes_p50"] == 12 * MIB
    assert by.loc[7.2, "pss_bytes_p50"] == 3 * MIB


def test_a_connection_no_request_used(lives):
    unused = lives[lives["pid"] == 503].iloc[0]
    assert unused["requests"] == 0 and unused["cause"] == "unknown"
    assert pd.isna(unused["first_request"]) and pd.isna(unused["worker_pids"]) and pd.isna(unused["threads"])
    assert unused["idle_s"] == pytest.approx(0.8)  # all of its life
    assert pd.isna(unused["pss_bytes_p50"])  # never there when memory was read: not measured, never 0


def test_why_each_was_opened(run, lives):
    by = lives.assign(at=(lives["opened"] - T0).round(2)).set_index("at")
    assert by["cause"].to_dict() == {2.9: "new_thread", 4.4: "new_thread", 5.2: "unknown", 7.2: "max_age",
                                     10.01: "health_check"}
    pool = pd.read_csv(R.RunPaths(run).cell("pool").connections_life)
    assert pool["cause"].tolist() == ["pool"] and pool["requests"].tolist() == [10]
    assert pool["threads"].tolist() == ["21;22"]


def test_the_summary_columns_by_hand(frames):
    _, cells, _ = frames
    life = cells.loc["life"]
    # window requests per connection: L1 4, L2 5, L3 3, L4 3, U1 2, U2 1 (the unsampled ones from requests alone)
    assert life["connections_used"] == 6
    assert life["requests_per_connection_p50"] == 3.0 and life["requests_per_connection_p10"] == pytest.approx(1.5)
    assert life["threads_seen"] == 3 and life["threads_per_worker_max"] == 3 and life["connections_per_thread"] == 2
    # closed lives: 4.6, 5.6, 4.99, 0.8
    assert life["connection_lifetime_s_p50"] == pytest.approx((4.6 + 4.99) / 2)
    # opened in [4, 14): L2, L3, L4, L5, U1, U2 (L1 opened in the warm-up), over 10 s
    assert life["opened_per_s"] == pytest.approx(0.6)
    assert {c: life[f"opened_{c}_per_s"] for c in R.OPEN_CAUSES} == pytest.approx(
        {"new_thread": 0.2, "max_age": 0.2, "health_check": 0.1, "pool": 0.0, "unknown": 0.1})
    # 18 mem rows in the window: 1, 2 x4, 3 x5, 4 x5, 5 x2, 6
    assert life["pss_backend_mib_p50"] == 3.0 and life["pss_backend_mib_p95"] == pytest.approx(5.15)
    assert life["rss_backend_mib_p50"] == 13.0
    # per sample time 4..13: 2 6 6 6 5 7 3 8 8 9 -> median 6
    assert life["pss_total_mib"] == 6.0
    asgi = cells.loc["asgi"]
    assert asgi["requests_per_connection_p50"] == 1 and asgi["threads_seen"] == 8
    assert asgi["opened_new_thread_per_s"] == pytest.approx(0.8) and np.isnan(asgi["pss_backend_mib_p50"])
    assert cells.loc["pool", "opened_per_s"] == 0 and cells.loc["pool", "requests_per_connection_p50"] == 10


def test_no_backends_csv_means_no_file_and_blank_columns(run, frames):
    _, cells, _ = frames
    summarize(run)
    assert not R.RunPaths(run).cell("old").connections_life.exists()
    assert cells.loc["old", list(LIFE_SUMMARY)].isna().all()  # not measured: blank, never 0
    assert cells.loc["old", "requests"] == 5


def test_rebuilding_replaces_the_file_and_removes_a_stale_one(run, tmp_path):
    summarize(run)
    path = R.RunPaths(run).cell("life").connections_life
    first = path.read_text()
    summarize(run)
    assert path.read_text() == first
    stale = R.RunPaths(run).cell("old").connections_life
    stale.write_text("pid\n1\n")
    summarize(run)
    assert not stale.exists()


def test_the_findings_say_which_account_the_data_support(frames):
    data, cells, groups = frames
    settings = Settings(data, cells.reset_index())
    names = {g: g for g in groups["group"]}
    said = asgi_threads(groups, settings, names, data.manifest.versions)
    assert len(said) == 1
    assert said == ["asgi: 8 requests ran on 8 distinct threads, each connection used by ~1 request (requests per "
                    "connection p50 1, 3 still open after the load stopped): Django's per-request thread-sensitive "
                    "executor opens a connection per request and nothing closes it (Django 5.2.8, asgiref 3.8.1)."]
    held = gthread_threads(groups, settings, names)
    assert held == ["life held 3, not 4: only 3 of 4 threads per worker ever ran a query (3 threads seen, "
                    "2 connections per thread)."]
    mem = memory(groups, settings, names)
    assert mem is not None and "PSS 3 MiB (p95 5.15) vs RSS 13 MiB" in mem and "shared_buffers" in mem


def test_the_report_shows_pss_beside_rss(run):
    text = build_report(run, charts=False).read_text()
    assert "PSS/backend MiB" in text and "RSS/backend MiB" in text and "connections_life.csv" in text


def _probe_doc(headroom: list) -> R.ProbeDoc:
    import json

    from tests.fixture_runs import FIXTURES

    doc = json.loads((FIXTURES / "run_probe" / "probe.json").read_text())
    return R.ProbeDoc.model_validate({**doc, "headroom": headroom})


def test_the_probes_headroom_counts_server_memory_pss_else_rss(tmp_path, capsys):
    import io

    from rich.console import Console

    from connbench.probe.rules import headroom, with_memory
    from connbench.probe.runner import backend_memory, print_summary

    paths = R.RunPaths(tmp_path).probe_app
    assert backend_memory(paths.backends) == (None, None)  # --target: no sampler, no memory
    write_backends(paths, T0, [(10, 1.0, 1.5, None, 9, 8), (11, 1.0, 1.5, None, 9, 8)],
                   {(10, 1.0): {2: 2, 3: 4}, (11, 1.0): {2: 3}})
    assert backend_memory(paths.backends) == (3.0, "pss")  # the median of 2, 4, 3 MiB
    rows = with_memory(headroom(2, 7), 3.0, "pss")
    assert [(r["connections"], r["memory_mib"], r["memory_measure"]) for r in rows] == [
        (2, 6.0, "pss"), (4, 12.0, "pss"), (6, 18.0, "pss"), (8, 24.0, "pss")]
    out = io.StringIO()
    print_summary(_probe_doc(rows), Console(file=out, width=200))
    assert "24 MiB PSS" in capsys.readouterr().out  # the tables print at their own width, to stdout
    assert "server memory: one app backend's median PSS" in " ".join(out.getvalue().split())
    rss_only = R.RunPaths(tmp_path / "rss").probe_app
    rss_only.root.mkdir(parents=True)
    out_rows = [(T0 + 2, "mem", 10, repr(T0), "", "", "", "", "", "", 12 * MIB)]
    R.write_csv_atomic(rss_only.backends, R.BACKENDS_COLUMNS, out_rows)
    assert backend_memory(rss_only.backends) == (12.0, "rss")
    assert with_memory(headroom(2, 7), None, None) == headroom(2, 7)  # not read: no figure, never 0
