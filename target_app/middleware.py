"""Names the error class of a failed request in a header, and never changes the response itself.

Django answers every exception as it would without connbench (a 404 page for Http404, the project's
handler500 for the rest, other middleware included); this only adds X-Connbench-Error to a 5xx that a
view's exception became, so the request log can tell a connection failure from the app's own. And it
makes sure that exception reaches the dyno's log with its traceback, whatever DEBUG and LOGGING say.
"""

from __future__ import annotations

import logging
import sys
import weakref
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from connbench.contract import ERROR_HEADER
from connbench.errorclass import classify_app_exception

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponse

_MARK = "_connbench"
FULL_TRACEBACKS = 10  # per exception type and process; then one line each, so a fault cell's log stays small


class _TracebackFormatter(logging.Formatter):
    """The first FULL_TRACEBACKS tracebacks of each exception type in full, then one line each with a count."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s [connbench] %(levelname)s %(name)s: %(message)s")
        self.seen: Counter[str] = Counter()

    def format(self, record: logging.LogRecord) -> str:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
            self.seen[kind] += 1
            if self.seen[kind] > FULL_TRACEBACKS:
                record.message = record.getMessage()
                record.asctime = self.formatTime(record, self.datefmt)
                return (self.formatMessage(record) + f" [{kind}: {str(exc)[:300]}; the same traceback as the first "
                        f"{FULL_TRACEBACKS} above; {self.seen[kind]} so far]")
        return super().format(record)


def log_errors_to_dyno() -> None:
    """django.request's errors (with exc_info: the traceback) to stderr, which is the dyno's log.

    Beside the project's own handlers, never instead of them: with DEBUG = False Django's default
    logging sends them nowhere but mail_admins, and a 500 in a benchmark would go unexplained.
    """
    logger = logging.getLogger("django.request")
    if any(getattr(h, _MARK, False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.ERROR)
    handler.setFormatter(_TracebackFormatter())
    setattr(handler, _MARK, True)
    logger.addHandler(handler)


class ErrorClassMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        # request -> error class
        self._raised: weakref.WeakKeyDictionary[HttpRequest, str] = weakref.WeakKeyDictionary()
        log_errors_to_dyno()

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        error_class = self._raised.pop(request, None)
        if error_class and response.status_code >= 500 and ERROR_HEADER not in response:
            response[ERROR_HEADER] = error_class
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        self._raised[request] = classify_app_exception(exception)
        return None  # Django's own handling answers, exactly as without connbench
