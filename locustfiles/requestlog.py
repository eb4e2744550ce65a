"""Locust `request` hook: one raw row per request, at full precision, on the unix clock.

Locust's own statistics round response times into buckets; the report's percentiles come
from these rows instead. Each Locust process writes its own file (requests-<pid>.csv); the
harness merges them. Rows are buffered and written in batches to keep the hook cheap.
"""

from __future__ import annotations

import csv
import os
import time

from locust import events

from connbench.contract import (
    DROPPED,
    ERROR_HEADER,
    REQUESTS_COLUMNS,
    SERVER_TIMING,
    TIMING_COLUMNS,
    UNANSWERED,
    LoadConfig,
    parse_server_timing,
)
from connbench.errorclass import classify_response

_FLUSH_EVERY = 2000
_NO_TIMING = ("",) * len(TIMING_COLUMNS)


class RequestLog:
    def __init__(self, directory: str):
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, f"requests-{os.getpid()}.csv")
        self._fh = open(self.path, "w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._fh)
        self._writer.writerow(REQUESTS_COLUMNS)
        self._rows: list[tuple] = []

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
        self._rows.append((repr(intended), repr(start_time), name, repr(latency), repr(response_time), status,
                           error_class, context.get("dyno", ""), *timing))
        if len(self._rows) >= _FLUSH_EVERY:
            self.flush()

    def dropped(self, intended: float, name: str, dyno: int) -> None:
        """A scheduled request not sent (max_in_flight reached): a row of its own, never silently skipped."""
        self._rows.append((repr(intended), repr(intended), name, "", "", 0, DROPPED, dyno, *_NO_TIMING))

    def unanswered(self, ctx: dict) -> None:
        """Sent but not answered by the end of the drain: the times waited so far are lower bounds."""
        now, intended, sent = time.time(), ctx["t_intended"], ctx.get("t_sent", ctx["t_intended"])
        self._rows.append((repr(intended), repr(sent), ctx.get("name", ""), repr((now - intended) * 1000.0),
                           repr((now - sent) * 1000.0), 0, UNANSWERED, ctx.get("dyno", ""), *_NO_TIMING))

    def flush(self) -> None:
        if self._rows:
            self._writer.writerows(self._rows)
            self._rows.clear()
        self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            self.flush()
            self._fh.close()


_log: RequestLog | None = None


def dropped(intended: float, name: str, dyno: int) -> None:
    if _log is not None:
        _log.dropped(intended, name, dyno)


def unanswered(ctx: dict) -> None:
    if _log is not None:
        _log.unanswered(ctx)


def install(load: LoadConfig) -> None:
    @events.test_start.add_listener
    def _mark_start(environment, **_kw):  # the harness's measure window starts from this mark
        started = load.started_file
        if started and not os.path.exists(started):
            with open(started, "w") as fh:
                fh.write(repr(time.time()))

    directory = load.request_log_dir
    if not directory:
        return

    @events.init.add_listener
    def _on_init(environment, **_kw):
        global _log
        # With --processes, the master only aggregates: only processes that send requests log.
        from locust.runners import MasterRunner

        if isinstance(environment.runner, MasterRunner):
            return
        _log = RequestLog(directory)
        environment.events.request.add_listener(_log.on_request)

    @events.test_stop.add_listener
    def _on_stop(**_kw):
        if _log is not None:
            _log.flush()

    @events.quit.add_listener
    def _on_quit(**_kw):
        if _log is not None:
            _log.close()
