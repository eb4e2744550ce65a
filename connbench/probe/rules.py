"""When has a connection count stopped rising? (the probe's stopping rule, kept pure for tests)"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, NotRequired, TypedDict


class HeadroomDict(TypedDict):
    """A row of headroom() (connbench.results.HeadroomRow in probe.json)."""

    dynos: int | None
    connections: int
    limit: int
    fits: bool
    preboot: NotRequired[bool]
    one_off: NotRequired[int]
    note: NotRequired[str]
    memory_mib: NotRequired[float]
    memory_measure: NotRequired[Literal["pss", "rss"]]


class _Counted(TypedDict):
    preboot: bool
    one_off: int


@dataclass(frozen=True)
class Plateau:
    plateau: int | None  # the highest count seen; None for an empty series
    reached_at_step: int | None  # first step (0-based) at which that count was seen
    steps: int  # steps observed
    stable_steps: int  # consecutive steps, at the end, that did not exceed the plateau
    settled: bool  # stable_steps >= the rule's K
    still_rising: bool  # the last step set a new high: more load would likely open more

    def as_dict(self) -> dict[str, Any]:
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


def need(dynos: int, per_dyno: int, preboot: bool = False, one_off: int = 0) -> int:
    """Connections `dynos` web dynos need at the worst moment: twice as many during a Heroku Preboot deploy
    (the old and the new set run side by side), plus one per one-off dyno (a `heroku run` console or the
    release phase runs one Django process, which holds one connection)."""
    return dynos * per_dyno * (2 if preboot else 1) + one_off


def headroom(per_dyno: int, limit: int, extra_rows: int = 1, preboot: bool = False,
             one_off: int = 0) -> list[HeadroomDict]:
    """Dynos of this shape that fit in `limit` connections, in the article's terms.

    Rows for 1..fit dynos plus `extra_rows` beyond, each with the connections they need (`need`).
    """
    extra: _Counted = {"preboot": preboot, "one_off": one_off}
    if per_dyno <= 0:
        return [{"dynos": None, "connections": one_off, "limit": limit, "fits": one_off <= limit, **extra,
                 "note": "this shape holds no connections at rest: dynos are not limited by connections"}]
    fit = max_dynos(per_dyno, limit, preboot, one_off) or 0
    rows: list[HeadroomDict] = []
    for n in range(1, fit + extra_rows + 1):
        c = need(n, per_dyno, preboot, one_off)
        rows.append({"dynos": n, "connections": c, "limit": limit, "fits": c <= limit, **extra})
    return rows


def with_memory(rows: list[HeadroomDict], per_backend_mib: float | None,
                measure: Literal["pss", "rss"] | None) -> list[HeadroomDict]:
    """Each row with the server memory its connections take: one app backend's (the probe's median) x connections.
    PSS when the sampler read it; RSS counts shared pages in every backend, so its total overstates."""
    if per_backend_mib is None or measure is None:
        return rows
    return [{**row, "memory_mib": per_backend_mib * row["connections"], "memory_measure": measure} for row in rows]


def max_dynos(per_dyno: int, limit: int, preboot: bool = False, one_off: int = 0) -> int | None:
    if per_dyno <= 0:
        return None
    return max(0, (limit - one_off) // (per_dyno * (2 if preboot else 1)))


@dataclass(frozen=True)
class Leak:
    """Connections are being left behind: the count keeps rising with requests, or stays above what the
    load could be using while nearly every request opens a new one."""

    kind: str  # "rising" | "left-open"
    at_step: int  # the step at which the rule fired
    requests: int  # requests sent by then
    count: int  # the count then
    per_requests: float  # about one connection left behind per this many requests (over the window)
    server_full: bool  # some step failed requests with the count at the limit: the leak filled the server

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def leak(requests: list[int], counts: list[int], concurrency: list[int], window: int = 3,
         opened: list[int | None] | None = None, errors: list[int] | None = None,
         limit: int | None = None, bound: int | None = None) -> Leak | None:
    """A leak, not lazy opening, judged on the last `window` steps (step 0's rise, lazy opening, never counts).

    left-open (when `opened`, sessions the server started per step, is known): after every step, with the
    load stopped, more connections are open than the step's concurrency could use, and the server saw a new
    connection for at least every second request. A garbage collector closing abandoned connections makes
    such a count saw-tooth rather than rise.
    rising: the count rose in all but at most one step, by at least one connection per step net, and by more
    than twice what added concurrency (a ramp's new clients) could open.
    `errors` and `limit`: failed requests with the count within one of the limit: the server filled up.
    `bound`: what the parameters predict at most (lazy opening can reach it across many dynos): a count
    at or under it is never a leak.
    """
    if window < 2:
        raise ValueError("window must be >= 2")
    n = len(counts)
    if len(requests) != n or len(concurrency) != n or any(x is not None and len(x) != n for x in (opened, errors)):
        raise ValueError("requests, counts, concurrency (and opened, errors) must have one entry per step")
    for end in range(window + 1, n + 1):
        lo, i = end - window - 1, end - 1
        if bound is not None and counts[i] <= bound:
            continue
        win = range(lo + 1, end)
        rises = [counts[j] - counts[j - 1] for j in win]
        gain = counts[i] - counts[lo]  # net: a count that only fluctuates does not gain
        extra = sum(max(0, concurrency[j] - concurrency[j - 1]) for j in win)
        kind, per = None, 0.0
        sent = requests[i] - requests[lo]
        if opened is not None and all(opened[j] is not None for j in win):
            new = sum(opened[j] or 0 for j in win)  # none is None (checked above): `or 0` only narrows the type
            if new and 2 * new >= sent and all(counts[j] > concurrency[j] for j in win):
                kind, per = "left-open", sent / new
        if not kind and sum(d > 0 for d in rises) >= window - 1 and gain >= window and gain > 2 * extra:
            kind, per = "rising", sent / gain
        if kind:
            full = errors is not None and limit is not None and any(
                e > 0 and c >= limit - 1 for e, c in zip(errors[:end], counts[:end], strict=True))
            return Leak(kind, i, requests[i], counts[i], per, full)
    return None
