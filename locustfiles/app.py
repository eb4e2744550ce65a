"""The load: a FastHttpUser hitting the target app's endpoints with a configurable mix.

Configured by the harness through the environment:
  CONNBENCH_TARGETS   comma-separated base URLs, one per dyno; users are spread round-robin
  CONNBENCH_MIX       JSON weights {"health", "read", "write", "slow"} and "slow_ms"
  CONNBENCH_RATE      requests/s per user (constant throughput); empty = as fast as possible
  CONNBENCH_REQUEST_LOG_DIR  where the raw per-request log goes (requestlog.py)
"""

import itertools
import json
import os
import sys
import time

from locust import constant, constant_throughput, events, task
from locust.contrib.fasthttp import FastHttpUser

sys.path.insert(0, os.path.dirname(__file__))
import requestlog  # noqa: E402

requestlog.install()

TARGETS = [t for t in os.environ.get("CONNBENCH_TARGETS", "http://127.0.0.1:8000").split(",") if t]
MIX = json.loads(os.environ.get("CONNBENCH_MIX", '{"read": 1}'))
RATE = os.environ.get("CONNBENCH_RATE", "")
_next_user = itertools.count()


@events.test_start.add_listener
def _mark_start(environment, **_kw):
    started = os.environ.get("CONNBENCH_STARTED_FILE")
    if started and not os.path.exists(started):
        with open(started, "w") as fh:
            fh.write(repr(time.time()))


class AppUser(FastHttpUser):
    host = TARGETS[0]
    wait_time = constant_throughput(float(RATE)) if RATE else constant(0)
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
