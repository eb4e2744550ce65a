"""Locust `request` hook: one raw row per request, at full precision, on the unix clock.

Locust's own statistics round response times into buckets; the report's percentiles come from these
rows instead. One Locust process writes its rows to requests-<pid>.csv. In master/worker mode (the
harness's [generator] workers, Locust's --processes, `connbench worker` on another machine) every worker
sends its rows to the master with Locust's own messaging, with its CPU, and the master writes them all,
each row naming its worker: a remote worker needs no shared disk. Rows are batched to keep the hook cheap.

The configuration travels the same way: the master reads it from the environment (--connbench-load's
default) and Locust hands custom options to every worker when the test starts, before any user exists.
"""

from __future__ import annotations

import json
import logging
import os
import time

import gevent
import gevent.lock
import psutil
from locust import events
from locust.exception import StopUser
from locust.runners import LocalRunner, MasterRunner, WorkerRunner
from masterlog import MasterLog, csv_file

from connbench.contract import (
    DROPPED,
    ERROR_HEADER,
    GENERATOR_ENV,
    LOAD_ENV,
    REQUESTS_COLUMNS,
    ROWS_MESSAGE,
    ROWS_PROTOCOL,
    SERVER_TIMING,
    SHARE_MESSAGE,
    STOP_MESSAGE,
    TIMING_COLUMNS,
    UNANSWERED,
    LoadConfig,
    parse_server_timing,
)
from connbench.errorclass import classify_response

_FLUSH_EVERY = 2000  # rows, or
_SEND_EVERY_S = 1.0  # a worker's batch: also its CPU sample
_NO_TIMING = ("",) * len(TIMING_COLUMNS)
LOCAL = "local"


class RequestLog:
    """Rows of this process's requests: written to a file (one process) or sent to the master (a worker)."""

    def __init__(self, directory: str | None, runner=None):
        self.runner = runner  # a WorkerRunner: rows go to the master
        self.name = LOCAL
        self._fh = self._writer = None
        self.path = None
        if runner is None:
            os.makedirs(directory, exist_ok=True)
            self.path = os.path.join(directory, f"requests-{os.getpid()}.csv")
            self._fh, self._writer = csv_file(self.path, REQUESTS_COLUMNS)
        self._rows: list[tuple] = []
        self._me = psutil.Process()
        self._sending = gevent.lock.Semaphore()

    def on_request(self, request_type, name, response_time, response_length, response=None,
                   context=None, exception=None, start_time=None, url=None, **_kw):
        status = getattr(response, "status_code", 0) or 0
        timing = _NO_TIMING
        if status:
            try:
                timing = parse_server_timing(response.headers.get(SERVER_TIMING))
            except Exception:  # noqa: BLE001 - a response without headers: no timing, never a lost row
                timing = _NO_TIMING
        error_class = ""
        if exception is not None:
            header = body = None
            if response is not None and status:
                try:
                    header = response.headers.get(ERROR_HEADER)
                    # gunicorn's own 500 page (a worker timeout) is told apart by its body
                    body = None if header else response.text
                except Exception:  # noqa: BLE001 - a response without headers: transport failure
                    header = body = None
            error_class = classify_response(status, header, str(exception), body=body)
        context = context or {}
        if context.get("state", {}).get("abandoned"):
            return  # already logged as unanswered when the drain ended
        # open model: latency counts from when the schedule said to send (no coordinated omission)
        intended = context.get("t_intended", start_time)
        latency = (start_time - intended) * 1000.0 + response_time
        self._add((repr(intended), repr(start_time), name, repr(latency), repr(response_time), status,
                   error_class, context.get("dyno", ""), *timing))

    def dropped(self, intended: float, name: str, dyno: int) -> None:
        """A scheduled request not sent (max_in_flight reached): a row of its own, never silently skipped."""
        self._add((repr(intended), repr(intended), name, "", "", 0, DROPPED, dyno, *_NO_TIMING))

    def unanswered(self, ctx: dict) -> None:
        """Sent but not answered by the end of the drain: the times waited so far are lower bounds."""
        now, intended, sent = time.time(), ctx["t_intended"], ctx.get("t_sent", ctx["t_intended"])
        self._add((repr(intended), repr(sent), ctx.get("name", ""), repr((now - intended) * 1000.0),
                   repr((now - sent) * 1000.0), 0, UNANSWERED, ctx.get("dyno", ""), *_NO_TIMING))

    def _add(self, row: tuple) -> None:
        self._rows.append(row)
        if len(self._rows) >= _FLUSH_EVERY:
            try:
                self.flush()
            except Exception as e:  # noqa: BLE001 - kept: the next batch sends them; a request never fails here
                logging.getLogger(__name__).warning("connbench: rows not sent to the master yet: %s", e)

    def flush(self) -> None:
        if self.runner is not None:
            self._send()
            return
        if self._rows:
            self._writer.writerows(r + (LOCAL,) for r in self._rows)
            self._rows.clear()
        self._fh.flush()

    def _send(self, final: bool = False) -> None:
        if self.name == LOCAL:  # a worker: named by you (`connbench worker --name`), else by the master
            self.name = os.environ.get(GENERATOR_ENV, "")
        with self._sending:  # one batch at a time: the final message never overtakes rows still on their way
            rows, self._rows = self._rows, []
            ct = self._me.cpu_times()
            usage = [time.time(), round(ct.user + ct.system, 4), self._me.memory_info().rss]
            try:
                self.runner.send_message(ROWS_MESSAGE, {
                    "v": ROWS_PROTOCOL, "generator": self.name, "pid": os.getpid(), "rows": rows, "usage": usage,
                    "final": final, "share": _share[0] if _share else None})
            except BaseException:  # a failed send, or this greenlet killed while Locust retried it
                self._rows[:0] = rows  # kept, in order, for the next batch
                raise

    def close(self) -> None:
        if self._fh is not None and not self._fh.closed:  # a worker sent its last rows when the test stopped
            self.flush()
            self._fh.close()


_log: RequestLog | None = None
_master: MasterLog | None = None
_load: LoadConfig | None = None
_share: tuple[int, int] | None = None  # a worker's (share, shares) of the schedule, from the master
stopped = False  # a worker the master stopped: a user Locust starts after that sends nothing


def config(environment) -> LoadConfig:
    """The harness's LoadConfig: on a worker, as the master handed it over at the test's start."""
    global _load
    if _load is None:
        raw = getattr(environment.parsed_options, "connbench_load", "") if environment.parsed_options else ""
        _load = LoadConfig.from_dict(json.loads(raw)) if raw else LoadConfig.from_env()
    return _load


def share(environment) -> tuple[int, int]:
    """This process's share of the load: (i, n), i in 0..n-1. A worker without one from the master (it joined
    late) carries none: a user there stops at once instead of sending another's share."""
    if _share is not None:
        return _share
    if isinstance(environment.runner, WorkerRunner):
        raise StopUser()
    return 0, 1


def dropped(intended: float, name: str, dyno: int) -> None:
    if _log is not None:
        _log.dropped(intended, name, dyno)


def unanswered(ctx: dict) -> None:
    if _log is not None:
        _log.unanswered(ctx)


def install() -> None:
    @events.init_command_line_parser.add_listener
    def _options(parser, **_kw):
        parser.add_argument("--connbench-load", default=os.environ.get(LOAD_ENV, ""), include_in_web_ui=False,
                            help="connbench's LoadConfig as JSON (set by the harness; workers get the master's)")

    @events.init.add_listener
    def _on_init(environment, **_kw):
        global _master
        runner = environment.runner
        if isinstance(runner, MasterRunner):
            load = config(environment)
            if load.request_log_dir:
                _master = MasterLog(load.request_log_dir, runner, load.processes)
        elif isinstance(runner, WorkerRunner):
            runner.register_message(SHARE_MESSAGE, _take_share)
            runner.register_message(STOP_MESSAGE, _stop_worker, concurrent=True)

    @events.test_start.add_listener
    def _on_start(environment, **_kw):
        global _log
        load, runner = config(environment), environment.runner
        if not isinstance(runner, WorkerRunner):  # the harness's measure window starts from this mark
            if load.started_file and not os.path.exists(load.started_file):
                with open(load.started_file, "w") as fh:
                    fh.write(repr(time.time()))
        if isinstance(runner, MasterRunner):
            if _master is not None:
                _master.start(load.run_time_s)
            return
        if _log is not None:
            return
        if isinstance(runner, WorkerRunner):
            _log = RequestLog(None, runner)
            gevent.spawn(_send_loop, _log)
        elif isinstance(runner, LocalRunner) and load.request_log_dir:
            _log = RequestLog(load.request_log_dir)
        if _log is not None:
            environment.events.request.add_listener(_log.on_request)

    @events.test_stop.add_listener
    def _on_stop(**_kw):
        if _log is not None:
            _log.flush()  # a worker: before Locust tells the master it stopped, so no row arrives late

    @events.quit.add_listener
    def _on_quit(**_kw):
        if _log is not None:
            _log.close()
        if _master is not None:
            _master.close()


def _take_share(environment, msg, **_kw) -> None:
    global _share
    _share = (int(msg.data["share"]), int(msg.data["shares"]))


def _stop_worker(environment, **_kw) -> None:
    """The master's STOP_MESSAGE: stop the users (they get --stop-timeout), then send the rows, Locust's last
    statistics and a final message, in that order on the one connection to the master."""
    global stopped
    stopped = True
    runner = environment.runner
    runner.start_worker = lambda *_a, **_kw: None  # a "spawn" still on its way after the stop starts no one
    runner.stop()  # fires test_stop: the rows are sent
    runner._send_stats()  # Locust's own final report (a private method: locust is pinned below 3)
    if _log is not None:
        _log._send(final=True)


def _send_loop(log: RequestLog) -> None:
    while True:
        gevent.sleep(_SEND_EVERY_S)
        try:
            log.flush()
        except Exception as e:  # noqa: BLE001 - the rows stay; the next batch tries again
            logging.getLogger(__name__).warning("connbench: rows not sent to the master yet: %s", e)
