"""What breaks behind a transaction pooler (scenarios/pitfalls.toml): every session-state hazard the bundled app
has on purpose is detected per endpoint in every cell, direct or pooled; behind PgBouncer's transaction mode the
ones that need their server connection back fail, each with its own error class; the report says why and the fix.

The load makes the failures certain: 4 threads share 2 server connections, so the two autocommit statements of
one request (DECLARE then FETCH, PREPARE then EXECUTE) land on different ones for a good share of ~300 requests
per endpoint (one run: 522 of 1,472 held-cursor requests failed)."""

from __future__ import annotations

import re
from html import unescape

import pandas as pd
import pytest

from connbench import results as R
from connbench.contract import HAZARD_ENDPOINTS
from connbench.services.pgbouncer import pgbouncer_binary
from tests.support import ROOT, cell_data, read_json

pytestmark = [pytest.mark.e2e, pytest.mark.beside_others,
              pytest.mark.skipif(pgbouncer_binary() is None, reason="pgbouncer not installed (make installs it)")]

KIND_OF = {"set": "set_session", "set_config": "set_config_session", "advisory": "advisory_lock_session",
           "listen": "listen", "temp": "temp_table", "hold": "cursor_with_hold", "prepare": "prepare",
           "iterator": "server_side_cursor"}
# what each endpoint's failures may be under transaction pooling. advisory: the unlock ran on another server
# connection (409). temp: "relation does not exist", as generic as an app's missing migration, so no class of
# its own: the app's 500, its traceback in the gunicorn log
FAILS_AS = {"hold": {"invalid_cursor"}, "prepare": {"prepared_statement_missing"},
            "iterator": {"invalid_cursor", "duplicate_cursor"}, "advisory": {"client_error"}, "temp": {"http_5xx"}}


@pytest.fixture(scope="module")
def run(run_factory):
    return run_factory(str(ROOT / "scenarios" / "pitfalls.toml"), "--no-charts", name="pitfalls", expect=1)


def _requests(run_dir, cell_id) -> pd.DataFrame:
    return cell_data(run_dir, cell_id).csv("requests.csv")


def test_every_hazard_endpoint_is_found_with_its_kind_and_nothing_else(run):
    assert set(KIND_OF) == set(HAZARD_ENDPOINTS)
    h = pd.read_csv(run.dir / R.HAZARDS_CSV)
    found = set(zip(h.endpoint, h.kind, strict=True))
    assert found == {(f"/hazard/{e}", k) for e, k in KIND_OF.items()}  # and /db/read: none
    by = h.set_index("endpoint")
    # in every cell, direct ones too: except the iterator where connbench disabled server-side cursors
    assert (by.drop("/hazard/iterator").cells == 3).all() and by.loc["/hazard/iterator", "cells"] == 2
    assert (h.example.str.len() <= 200).all() and h.example.notna().all()
    assert by.loc["/hazard/set_config", "example"] == "SELECT set_config(?, ?, false)"  # literals never shown


def test_on_a_direct_connection_every_hazard_works(run):
    r = _requests(run.dir, "direct")
    assert len(r) > 100 and (r.status == 200).all(), r[r.status != 200].groupby(["endpoint", "error_class"]).size()


def test_behind_transaction_pooling_they_fail_each_with_its_own_class(run):
    for cell_id in ("transaction", "transaction-default"):
        r = _requests(run.dir, cell_id)
        failed = r[r.error_class.fillna("") != ""]
        for endpoint, g in failed.groupby("endpoint"):
            name = endpoint.removeprefix("/hazard/")
            assert name in FAILS_AS and set(g.error_class) <= FAILS_AS[name], (cell_id, endpoint, set(g.error_class))
    r = _requests(run.dir, "transaction")
    for name in ("hold", "prepare", "iterator"):  # certain under this load: see the module's docstring
        assert (r[r.endpoint == f"/hazard/{name}"].error_class.fillna("") != "").any(), name
    default = _requests(run.dir, "transaction-default")  # DISABLE_SERVER_SIDE_CURSORS: the iterator is client-side
    it = default[default.endpoint == "/hazard/iterator"]
    assert len(it) and (it.status == 200).all() and not it.hazards.fillna("").str.contains("server_side").any()


def test_the_expectation_fails_the_run_and_the_report_says_why_and_the_fix(run):
    results = read_json(run.dir / "expectations.json")
    assert len(results) == 3 and all(r["passed"] is False and r["measured"] is False for r in results)  # every cell
    for cell_id in ("direct", "transaction", "transaction-default"):
        assert re.search(rf"expectation failed: {cell_id}: safe for transaction pooling: transaction pooling safe "
                         r"== \(hazards: advisory_lock_session cursor_with_hold .*requests\)", run.result.stderr)
    text = " ".join(unescape(re.sub(r"<[^>]+>", " ", (run.dir / "index.html").read_text())).split())
    assert "Not safe for transaction pooling: 8 kinds of session-state hazard across 8 endpoints" in text
    for fix in ("SET LOCAL", "pg_advisory_xact_lock", "set_config(name, value, true)", "DISABLE_SERVER_SIDE_CURSORS"):
        assert fix in text, fix
    assert re.search(r"[\d,]+ failed under transaction pooling \(invalid_cursor\)", text)
    assert "connbench set DISABLE_SERVER_SIDE_CURSORS" in text  # the transaction-default cell's shim, said


def test_a_preloaded_pool_is_shared_by_the_workers_and_the_fix_gives_each_its_own(run):
    """gunicorn --preload, a query at import, Django's pool: the master's checked-out connection and its pool are
    inherited by both sync workers, which then run every request on that one backend at once (certain: the pool
    in each worker holds that one connection, and a sync worker never needs a second)."""
    s = pd.read_csv(run.dir / R.SUMMARY_CSV).set_index("cell_id")
    assert s.loc["preload", "shared_backends"] >= 1, s.loc["preload"].filter(like="shared")
    r = _requests(run.dir, "preload")
    on = r.dropna(subset=["backend_pid"]).groupby("backend_pid").worker_pid.nunique()
    assert on.max() == 2, on  # both workers on one backend
    fixed = _requests(run.dir, "preload-fixed")
    assert s.loc["preload-fixed", "shared_backends"] == 0 and (fixed.status == 200).all()
    assert fixed.groupby("backend_pid").worker_pid.nunique().max() == 1  # each worker its own connections
    text = " ".join(unescape(re.sub(r"<[^>]+>", " ", (run.dir / "index.html").read_text())).split())
    assert "workers shared database connections after fork" in text and "close_pools_before_fork = true" in text


def _after_pause(run_dir, cell_id) -> pd.DataFrame:
    """The cell's requests answered after its pause began, each worker's in the order it answered them."""
    cell = cell_data(run_dir, cell_id)
    ev, req = cell.csv("events.csv"), cell.csv("requests.csv")
    (start,) = ev[ev.kind == "fault:pause"].t.astype(float)
    after = req[req.t_start >= start].assign(answered=lambda d: d.t_start + d.service_ms / 1000.0)
    return after.sort_values("answered")


def test_a_reaped_idle_connection_fails_the_next_request_unless_health_checks_catch_it(run):
    """A 300 ms idle timeout and a 1.2 s pause: every persistent connection is dead when the load resumes. Without
    health checks the first request each sync worker answers after it fails (connection_lost, the server's own
    words in the app's log), and Django's next one reconnects; with CONN_HEALTH_CHECKS Django pings first and
    reconnects: no request fails. PgBouncer's client_idle_timeout does the same to the app's connection to it;
    its server_idle_timeout closes only PgBouncer's server connections, which PgBouncer replaces unseen."""
    for cell_id in ("idle-hc-off", "idle-pgbouncer-client"):
        after = _after_pause(run.dir, cell_id)
        firsts = after.groupby("worker_pid").head(1)
        assert len(firsts) == 2 and (firsts.error_class == "connection_lost").all(), (cell_id, firsts)
        later = after.drop(firsts.index)
        assert len(later) >= 10 and (later.error_class == "").all(), later.error_class.value_counts()
    for cell_id in ("idle-hc-on", "idle-pgbouncer-server"):
        reqs = _requests(run.dir, cell_id)
        assert len(reqs) >= 40 and (reqs.status == 200).all(), reqs.error_class.value_counts()
    on = _after_pause(run.dir, "idle-hc-on")
    assert on.groupby("worker_pid").head(1).new_conn.tolist() == [1, 1]  # the dead ones replaced, never handed out
    assert on.check_ms.notna().sum() >= 10  # the health check's round trip, timed by the app's Server-Timing
    log = (run.dir / "cells" / "idle-hc-off" / "logs" / "gunicorn-d0.log").read_text()
    assert "terminating connection due to idle-session timeout" in log  # the real cause, traceback included
    pgb_log = run.dir / "cells" / "idle-pgbouncer-client" / "logs" / "gunicorn-d0.log"
    assert "client_idle_timeout" in pgb_log.read_text()
    text = " ".join(unescape(re.sub(r"<[^>]+>", " ", (run.dir / "index.html").read_text())).split())
    assert "Dead connections handed out after the pause's end" in text and "idle-hc-off: 2 of " in text
    assert re.search(r"idle-pool: [\d,]+ of [\d,]+ failed", text)  # Django's pool: reported as measured
    assert re.search(r"CONN_HEALTH_CHECKS in idle-hc-on: [\d.]+ ms per reused request \(median of [\d,]+ checks, "
                     r"95% CI", text)
