"""Pooled connections under faults.toml's dead connections (its pooled cells, `--cells`): Django's pool and
dj-db-conn-pool with their health checks off and on, under terminated backends and under an idle_session_timeout
fired by a pause. Reported as measured: the test holds the findings to the raw files, not to a number."""

from __future__ import annotations

import re
from html import unescape

import pytest

from connbench.analysis.aftermath import AFTER_S
from connbench.analysis.load import load_run
from tests.support import ROOT, cell_data

pytestmark = [pytest.mark.e2e, pytest.mark.beside_others]

POOLS = ("django-pool", "dj-db-conn-pool")
TERMINATE = [f"{p}-terminate-hc-{hc}" for p in POOLS for hc in ("off", "on")]
IDLE = [f"{p}-idle-hc-{hc}" for p in POOLS for hc in ("off", "on")]


@pytest.fixture(scope="module")
def run(run_factory):
    return run_factory(str(ROOT / "scenarios" / "faults.toml"), "--no-charts", "--cells", ",".join(TERMINATE + IDLE),
                       name="stale", expect=None)


def _text(run) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", (run.dir / "index.html").read_text())).split())


def _after(run, cell_id: str, opens: str, closes: str) -> tuple[int, int]:
    """(requests, failed) sent from one event to AFTER_S after another, counted here from the raw files."""
    cell = cell_data(run.dir, cell_id)
    ev, req = cell.csv("events.csv"), cell.csv("requests.csv")
    (t0,), (t1,) = ev[ev.kind == opens].t.astype(float), ev[ev.kind == closes].t.astype(float)
    w = req[(req.t_intended >= t0) & (req.t_intended < t1 + AFTER_S)]
    return len(w), int((w.error_class.fillna("") != "").sum())


def test_only_the_chosen_cells_ran_and_the_rest_are_listed_as_not_run(run):
    ran = {c.cell_id: c.status for c in load_run(run.dir).cells}
    assert sorted(ran) == sorted(TERMINATE + IDLE) and set(ran.values()) == {"completed"}, ran
    assert "not selected (--cells)" in _text(run)


def test_a_pause_sends_nothing_for_its_seconds(run):
    for cell_id in IDLE:
        cell = cell_data(run.dir, cell_id)
        ev, req = cell.csv("events.csv"), cell.csv("requests.csv")
        (start,), (end,) = ev[ev.kind == "fault:pause"].t.astype(float), ev[ev.kind == "fault:resume"].t.astype(float)
        assert end - start == pytest.approx(1.2, abs=0.1)
        inside = req[(req.t_start > start + 0.05) & (req.t_start < end - 0.05)]
        assert inside.empty, inside.t_start - start
        assert (req.t_start < start).sum() >= 10  # load before it (after it, a pool may hold its users, as measured)


def test_the_findings_say_what_each_pool_handed_out_after_each_fault(run):
    text = _text(run)
    for sentence, cells, events in (("after terminate_backends", TERMINATE, ("fault:terminate_backends",) * 2),
                                    ("after the pause's end", IDLE, ("fault:pause", "fault:resume"))):
        m = re.search(rf"Dead connections handed out {sentence} \(requests sent in the 2 s after it\): ([^.]*)\.",
                      text)
        assert m, text[:3000]
        for cell_id in cells:
            n, failed = _after(run, cell_id, *events)
            assert n > 0 and f"{cell_id}: {failed:,} of {n:,} failed" in m.group(1), (cell_id, n, failed, m.group(1))
