"""When has a connection count stopped rising? (the probe's stopping rule, kept pure for tests)"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Plateau:
    plateau: int | None  # the highest count seen; None for an empty series
    reached_at_step: int | None  # first step (0-based) at which that count was seen
    steps: int  # steps observed
    stable_steps: int  # consecutive steps, at the end, that did not exceed the plateau
    settled: bool  # stable_steps >= the rule's K
    still_rising: bool  # the last step set a new high: more load would likely open more

    def as_dict(self) -> dict:
        return asdict(self)


def detect(counts: list[int], stable_steps: int = 3) -> Plateau:
    """The count has plateaued once K consecutive steps have not exceeded the highest count so far.

    A dip (a connection closed by CONN_MAX_AGE or a pool) does not reset the rule, and it does
    not lower the plateau: the question is how many connections the app will hold, at most.
    """
    if stable_steps < 1:
        raise ValueError("stable_steps must be >= 1")
    best, best_at, since = None, None, 0
    for i, c in enumerate(counts):
        if best is None or c > best:
            best, best_at, since = c, i, 0
        else:
            since += 1
    steps = len(counts)
    rising = steps >= 2 and best_at == steps - 1 and counts[-1] > counts[-2]
    return Plateau(best, best_at, steps, since, since >= stable_steps, rising)


def should_stop(counts: list[int], stable_steps: int) -> bool:
    return detect(counts, stable_steps).settled


def headroom(per_dyno: int, limit: int, extra_rows: int = 1) -> list[dict]:
    """Dynos of this shape that fit in `limit` connections, in the article's terms.

    Rows for 1..fit dynos plus `extra_rows` beyond, each with the connections they need.
    """
    if per_dyno <= 0:
        return [{"dynos": None, "connections": 0, "limit": limit, "fits": True,
                 "note": "this shape holds no connections at rest: dynos are not limited by connections"}]
    fit = limit // per_dyno
    rows = []
    for n in range(1, fit + extra_rows + 1):
        need = n * per_dyno
        rows.append({"dynos": n, "connections": need, "limit": limit, "fits": need <= limit})
    return rows


def max_dynos(per_dyno: int, limit: int) -> int | None:
    return None if per_dyno <= 0 else limit // per_dyno
