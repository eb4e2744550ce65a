"""The Locust master's side of connbench's request log: every worker's rows and CPU into files, each worker's
share of the schedule, what happens to the workers (GENERATOR_EVENTS_FILE), and the end of the run.

The workers are the ones ready when the test starts, numbered 0..N-1 in Locust's order: they, and only they,
carry the load; Locust's own worker index only ever grows (a worker that reconnects gets a new one), so it
cannot number shares. A worker lost mid-test is an event; the harness decides what it means for the cell.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from typing import TYPE_CHECKING, Any, TextIO

import gevent
from locust.rpc import Message
from locust.runners import STATE_MISSING

from connbench.contract import (
    GENERATOR_BROKEN,
    GENERATOR_END,
    GENERATOR_EVENTS_FILE,
    GENERATOR_LOST,
    GENERATORS_COLUMNS,
    GENERATORS_FILE,
    REQUESTS_COLUMNS,
    ROWS_MESSAGE,
    ROWS_PROTOCOL,
    SHARE_MESSAGE,
    STOP_MESSAGE,
)
from connbench.locustfiles.locust_internals import freeze_users

if TYPE_CHECKING:
    from _csv import Writer

    from locust.env import Environment
    from locust.runners import MasterRunner

FINAL_GRACE_S = 15.0  # after the workers' stop timeout: how long the master waits for their last rows
SILENT_S = 10.0  # a worker sends every second: one silent this long after the start is not logging
logger = logging.getLogger(__name__)


def csv_file(path: str, header: tuple[str, ...]) -> tuple[TextIO, Writer]:
    fh = open(path, "w", newline="", encoding="utf-8")
    writer = csv.writer(fh)
    writer.writerow(header)
    fh.flush()  # a header at once: a master killed before any row leaves a file that reads as empty
    return fh, writer


class MasterLog:
    def __init__(self, directory: str, runner: MasterRunner, expected: int) -> None:
        os.makedirs(directory, exist_ok=True)
        self.runner, self.expected = runner, expected
        self._req = csv_file(os.path.join(directory, "requests-master.csv"), REQUESTS_COLUMNS)
        self._gen = csv_file(os.path.join(directory, GENERATORS_FILE), GENERATORS_COLUMNS)
        self._events = csv_file(os.path.join(directory, GENERATOR_EVENTS_FILE), ("t", "kind", "detail"))
        self.workers: list[str] = []  # Locust node ids, in share order, fixed when the test starts
        self.names: dict[str, str] = {}
        self.lost: set[str] = set()
        self.final: set[str] = set()  # workers whose rows and Locust's last statistics are all in
        self.bad: set[str] = set()
        self.heard: set[str] = set()
        self.started = 0.0
        self.active = False  # from the test's start to the run time's end: a worker gone then is lost
        self.ramp: gevent.Greenlet | None = None
        runner.register_message(ROWS_MESSAGE, self.on_rows)

    def event(self, kind: str, detail: str) -> None:
        fh, writer = self._events
        if not fh.closed:
            writer.writerow((repr(time.time()), kind, detail))
            fh.flush()

    def start(self, run_time_s: float | None) -> None:
        """The test starts: number the ready workers, hand each its share, watch them, end after the run time."""
        ready = sorted(self.runner.clients.ready, key=lambda c: self.runner.get_worker_index(c.id))
        self.workers = [c.id for c in ready]
        if len(self.workers) != self.expected:
            self.event(GENERATOR_BROKEN, f"{len(self.workers)} Locust workers joined, the scenario expects "
                                         f"{self.expected}: stop the extra `connbench worker`")
        for share, node in enumerate(self.workers):
            self.runner.server.send_to_client(Message(SHARE_MESSAGE, {"share": share, "shares": len(self.workers)},
                                                      node))
        self.active, self.started = True, time.monotonic()
        self.ramp = gevent.getcurrent()  # Locust's runner.start fires test_start, then ramps users up in it
        # Locust redistributes users when a worker joins, quits or is dropped after going missing: a late joiner
        # would take users without a share, a lost worker's users would reappear elsewhere unannounced, and a
        # spawn could follow the stop. The users stay where the test started them; a loss is an event.
        freeze_users(self.runner, self._no_rebalance)
        if self.runner.environment.shape_class is not None:
            self.event(GENERATOR_BROKEN, "a LoadTestShape in your locustfile: with [generator] workers the load "
                                         "each worker carries is fixed at the start; use one Locust process")
        gevent.spawn(self._watch)
        if run_time_s:
            gevent.spawn(self.end_after, run_time_s)

    def _no_rebalance(self, *_a: Any, **_kw: Any) -> None:
        logger.info("connbench: users are not redistributed after the start (a lost worker's load stays lost)")

    def _name(self, node: str, wanted: str | None = None) -> str:
        if node not in self.names:
            name = wanted or f"w{self.workers.index(node)}"
            if name in self.names.values():  # two workers given one name: told apart, never merged
                name = f"{name}#{self.workers.index(node)}"
            self.names[node] = name
        return self.names[node]

    def on_rows(self, environment: Environment, msg: Message, **_kw: Any) -> None:
        data, node = msg.data, msg.node_id
        if self._req[0].closed:
            return
        if node not in self.workers:  # joined after the start: it gets no users, so it should send no rows
            if data.get("rows") and self.active and node not in self.bad:
                self.bad.add(node)
                self.event(GENERATOR_BROKEN, "a Locust worker that joined after the start sent requests")
            return
        name = self._name(node, str(data.get("generator") or "") or None)
        width = len(REQUESTS_COLUMNS) - 1
        self.heard.add(node)
        if data.get("share") != self.workers.index(node):
            if node not in self.bad:
                self.bad.add(node)
                self.event(GENERATOR_BROKEN, f"{name} did not get its share of the load before its users "
                                             "started: its schedule would overlap another's")
            return
        if data.get("v") != ROWS_PROTOCOL or any(len(row) != width for row in data["rows"]):
            if node not in self.bad:
                self.bad.add(node)
                self.event(GENERATOR_BROKEN, f"{name} sent rows of another shape (protocol {data.get('v')!r}, "
                                             f"this master's {ROWS_PROTOCOL}): install the same connbench there")
            return
        fh, writer = self._req
        writer.writerows([*row, name] for row in data["rows"])
        fh.flush()
        t, cpu, rss = data["usage"]
        fh, writer = self._gen
        writer.writerow((repr(t), name, data["pid"], cpu, rss, repr(time.time())))
        fh.flush()
        if data.get("final"):
            self.final.add(node)

    def end_after(self, seconds: float) -> None:
        """The run time's end, without Locust's race: its headless master ends a run by sending the workers
        "quit" and waiting 0.5 s, while a worker may take its whole --stop-timeout to stop (the open model
        drains), and what it sends after is lost: its rows and Locust's last statistics both. So every worker
        still there stops its users and sends its rows, Locust's last statistics and then a final message, on its
        one connection, and the master quits when every final message is in."""
        gevent.sleep(seconds)
        self.active = False
        if self.ramp is not None and not self.ramp.dead:
            self.ramp.kill(block=True)  # a ramp longer than the run: no "spawn" may follow the stop
        present = [n for n in self.workers
                   if (c := self.runner.clients.get(n)) is not None and c.state != STATE_MISSING]
        for node in present:  # one lost and back again too: its last rows count
            self.runner.server.send_to_client(Message(STOP_MESSAGE, None, node))
        deadline = time.monotonic() + (self.runner.environment.stop_timeout or 0) + FINAL_GRACE_S
        while not set(present) <= self.final and time.monotonic() < deadline:
            gevent.sleep(0.1)
            for node in [n for n in present if n not in self.final and self._absent(n)]:
                present.remove(node)  # died at the end: lost, as mid-test (on_worker_lost decides)
                self._lose(node)
        missing = [self._name(n) for n in present if n not in self.final]
        if missing:
            self.event(GENERATOR_BROKEN, f"no last rows from {', '.join(missing)} within its stop timeout + "
                                         f"{FINAL_GRACE_S:g} s: the cell's rows are incomplete")
        self.event(GENERATOR_END, "complete" if not missing else "incomplete")
        self.runner.quit()

    def _watch(self) -> None:
        """A worker that stops answering heartbeats (killed, its machine gone) or quits while the test runs."""
        while True:
            gevent.sleep(0.25)
            for node in self.workers:
                if self.active and self._gone(node):
                    self._lose(node)
            silent = [n for n in self.workers if n not in self.heard | self.lost | self.bad]
            if self.active and silent and time.monotonic() - self.started > SILENT_S:
                self.bad.update(silent)  # its request hook never started: a different connbench, an error
                self.event(GENERATOR_BROKEN, f"{', '.join(self._name(n) for n in silent)} sent nothing in "
                                             f"{SILENT_S:g} s of load (see its log)")

    def _absent(self, node: str) -> bool:
        client = self.runner.clients.get(node)
        return client is None or client.state == STATE_MISSING

    def _gone(self, node: str) -> bool:
        return node not in self.lost and self._absent(node)

    def _lose(self, node: str) -> None:
        self.lost.add(node)
        why = "quit" if self.runner.clients.get(node) is None else "stopped sending heartbeats"
        self.event(GENERATOR_LOST, f"{self._name(node)} {why}")

    def close(self) -> None:
        for fh, _ in (self._req, self._gen, self._events):
            fh.close()
