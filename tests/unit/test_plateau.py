"""The plateau detector on synthetic series, and the headroom arithmetic."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connbench import results as R
from connbench.loopback import is_loopback
from connbench.probe import rules as plateau
from tests.fixture_runs import FIXTURES


def test_rising_then_flat_settles_at_the_plateau():
    r = plateau.detect([1, 2, 4, 6, 6, 6, 6], stable_steps=3)
    assert (r.plateau, r.reached_at_step, r.settled, r.still_rising) == (6, 3, True, False)


def test_flat_from_the_start():
    r = plateau.detect([3, 3, 3, 3], stable_steps=3)
    assert (r.plateau, r.reached_at_step, r.settled) == (3, 0, True)


def test_noisy_dips_do_not_reset_or_lower_the_plateau():
    r = plateau.detect([0, 2, 1, 2, 0, 1, 2], stable_steps=3)
    assert (r.plateau, r.reached_at_step, r.stable_steps, r.settled) == (2, 1, 5, True)


def test_a_late_rise_restarts_the_count():
    r = plateau.detect([2, 2, 2, 3, 3], stable_steps=3)
    assert (r.plateau, r.reached_at_step, r.stable_steps, r.settled) == (3, 3, 1, False)


def test_still_rising_at_the_limit():
    r = plateau.detect([1, 3, 5, 8, 12], stable_steps=3)
    assert (r.plateau, r.settled, r.still_rising) == (12, False, True)
    assert not plateau.should_stop([1, 3, 5, 8, 12], 3)


def test_empty_and_bad_k():
    assert plateau.detect([], 3).plateau is None
    with pytest.raises(ValueError):
        plateau.detect([1], 0)


@given(st.lists(st.integers(0, 50), min_size=1, max_size=40), st.integers(1, 5))
def test_plateau_is_the_max_and_settled_means_k_quiet_steps(counts, k):
    r = plateau.detect(counts, k)
    assert r.plateau == max(counts) and counts[r.reached_at_step] == max(counts)
    assert r.stable_steps == len(counts) - 1 - counts.index(max(counts))
    assert r.settled == (r.stable_steps >= k)


def test_headroom_in_the_articles_terms():
    # 20 connections, 3 workers (connections) per dyno: 6 dynos, 18 connections; a 7th does not fit
    rows = plateau.headroom(3, 20)
    assert plateau.max_dynos(3, 20) == 6
    assert [(r["dynos"], r["connections"], r["fits"]) for r in rows][-2:] == [(6, 18, True), (7, 21, False)]
    assert plateau.max_dynos(0, 20) is None and "no connections" in plateau.headroom(0, 20)[0]["note"]


def test_headroom_with_preboot_and_one_off_dynos():
    # a Preboot deploy runs the old and the new dynos together: 20 connections, 3 per dyno -> 3 dynos (18)
    assert plateau.max_dynos(3, 20, preboot=True) == 3
    rows = plateau.headroom(3, 20, preboot=True)
    assert [(r["dynos"], r["connections"], r["fits"]) for r in rows] == [(1, 6, True), (2, 12, True), (3, 18, True),
                                                                          (4, 24, False)]
    assert all(r["preboot"] for r in rows)
    # two one-off dynos (a console and the release phase): 18 left -> 6 dynos; with Preboot too -> 3
    assert plateau.max_dynos(3, 20, one_off=2) == 6 and plateau.max_dynos(3, 20, True, 2) == 3
    assert plateau.headroom(3, 20, one_off=2)[-1] == {"dynos": 7, "connections": 23, "limit": 20, "fits": False,
                                                      "preboot": False, "one_off": 2}
    assert plateau.max_dynos(3, 2, one_off=5) == 0  # the one-off dynos alone overflow the plan


@pytest.mark.parametrize("host, ok", [("127.0.0.1", True), ("127.8.9.1", True), ("localhost", True),
                                      ("[::1]", True), ("::1", True), ("10.0.0.5", False),
                                      ("example.com", False), ("", False), (None, False)])
def test_loopback_detection(host, ok):
    assert is_loopback(host) is ok


# -- the leak detector (plateau.leak) on synthetic series -----------------------------------------------
SEQ = [1] * 12  # sequential hits: one request in flight at a time


def _req(n, per=20):
    return [per * (i + 1) for i in range(n)]


def test_leak_a_plateau_is_no_leak():
    counts = [3, 3, 3, 3, 3, 3]
    assert plateau.leak(_req(6), counts, SEQ[:6], opened=[3, 0, 0, 0, 0, 0]) is None


def test_leak_lazy_rise_then_plateau_is_no_leak():
    # a ramp adding one client per step opens at most one more connection per step, then the count settles
    counts, ramp = [1, 2, 3, 4, 4, 4, 4], [1, 2, 3, 4, 5, 6, 7]
    assert plateau.leak(_req(7, 300), counts, ramp, opened=[1, 1, 1, 1, 0, 0, 0]) is None


def test_leak_per_request_connections_closed_at_the_end_are_no_leak():
    # CONN_MAX_AGE=0: a new connection for every request, but none left open once the load stops
    assert plateau.leak(_req(6), [0] * 6, SEQ[:6], opened=[20] * 6) is None


def test_leak_linear_growth_is_a_leak_with_its_rate():
    counts = [5 * (i + 1) for i in range(8)]  # one connection per 4 requests (20 a step)
    lk = plateau.leak(_req(8), counts, SEQ[:8])
    assert lk is not None and lk.kind == "rising"
    assert lk.at_step == 3 and lk.count == 20 and lk.per_requests == pytest.approx(4.0)
    assert not lk.server_full


def test_leak_saw_tooth_from_a_garbage_collector_is_a_leak_when_connections_stay_open():
    counts = [10, 6, 9, 5, 8]  # rises and falls, no net growth
    assert plateau.leak(_req(5), counts, SEQ[:5]) is None  # without `opened` the count alone cannot say
    lk = plateau.leak(_req(5), counts, SEQ[:5], opened=[20] * 5)
    assert lk is not None and lk.kind == "left-open" and lk.at_step == 3 and lk.per_requests == pytest.approx(1.0)


def test_leak_growth_then_server_full_errors():
    counts, errors = [30, 60, 90, 97, 97, 97], [0, 0, 0, 12, 40, 40]
    lk = plateau.leak(_req(6, 100), counts, SEQ[:6], errors=errors, limit=98)
    assert lk is not None and lk.kind == "rising" and lk.at_step == 3 and lk.server_full
    # the same growth on a bigger server: caught before any error
    lk = plateau.leak(_req(6, 100), counts, SEQ[:6], errors=[0] * 6, limit=400)
    assert lk is not None and not lk.server_full


def test_leak_a_ramp_opening_one_per_new_client_is_lazy_opening():
    # gthread, many threads: each step's extra client may open one more connection -- bounded by the load
    counts, ramp = [1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 8]
    assert plateau.leak(_req(8, 500), counts, ramp) is None
    # ten new connections per added client is not
    assert plateau.leak(_req(8, 500), [10 * c for c in counts], ramp).kind == "rising"


def test_leak_a_count_that_only_fluctuates_is_no_leak():
    # a pool's overflow opening and closing: up, down, up -- two rises in three steps, no net growth
    assert plateau.leak(_req(7), [2, 4, 2, 4, 2, 4, 2], SEQ[:7], opened=[2, 2, 0, 2, 0, 2, 0]) is None


def test_leak_lazy_opening_across_many_dynos_stays_under_the_predicted_bound():
    # 6 dynos x 3 sync workers, a ramp sending each new client to another dyno: 3, 6, 9, ... up to 18
    counts, ramp = [3, 6, 9, 12, 15, 18, 18], [1, 2, 3, 4, 5, 6, 7]
    assert plateau.leak(_req(7, 300), counts, ramp).kind == "rising"  # without the bound: a false leak
    assert plateau.leak(_req(7, 300), counts, ramp, bound=18) is None
    assert plateau.leak(_req(4, 300), [5, 20, 35, 50], [1] * 4, bound=18).kind == "rising"  # beyond it: a leak


def test_leak_needs_steps_and_consistent_lengths():
    assert plateau.leak(_req(3), [5, 10, 15], SEQ[:3]) is None  # window 3 needs 4 steps (step 0 never counts)
    with pytest.raises(ValueError):
        plateau.leak(_req(3), [5, 10], SEQ[:3])
    with pytest.raises(ValueError):
        plateau.leak(_req(3), [5, 10, 15], SEQ[:3], window=1)


def test_probe_summary_counts_preboot_and_one_off_dynos():
    import io
    import json

    from rich.console import Console

    from connbench.probe.runner import print_summary

    doc = json.loads((FIXTURES / "run_probe" / "probe.json").read_text())
    per, limit = doc["per_dyno"], doc["limit"]
    doc["settings"].update(preboot=True, one_off=1)
    doc["max_dynos"] = plateau.max_dynos(per, limit, True, 1)
    doc["headroom"] = plateau.headroom(per, limit, preboot=True, one_off=1)
    out = io.StringIO()
    print_summary(R.ProbeDoc.model_validate(doc), Console(file=out, width=200))
    used = plateau.need(doc["max_dynos"], per, True, 1)
    assert (f"at most {doc['max_dynos']} dynos of this shape fit in {limit} connections ({used} connections, "
            "counting twice during a Preboot deploy and 1 one-off dyno(s))") in out.getvalue()


def _summary(doc: dict) -> str:
    import io

    from rich.console import Console

    from connbench.probe.runner import print_summary

    out = io.StringIO()
    print_summary(R.ProbeDoc.model_validate(doc), Console(file=out, width=200))
    return " ".join(out.getvalue().split())


def _probe_doc() -> dict:
    import json

    return json.loads((FIXTURES / "run_probe" / "probe.json").read_text())


def test_the_probes_limit_is_printed_the_way_it_is_computed():
    doc = _probe_doc()
    srv = doc["server"]
    out = _summary(doc)
    worked = srv["max_connections"] - srv["reserved_slots"] - srv["probe_sessions"]
    assert worked == doc["limit"] == srv["app_slots"]  # the fixture's own arithmetic holds
    assert (f"limit {doc['limit']} (max_connections {srv['max_connections']} - {srv['reserved_slots']} reserved - 1 "
            f"for the probe's own session = {worked})") in out
    doc["settings"]["limit"], doc["limit"] = 20, 20  # --limit 20: said as given, not "explained" by the server
    out = _summary(doc)
    assert "limit 20 (--limit 20)" in out and "reserved" not in out.split("limit 20")[1][:40]


def test_a_predicted_leak_that_happened_is_said_as_such():
    doc = _probe_doc()
    doc["predicted"].update(bounded=False, at_rest=None, basis="ASGI: Django's connections are per thread")
    doc["matches"] = True
    assert "-> leak, as predicted" in _summary(doc)
    doc["matches"] = False
    assert "-> no leak seen, though one was predicted" in _summary(doc)
    doc["predicted"].update(bounded=True, at_rest=2)
    assert "-> does not match" in _summary(doc)


def test_a_count_that_never_settled_and_grew_outgrew_every_bound():
    from connbench.probe.runner import outgrew

    def mode(counts, settled, leak=None):  # only what outgrew reads
        return R.ProbeMode.model_construct(plateau=R.ProbePlateau.model_construct(settled=settled),
                                           steps=[R.ProbeStep.model_construct(count=c) for c in counts],
                                           leak=R.ProbeLeak.model_construct(**leak) if leak else None)

    assert outgrew({"sequential": mode([2, 9, 17, 25], settled=False)})  # stopped at the limit, still rising
    assert outgrew({"ramp": mode([2, 3, 3], settled=True, leak={"kind": "left-open"})})
    assert not outgrew({"ramp": mode([2, 4, 4, 4], settled=True)})
    assert not outgrew({"ramp": mode([4, 3, 4], settled=False)})  # fluctuated, never gained
