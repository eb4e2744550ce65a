"""Stale connections (analysis/aftermath.py) on a run made by the harness's writers, and the pause fault's parts.

cell "hc-off": backends terminated at t=6; of the 3 requests in the 2 s after, 2 fail (connection_lost).
cell "hc-on": the same fault; every request runs Django's health check (check_ms); the first one after the fault
  finds its connection dead and reconnects (new_conn), the others cost 0.2, 0.3 and 0.4 ms on reuse.
cell "paused": no request from t=5 to t=6.5 (fault:pause, fault:resume); the first one after it fails.
"""

from __future__ import annotations

import pytest

from connbench import results as R
from connbench.analysis.aftermath import aftermath, check_costs, sentences
from connbench.analysis.load import load_run
from connbench.contract import LoadConfig
from connbench.errors import ScenarioError
from connbench.scenario import expand
from tests.fixture_runs import build_run, closed_requests

RAW = {
    "scenario": {"name": "fixture-aftermath", "description": "What the next requests saw."},
    "defaults": {"workers": 2, "conn_max_age": 60, "duration": 10, "warmup": 2, "cooldown": 2},
    "matrix": {"include": [{"id": "hc-off", "health_checks": False}, {"id": "hc-on", "health_checks": True},
                           {"id": "paused", "health_checks": False}]},
}
LOST = "connection_lost"
ROWS = {
    "hc-off": [{"t": 5.0}, {"t": 6.5, "error_class": LOST, "status": 500}, {"t": 6.6, "error_class": LOST,
                                                                          "status": 500},
               {"t": 7.0}, {"t": 9.0}],
    "hc-on": [{"t": 6.5, "check_ms": 0.1, "new_conn": 1}, {"t": 6.6, "check_ms": 0.2}, {"t": 7.0, "check_ms": 0.3},
              {"t": 9.0, "check_ms": 0.4}, {"t": 9.5}],
    # 6.49: sent a moment before the harness marked the resume (its mark comes after the generator's clock)
    "paused": [{"t": 4.5}, {"t": 6.49, "error_class": LOST, "status": 500}, {"t": 6.6}, {"t": 6.7}],
}
FAULTS = {"hc-off": [(6.0, "fault:terminate_backends", "terminated 2")],
          "hc-on": [(6.0, "fault:terminate_backends", "terminated 2")],
          "paused": [(5.0, "fault:pause", "no request sent for 1.5 s"),
                     (6.5, "fault:resume", "requests sent again after a pause")]}


def write_cell(p: R.CellPaths, cell, base: float) -> None:
    closed_requests(p, base, [{"ms": 5, "endpoint": "/db/read", **r} for r in ROWS[cell.cell_id]])
    for t, kind, detail in FAULTS[cell.cell_id]:
        R.append_event(p.events, base + t, kind, detail)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return load_run(build_run(tmp_path_factory.mktemp("aftermath") / "run_aftermath", RAW, write_cell))


def test_the_requests_after_a_fault_are_counted_from_when_they_meet_it(run):
    got = {(a.group, a.action): (a.faults, a.requests, a.failed, a.classes) for a in aftermath(run)}
    assert got == {("hc-off", "terminate_backends"): (1, 3, 2, {LOST: 2}),
                   ("hc-on", "terminate_backends"): (1, 3, 0, {}),
                   # from the pause's start to 2 s after its end: the request at 4.5 is not in it
                   ("paused", "pause"): (1, 3, 1, {LOST: 1})}


def test_health_checks_cost_is_the_median_over_reused_requests_and_what_they_caught(run):
    (c,) = check_costs(run)
    assert (c.group, c.checks, c.median_ms, c.caught) == ("hc-on", 4, pytest.approx(0.3), 1)
    assert c.lo_ms <= c.median_ms <= c.hi_ms


def test_the_findings_name_each_setting_and_its_failures(run):
    text = sentences(run)
    assert ("Dead connections handed out after terminate_backends (requests sent in the 2 s after it): "
            f"hc-off: 2 of 3 failed ({LOST} 2); hc-on: 0 of 3 failed.") in text
    assert f"Dead connections handed out after the pause's end (requests sent in the 2 s after it): paused: 1 of 3 " \
           f"failed ({LOST} 1)." in text
    (hc,) = [s for s in text if s.startswith("CONN_HEALTH_CHECKS")]
    assert "0.3 ms per reused request (median of 4 checks, 95% CI 0.2–0.4 ms)" in hc
    assert "1 found the connection dead" in hc


def test_a_pause_holds_requests_and_the_open_schedule_offers_none_in_it():
    load = LoadConfig.from_dict({"targets": ["http://127.0.0.1:1"], "mix": {}, "rate": None, "request_log_dir": None,
                                 "started_file": None, "pauses": [[2.0, 3.5]]})
    assert load.pauses == [(2.0, 3.5)]
    assert [load.paused_until(t) for t in (1.99, 2.0, 3.49, 3.5)] == [None, 3.5, 3.5, None]


@pytest.mark.parametrize(("fault", "says"), [
    ({"at": 1, "action": "pause"}, "a pause needs seconds > 0"),
    ({"at": 1, "action": "terminate_backends", "seconds": 2}, "seconds is for action = \"pause\" only"),
])
def test_a_pause_needs_its_seconds_and_only_a_pause_has_them(fault, says):
    with pytest.raises(ScenarioError, match=says):
        expand.from_dict({**RAW, "faults": [fault]}, "scenarios/x.toml")
