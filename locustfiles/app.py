"""The load: a FastHttpUser hitting the target app's endpoints with a configurable mix.

Configured by the harness with one environment variable (connbench.contract.LoadConfig): the
dynos' URLs (users spread round-robin), the endpoint mix, the rate per user, the raw log's place.
"""

import itertools
import random
import time
from typing import Any, cast

import gevent
import gevent.pool
from locust import constant, constant_throughput, events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.env import Environment
from locust.exception import StopUser

from connbench.contract import HAZARD_ENDPOINTS, LoadConfig, arrival_times
from connbench.locustfiles import requestlog

LOG = requestlog.install()
# Set when the test starts, before any user exists: on a worker the configuration is the master's, which
# Locust hands over then (a worker on another machine has no environment of the harness's).
LOAD: LoadConfig
TARGETS: list[str] = []
ENDPOINTS: dict[str, tuple[str, str]] = {}  # endpoint -> (path, name in the stats)
NAMES: list[str] = []
WEIGHTS: list[float] = []
_next_user = itertools.count()
_dispatched = False
T_START = 0.0  # this process's test start: `pause` faults count from it


@events.test_start.add_listener
def _configure(environment: Environment, **_kw: Any) -> None:
    global LOAD, TARGETS, ENDPOINTS, NAMES, WEIGHTS, T_START
    T_START = time.time()
    LOAD = LOG.config(environment)
    TARGETS = LOAD.targets
    mix = LOAD.mix
    # the bundled app's endpoints, weighted by the mix; or the scenario's [load] paths
    if LOAD.paths:
        ENDPOINTS = {p: (p, p) for p in LOAD.paths}
        NAMES, WEIGHTS = list(LOAD.paths), list(LOAD.paths.values())
    else:
        ENDPOINTS = {"health": ("/health", "/health"), "read": ("/db/read", "/db/read"),
                     "write": ("/db/write", "/db/write"),
                     "slow": (f"/db/slow?ms={int(mix.get('slow_ms', 50))}", "/db/slow")}
        NAMES = [e for e in ENDPOINTS if mix.get(e, 0) > 0]
        WEIGHTS = [mix[e] for e in NAMES]
        if mix.get("hazards", 0) > 0:  # the bundled app's /hazard/<kind> endpoints share the weight equally
            for name in HAZARD_ENDPOINTS:
                ENDPOINTS[name] = (f"/hazard/{name}", f"/hazard/{name}")
                NAMES.append(name)
                WEIGHTS.append(mix["hazards"] / len(HAZARD_ENDPOINTS))
    OpenUser.concurrency = LOAD.max_in_flight  # the connection pool: one connection per request in flight


class AppUser(FastHttpUser):
    """Closed model: each user sends its next request when the last one answered (or at `rate`)."""

    # Connection errors are what we measure: never retry them away.
    max_retries = 0
    network_timeout = 60.0
    connection_timeout = 10.0

    def on_start(self) -> None:
        if LOG.stopped:  # Locust spawned it after the master ended the run
            raise StopUser()
        # users go round-robin over dynos across every Locust process (process i takes users i, i+n, ...)
        share, shares = LOG.share(self.environment)
        self.dyno = (share + next(_next_user) * shares) % len(TARGETS)
        self.base = TARGETS[self.dyno]
        self.ctx: dict[str, Any] = {"dyno": self.dyno}

    def wait_time(self) -> float:
        return constant_throughput(LOAD.rate)(self) if LOAD.rate else 0

    @task
    def request(self) -> None:
        # one task choosing by the mix's weights as they are (Locust's @task weights are integers)
        path, name = ENDPOINTS[random.choices(NAMES, weights=WEIGHTS)[0]]
        resume = LOAD.paused_until(time.time() - T_START) if LOAD.pauses else None
        if resume is not None:  # a `pause` fault: hold this request until the pause ends
            gevent.sleep(T_START + resume - time.time())
        self.client.get(self.base + path, name=name, context=self.ctx)


def _abandon(waiting: dict[int, dict[str, Any]]) -> None:
    """Requests still out: each an `unanswered` row, once. Marked first (an inner dict: Locust copies the
    context, not this), so one that answers while these rows are logged is not logged twice."""
    out = [ctx for ctx in list(waiting.values()) if not ctx["state"].get("abandoned")]
    for ctx in out:
        ctx["state"]["abandoned"] = True
    for ctx in out:
        LOG.unanswered(ctx)


class OpenUser(FastHttpUser):
    """Open model: one per Locust process sends its share of a schedule drawn from the seed, each request
    in its own greenlet through the user's connection pool (so Locust's own stats see every request).
    Latency counts from when the schedule said to send; a request that finds max_in_flight requests
    out is dropped and logged, never silently skipped."""

    wait_time = constant(0)
    max_retries = 0
    network_timeout = 60.0
    connection_timeout = 10.0

    @task
    def dispatch(self) -> None:
        global _dispatched
        if _dispatched or LOG.stopped:
            # one schedule share per process: a second OpenUser here (Locust hands a lost worker's users to the
            # others) would send this share twice, from a later origin; the lost share stays lost, and says so
            raise StopUser()
        _dispatched = True
        share, shares = LOG.share(self.environment)
        offsets = arrival_times(cast(float, LOAD.arrival_rate), LOAD.schedule_s, LOAD.arrival, LOAD.seed, share, shares)
        offsets = [t for t in offsets if LOAD.paused_until(t) is None]  # `pause` faults: nothing offered then
        rng = random.Random(LOAD.seed * 1_000_003 + share)
        picks = rng.choices(NAMES, weights=WEIGHTS, k=len(offsets))
        out = gevent.pool.Pool(LOAD.max_in_flight)
        waiting: dict[int, dict[str, Any]] = {}  # requests in flight: their context
        origin, done = time.time(), 0
        try:
            for i, (offset, endpoint) in enumerate(zip(offsets, picks, strict=True)):
                intended = origin + offset
                delay = intended - time.time()
                if delay > 0:
                    gevent.sleep(delay)
                dyno = (share + i * shares) % len(TARGETS)
                done = i + 1
                if out.full():
                    LOG.dropped(intended, ENDPOINTS[endpoint][1], dyno)
                    continue
                out.spawn(self._send, endpoint, {"dyno": dyno, "t_intended": intended, "state": {}}, waiting)
            # The schedule is over (so is Locust's run time): requests still queued are the finding, so wait
            # for them (--stop-timeout lets this task finish); what is still out then is logged, not lost.
            if not out.join(timeout=LOAD.drain_s):
                _abandon(waiting)
                out.kill(block=True, timeout=1)  # nothing of it may answer after this worker's last rows
        except gevent.GreenletExit:
            # stopped first (a generator too far behind its schedule for the stop timeout): what it never sent is
            # dropped, what is out unanswered, each a row; never lost
            for j in range(done, len(offsets)):
                LOG.dropped(origin + offsets[j], ENDPOINTS[picks[j]][1], (share + j * shares) % len(TARGETS))
            _abandon(waiting)
            out.kill(block=True, timeout=1)
            raise
        raise StopUser()

    def _send(self, endpoint: str, ctx: dict[str, Any], waiting: dict[int, dict[str, Any]]) -> None:
        path, ctx["name"] = ENDPOINTS[endpoint]
        waiting[id(ctx)] = ctx
        ctx["t_sent"] = time.time()
        try:
            self.client.get(TARGETS[ctx["dyno"]] + path, name=ctx["name"], context=ctx)
        finally:
            waiting.pop(id(ctx), None)
