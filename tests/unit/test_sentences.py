"""Every findings sentence is true under every worker class it can appear under: sync, gthread, gevent, asgi.

One small run per worker class, made by the fixture writers: CONN_MAX_AGE=0 (every request opens a
connection), CONN_MAX_AGE=none and PgBouncer transaction mode at 0. What CONN_MAX_AGE=none does depends on
the worker class: WSGI workers reuse their connection (a new one for 1 request in 100); under ASGI each
request opens one and leaves it behind, so it is not "persistent" and must never be compared as such.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from connbench import results as R
from connbench.analysis.findings import findings
from connbench.analysis.load import load_run
from connbench.analysis.settings import Settings
from connbench.analysis.summarize import summaries
from connbench.scenario import expand
from tests.fixtures.make_runs import T0, manifest, requests_csv, run_cell, sampler_rows

WORKER_CLASSES = ("sync", "gthread", "gevent", "asgi")


def _raw(worker_class: str) -> dict:
    return {
        # gevent's persistent cells are pruned unless asked for (one connection per greenlet): asked for here
        "scenario": {"name": f"sentences-{worker_class}", "allow_gevent_persistent": worker_class == "gevent"},
        "defaults": {"workers": 2, "worker_class": worker_class, "users": 4, "duration": 8, "warmup": 2,
                     "cooldown": 2, "pgbouncer_pool_size": 2},
        "matrix": {"include": [{"id": "cma-0", "conn_max_age": 0}, {"id": "cma-none", "conn_max_age": "none"},
                               {"id": "pgb", "conn_max_age": 0, "pooling": "pgbouncer-transaction"}]},
    }


def _run(root: Path, worker_class: str) -> Path:
    sc = expand.from_dict(_raw(worker_class), Path(f"scenarios/sentences-{worker_class}.toml"))
    leaks = worker_class == "asgi"
    docs = []
    for k, cell in enumerate(sc.cells):
        base, p = T0 + 100 * k, R.RunPaths(root).cell(cell.cell_id)
        persistent = cell.cell_id == "cma-none"
        lat = 40.0 if persistent and not leaks else 50.0  # opening a connection costs 10 ms, when one is opened

        def timing(ms, i=[0], opens_every=100 if persistent and not leaks else 1):  # noqa: B006 - a counter
            i[0] += 1
            new = i[0] % opens_every == 1 or opens_every == 1
            return (10.0 if new else 0.0, 0, ms / 2, ms / 4, int(new))

        requests_csv(p, [(base + 4 + j * 0.04, "read", lat, 200, "", str(u % 2)) for j in range(200)
                         for u in range(4)], timing=timing)
        # the server's count: 2 held by the workers, rising by 2 a second under ASGI's leak, 0-4 at CMA=0
        if persistent:
            series = [0, 0, 2, 2] + ([2 + 2 * i for i in range(8)] + [17] * 3 if leaks else [2] * 11)
        else:
            series = [0, 0, 2, 3, 2, 4, 1, 3, 4, 2, 0, 3, 0, 0, 0]
        # the server's sessions: one a second where connections persist (1 in 100 requests), else one a request
        sessions = {t: t * (1 if persistent and not leaks else 100) for t in range(len(series))}
        pgb = None
        if cell.cell_id == "pgb":
            pgb = {t: (4, 0, 2, 0, 0, 0, 0.0, 10 * t, 100 * t) for t in range(len(series))}
        sampler_rows(p, base, dict(enumerate(series)), sessions, pgb=pgb)
        docs.append(run_cell(p, cell, base, pgbouncer={"port": 16432} if pgb else None))
    manifest(root, sc, docs, T0 - 5, T0 + 100 * len(sc.cells))
    return root


@pytest.fixture(scope="module", params=WORKER_CLASSES)
def said(request, tmp_path_factory) -> tuple[str, list[str], dict]:
    run = _run(tmp_path_factory.mktemp(request.param) / "run", request.param)
    data = load_run(run)
    cells, groups = summaries(data)
    out = findings(groups, Settings(data, cells))
    return request.param, out["claims"], out["table"]


def test_conn_max_age_0_says_how_often_a_connection_was_opened(said):
    _, claims, _ = said
    first = [c for c in claims if c.startswith("CONN_MAX_AGE=0")]
    assert first and "opened a new connection for 100% of requests" in first[0]
    assert "Each cost 10 ms to open (median of 800 requests that opened one" in first[0]


def test_persistent_comparisons_only_where_connections_were_reused(said):
    worker_class, claims, _ = said
    compared = [c for c in claims if "against persistent connections" in c]
    held = [c for c in claims if c.startswith("With persistent connections")]
    if worker_class == "asgi":  # 100 % of CONN_MAX_AGE=none's requests opened one: nothing persisted
        assert not compared and not held
        leak = [c for c in claims if "left connections behind" in c]
        assert leak and "a new one opened for 100% of requests" in leak[0]
    else:
        assert len(compared) == 1 and "(CONN_MAX_AGE=none)" in compared[0]
        assert len(held) == 1 and "the app held 2 server connections" in held[0]
        if worker_class != "gevent":  # a greenlet per request: not the one-per-thread rule's to predict
            assert "for 2 worker threads: one per worker thread, as the articles predict" in held[0]
        assert not any("did not keep connections for reuse" in c for c in claims)


def test_through_pgbouncer_the_table_has_the_apps_churn_beside_the_servers(said):
    _, _, table = said
    h = table["headers"]
    at = h.index("app → PgBouncer new connections/s")
    assert h[at - 1] == "new server connections/s"
    values = {row[1]: row[at] for row in table["rows"]}
    assert [v for k, v in values.items() if "pgbouncer" in k] == ["100"]  # 800 requests in 8 s, each new
    assert all(v == "–" for k, v in values.items() if "pgbouncer" not in k)


def test_a_not_reused_persistent_setting_that_did_not_leak_is_said_so():
    from connbench.analysis.findings import not_persistent

    row = {"group": "g", "conn_max_age": 60, "worker_class": "asgi", "new_conn_share": 0.86, "conn_held": 3}
    text = not_persistent(row, {"g": "CONN_MAX_AGE=60"})
    assert text == ("CONN_MAX_AGE=60 under ASGI (CONN_MAX_AGE=60) did not keep connections for reuse: 86% of its "
                    "requests opened a connection; 3 were still open after the load stopped. It is not compared "
                    "as persistent.")


def test_pgbouncer_sharing_is_said_under_every_worker_class(said):
    _, claims, _ = said
    shared = [c for c in claims if c.startswith("Through PgBouncer in transaction mode")]
    assert len(shared) == 1 and "up to 4 app connections shared at most 2 server connections (pool size 2)" in shared[0]
