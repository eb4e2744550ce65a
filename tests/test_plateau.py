"""Issue 8: the plateau detector on synthetic series, and the headroom arithmetic."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connbench import plateau
from connbench.run.probe_load import is_loopback


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


@pytest.mark.parametrize("host, ok", [("127.0.0.1", True), ("127.8.9.1", True), ("localhost", True),
                                      ("[::1]", True), ("::1", True), ("10.0.0.5", False),
                                      ("example.com", False), ("", False), (None, False)])
def test_loopback_detection(host, ok):
    assert is_loopback(host) is ok
