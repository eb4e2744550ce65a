"""The load: a FastHttpUser hitting the target app's endpoints with a configurable mix.

Configured by the harness with one environment variable (connbench.contract.LoadConfig): the
dynos' URLs (users spread round-robin), the endpoint mix, the rate per user, the raw log's place.
"""

import itertools
import os
import sys
import time

from locust import constant, constant_throughput, events, task
from locust.contrib.fasthttp import FastHttpUser

sys.path.insert(0, os.path.dirname(__file__))
import requestlog  # noqa: E402

from connbench.contract import LoadConfig  # noqa: E402

LOAD = LoadConfig.from_env()
requestlog.install(LOAD)
TARGETS = LOAD.targets
MIX = LOAD.mix
_next_user = itertools.count()


@events.test_start.add_listener
def _mark_start(environment, **_kw):
    started = LOAD.started_file
    if started and not os.path.exists(started):
        with open(started, "w") as fh:
            fh.write(repr(time.time()))


class AppUser(FastHttpUser):
    host = TARGETS[0]
    wait_time = constant_throughput(LOAD.rate) if LOAD.rate else constant(0)
    # Connection errors are what we measure: never retry them away.
    max_retries = 0
    network_timeout = 60.0
    connection_timeout = 10.0

    def on_start(self):
        self.dyno = next(_next_user) % len(TARGETS)
        self.base = TARGETS[self.dyno]
        self.ctx = {"dyno": self.dyno}

    def _get(self, path, name):
        self.client.get(self.base + path, name=name, context=self.ctx)

    @task(int(MIX.get("health", 0) * 100))
    def health(self):
        self._get("/health", "/health")

    @task(int(MIX.get("read", 0) * 100))
    def read(self):
        self._get("/db/read", "/db/read")

    @task(int(MIX.get("write", 0) * 100))
    def write(self):
        self._get("/db/write", "/db/write")

    @task(int(MIX.get("slow", 0) * 100))
    def slow(self):
        self._get(f"/db/slow?ms={int(MIX.get('slow_ms', 50))}", "/db/slow")
