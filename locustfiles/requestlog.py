"""Locust `request` hook: one raw row per request, at full precision, on the unix clock.

Locust's own statistics round response times into buckets; the report's percentiles come from these
rows instead. One Locust process writes its rows to requests-<pid>.csv. In master/worker mode (the
harness's [generator] workers, Locust's --processes, `connbench worker` on another machine) every worker
sends its rows to the master with Locust's own messaging, with its CPU, and the master writes them all,
each row naming its worker: a remote worker needs no shared disk. Rows are batched to keep the hook cheap.

The configuration travels the same way: the master reads it from the environment (--connbench-load's
default) and Locust hands custom options to every worker when the test starts, before any user exists.

Like Locust's own CsvRequestLogger, the log is an object with its state on the instance, registered on the
Environment (register); install() makes one per Locust process and hooks it into Locust's events.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import gevent
import gevent.lock
import psutil
from locust import events
from locust.exception import StopUser
from locust.runners import LocalRunner, MasterRunner, WorkerRunner

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
from connbench.locustfiles.locust_internals import send_final_stats, start_no_more_users
from connbench.locustfiles.masterlog import MasterLog, csv_file

if TYPE_CHECKING:
    from locust.argument_parser import LocustArgumentParser
    from locust.env import Environment
    from locust.rpc import Message

_FLUSH_EVERY = 2000  # rows, or
_SEND_EVERY_S = 1.0  # a worker's batch: also its CPU sample
_NO_TIMING = ("",) * len(TIMING_COLUMNS)
LOCAL = "local"
Row = tuple[str | int, ...]  # a requests.csv row, less its generator column (the sink adds it)


class FileSink:
    """One Locust process: its rows into requests-<pid>.csv."""

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, f"requests-{os.getpid()}.csv")
        self._fh, self._writer = csv_file(self.path, REQUESTS_COLUMNS)

    def write(self, rows: list[Row], final: bool = False) -> None:
        self._writer.writerows(r + (LOCAL,) for r in rows)
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


class MasterSink:
    """A Locust worker: its rows, with its CPU, sent to the master in batches (the master writes them)."""

    def __init__(self, runner: WorkerRunner, share: Callable[[], tuple[int, int] | None]) -> None:
        self.runner, self._share = runner, share
        self.name = ""  # named by you (`connbench worker --name`), else by the master
        self._me = psutil.Process()

    def write(self, rows: list[Row], final: bool = False) -> None:
        self.name = self.name or os.environ.get(GENERATOR_ENV, "")
        ct = self._me.cpu_times()
        usage = [time.time(), round(ct.user + ct.system, 4), self._me.memory_info().rss]
        share = self._share()
        self.runner.send_message(ROWS_MESSAGE, {
            "v": ROWS_PROTOCOL, "generator": self.name, "pid": os.getpid(), "rows": rows, "usage": usage,
            "final": final, "share": share[0] if share else None})

    def close(self) -> None:
        pass  # a worker sent its last rows when the master stopped it


class RequestLog:
    """connbench's raw request log in one Locust process: rows buffered, then written or sent by its sink."""

    def __init__(self, sink: FileSink | MasterSink | None = None) -> None:
        self.sink = sink  # set when the test starts (register); None: this process logs nothing
        self.load: LoadConfig | None = None
        self.share_of_load: tuple[int, int] | None = None  # a worker's (share, shares), from the master
        self.stopped = False  # a worker the master stopped: a user Locust starts after that sends nothing
        self.master: MasterLog | None = None
        self._rows: list[Row] = []
        self._sending = gevent.lock.Semaphore()
        self._closed = False

    @property
    def path(self) -> str | None:
        return self.sink.path if isinstance(self.sink, FileSink) else None

    # -- rows ---------------------------------------------------------------------------------
    def on_request(self, request_type: str, name: str, response_time: float, response_length: int,
                   response: Any = None, context: dict[str, Any] | None = None,
                   exception: BaseException | None = None, start_time: float | None = None, url: str | None = None,
                   **_kw: Any) -> None:
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
        start = cast(float, start_time)  # Locust always passes it
        intended = context.get("t_intended", start)
        latency = (start - intended) * 1000.0 + response_time
        self._add((repr(intended), repr(start), name, repr(latency), repr(response_time), status,
                   error_class, context.get("dyno", ""), *timing))

    def dropped(self, intended: float, name: str, dyno: int) -> None:
        """A scheduled request not sent (max_in_flight reached): a row of its own, never silently skipped."""
        self._add((repr(intended), repr(intended), name, "", "", 0, DROPPED, dyno, *_NO_TIMING))

    def unanswered(self, ctx: dict[str, Any]) -> None:
        """Sent but not answered by the end of the drain: the times waited so far are lower bounds."""
        now, intended, sent = time.time(), ctx["t_intended"], ctx.get("t_sent", ctx["t_intended"])
        self._add((repr(intended), repr(sent), ctx.get("name", ""), repr((now - intended) * 1000.0),
                   repr((now - sent) * 1000.0), 0, UNANSWERED, ctx.get("dyno", ""), *_NO_TIMING))

    def _add(self, row: Row) -> None:
        self._rows.append(row)
        if len(self._rows) >= _FLUSH_EVERY:
            try:
                self.flush()
            except Exception as e:  # noqa: BLE001 - kept: the next batch sends them; a request never fails here
                logging.getLogger(__name__).warning("connbench: rows not sent to the master yet: %s", e)

    def flush(self, final: bool = False) -> None:
        if self.sink is None:
            return
        with self._sending:  # one batch at a time: the final message never overtakes rows still on their way
            rows, self._rows = self._rows, []
            try:
                self.sink.write(rows, final)
            except BaseException:  # a failed send, or this greenlet killed while Locust retried it
                self._rows[:0] = rows  # kept, in order, for the next batch
                raise

    def close(self) -> None:
        if self.sink is not None and not self._closed:
            self._closed = True
            if isinstance(self.sink, FileSink):
                self.flush()
            self.sink.close()
        if self.master is not None:
            self.master.close()

    # -- the configuration and this process's share of it ----------------------------------------
    def config(self, environment: Environment) -> LoadConfig:
        """The harness's LoadConfig: on a worker, as the master handed it over at the test's start."""
        if self.load is None:
            opts = environment.parsed_options
            raw = getattr(opts, "connbench_load", "") if opts else ""
            self.load = LoadConfig.from_dict(json.loads(raw)) if raw else LoadConfig.from_env()
        return self.load

    def share(self, environment: Environment) -> tuple[int, int]:
        """This process's share of the load: (i, n), i in 0..n-1. A worker without one from the master (it
        joined late) carries none: a user there stops at once instead of sending another's share."""
        if self.share_of_load is not None:
            return self.share_of_load
        if isinstance(environment.runner, WorkerRunner):
            raise StopUser()
        return 0, 1

    # -- Locust's events ------------------------------------------------------------------------
    def register(self, environment: Environment) -> None:
        """Hook into an Environment whose runner exists (Locust's init event)."""
        runner = environment.runner
        if isinstance(runner, MasterRunner):
            load = self.config(environment)
            if load.request_log_dir:
                self.master = MasterLog(load.request_log_dir, runner, load.processes)
        elif isinstance(runner, WorkerRunner):
            runner.register_message(SHARE_MESSAGE, self._take_share)
            runner.register_message(STOP_MESSAGE, self._stop_worker, concurrent=True)
        environment.events.test_start.add_listener(self._on_start)
        environment.events.test_stop.add_listener(self._on_stop)
        environment.events.quit.add_listener(self._on_quit)

    def _on_start(self, environment: Environment, **_kw: Any) -> None:
        load, runner = self.config(environment), environment.runner
        if not isinstance(runner, WorkerRunner):  # the harness's measure window starts from this mark
            if load.started_file and not os.path.exists(load.started_file):
                with open(load.started_file, "w") as fh:
                    fh.write(repr(time.time()))
        if isinstance(runner, MasterRunner):
            if self.master is not None:
                self.master.start(load.run_time_s)
            return
        if self.sink is not None:
            return
        if isinstance(runner, WorkerRunner):
            self.sink = MasterSink(runner, lambda: self.share_of_load)
            gevent.spawn(self._send_loop)
        elif isinstance(runner, LocalRunner) and load.request_log_dir:
            self.sink = FileSink(load.request_log_dir)
        if self.sink is not None:
            environment.events.request.add_listener(self.on_request)

    def _on_stop(self, **_kw: Any) -> None:
        self.flush()  # a worker: before Locust tells the master it stopped, so no row arrives late

    def _on_quit(self, **_kw: Any) -> None:
        self.close()

    def _take_share(self, environment: Environment, msg: Message, **_kw: Any) -> None:
        self.share_of_load = (int(msg.data["share"]), int(msg.data["shares"]))

    def _stop_worker(self, environment: Environment, **_kw: Any) -> None:
        """The master's STOP_MESSAGE: stop the users (they get --stop-timeout), then send the rows, Locust's last
        statistics and a final message, in that order on the one connection to the master."""
        self.stopped = True
        runner = cast(WorkerRunner, environment.runner)  # registered on a worker only (register)
        start_no_more_users(runner)
        runner.stop()  # fires test_stop: the rows are sent
        send_final_stats(runner)
        self.flush(final=True)

    def _send_loop(self) -> None:
        while True:
            gevent.sleep(_SEND_EVERY_S)
            try:
                self.flush()
            except Exception as e:  # noqa: BLE001 - the rows stay; the next batch tries again
                logging.getLogger(__name__).warning("connbench: rows not sent to the master yet: %s", e)


def add_options(parser: LocustArgumentParser, **_kw: Any) -> None:
    parser.add_argument("--connbench-load", default=os.environ.get(LOAD_ENV, ""), include_in_web_ui=False,
                        help="connbench's LoadConfig as JSON (set by the harness; workers get the master's)")


def install() -> RequestLog:
    """One request log for this Locust process, registered when Locust creates its Environment."""
    log = RequestLog()
    events.init_command_line_parser.add_listener(add_options)
    events.init.add_listener(lambda environment, **_kw: log.register(environment))
    return log
