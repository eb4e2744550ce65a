"""The open model's schedule, and how the request log accounts for each request."""

from __future__ import annotations

import csv
import statistics

import pytest

from connbench.contract import DROPPED, REQUESTS_COLUMNS, UNANSWERED, arrival_times
from connbench.errors import ScenarioError
from connbench.scenario.expand import from_dict


def test_poisson_schedule_has_the_rate_and_exponential_gaps():
    t = arrival_times(50.0, 200.0, "poisson", seed=7)
    assert len(t) == pytest.approx(10_000, rel=0.03)
    gaps = [b - a for a, b in zip([0.0, *t], t, strict=False)]
    assert statistics.mean(gaps) == pytest.approx(1 / 50, rel=0.03)
    assert statistics.stdev(gaps) / statistics.mean(gaps) == pytest.approx(1.0, abs=0.05)  # CV of exponential
    assert t == arrival_times(50.0, 200.0, "poisson", seed=7)  # a seed repeats its schedule
    assert t != arrival_times(50.0, 200.0, "poisson", seed=8)


def test_uniform_schedule_is_evenly_spaced_and_exact():
    t = arrival_times(10.0, 9.0, "uniform", seed=0)
    assert len(t) == 90 and t[0] == 0.0 and t[-1] == pytest.approx(8.9) and all(0 <= x < 9.0 for x in t)
    gaps = [b - a for a, b in zip(t, t[1:], strict=False)]
    assert max(gaps) - min(gaps) < 1e-9


@pytest.mark.parametrize("shares", [1, 2, 3])
def test_shares_partition_the_schedule_so_the_total_rate_holds(shares):
    whole = arrival_times(40.0, 30.0, "poisson", seed=3)
    parts = [arrival_times(40.0, 30.0, "poisson", seed=3, share=i, shares=shares) for i in range(shares)]
    assert sorted(x for p in parts for x in p) == whole
    assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1


@pytest.mark.parametrize("extra", [{"users": 4}, {"rate": 2.0}])
def test_arrival_rate_with_closed_model_knobs_is_an_error(extra):
    with pytest.raises(ScenarioError, match="open-model"):
        from_dict({"scenario": {"name": "t"}, "defaults": {"arrival_rate": 10.0, **extra}}, "s.toml")
    with pytest.raises(ScenarioError, match="arrival_rate"):
        from_dict({"scenario": {"name": "t"}, "defaults": extra, "matrix": {"arrival_rate": [5.0, 10.0]}}, "s.toml")


def test_arrival_rate_as_an_axis_makes_open_cells():
    scen = from_dict({"scenario": {"name": "t"}, "matrix": {"arrival_rate": [5.0, 10.0], "arrival": ["uniform"]}})
    assert [c.knobs.open_model for c in scen.cells] == [True, True]


@pytest.fixture
def requestlog(tmp_path):
    from connbench.locustfiles.requestlog import FileSink, RequestLog

    log = RequestLog(FileSink(str(tmp_path)))
    yield log
    log.close()


def rows(log) -> list[dict]:
    log.close()
    with open(log.path, newline="") as fh:
        out = list(csv.DictReader(fh))
    assert tuple(out[0].keys()) == REQUESTS_COLUMNS
    return out


def test_latency_counts_from_the_intended_send_time(requestlog):
    requestlog.on_request("GET", "/db/slow", 50.0, 10, context={"dyno": 0, "t_intended": 100.0}, start_time=100.25)
    requestlog.on_request("GET", "/db/read", 5.0, 10, context={"dyno": 1}, start_time=200.0)  # closed model
    late, closed = rows(requestlog)
    assert float(late["latency_ms"]) == pytest.approx(300.0) and float(late["service_ms"]) == 50.0
    assert float(closed["t_intended"]) == float(closed["t_start"]) == 200.0
    assert float(closed["latency_ms"]) == float(closed["service_ms"]) == 5.0


def test_dropped_and_unanswered_requests_are_rows_never_skipped(requestlog):
    requestlog.dropped(100.0, "/db/slow", 1)
    ctx = {"dyno": 0, "t_intended": 90.0, "t_sent": 90.5, "name": "/db/slow", "state": {}}
    requestlog.unanswered(ctx)
    ctx["state"]["abandoned"] = True
    # fired after, with the copy of the context Locust makes: not counted
    requestlog.on_request("GET", "/db/slow", 1.0, 0, context={**ctx}, start_time=90.5)
    dropped, unanswered = rows(requestlog)
    assert (dropped["error_class"], dropped["status"], dropped["latency_ms"], dropped["service_ms"]) == (
        DROPPED, "0", "", "")
    assert dropped["t_start"] == dropped["t_intended"] == "100.0"
    assert unanswered["error_class"] == UNANSWERED and float(unanswered["latency_ms"]) > float(
        unanswered["service_ms"]) > 0
