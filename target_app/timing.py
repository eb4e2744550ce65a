"""Where a request's time went, sent back as a W3C Server-Timing header (connbench.contract.SERVER_TIMING).

connect: opening a physical connection on the request's own thread (psycopg connect: TCP, TLS, auth) and
setting its session up; pool: waiting for a pooled connection (Django's psycopg pool checkout;
django-db-connection-pool's QueuePool checkout, less any connect it did inside); db: executing queries
(connection.execute_wrapper) and Django's other round trips (COMMIT, ROLLBACK, the health check); app: the
rest of the request inside Django. conn: "new" when the request opened a physical connection, else "reused".
backend, thread: the backend pid of the connection the request's last query ran on (psycopg's
connection.info.backend_pid, which libpq keeps client-side: no round trip) and the native id of the thread
that ran it; worker: this process; close: whether Django's rule has that connection due to close when the
request ends (read before the response is sent: the close itself happens after, on request_finished).

Django's native pool opens its connections on the pool's own threads, so its requests never show connect:
they wait for the pool (pool), which is what they pay. Through PgBouncer, the app's connection is to
PgBouncer: connect is the app -> PgBouncer login, and a wait for one of PgBouncer's server connections
happens inside the first query, so it shows as db (pgbouncer.csv's cl_waiting and maxwait say how long).
"""

from __future__ import annotations

import contextvars
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db import connection
from django.db.backends.postgresql import base as pg

from connbench import sqlhazards
from connbench.contract import SERVER_TIMING, server_timing_header

if TYPE_CHECKING:
    import psycopg
    from django.http import HttpRequest, HttpResponse


@dataclass
class Times:
    connect: float = 0.0
    pool: float = 0.0
    db: float = 0.0
    new_conn: bool = False
    wrapper: Any = None  # the DatabaseWrapper of the last query (under ASGI, the executor thread's)
    thread: int | None = None
    check: float | None = None  # Django's health check (is_usable), ms: inside db too
    hazards: set[str] = field(default_factory=set)
    examples: dict[str, str] = field(default_factory=dict)  # kind -> the request's first statement of that kind


_EXAMPLED: set[tuple[str, str]] = set()  # (path, kind) whose example this process has sent
_EXAMPLED_MAX = 10_000  # a site with a path per object stops sending examples past this, and never grows


def hazards_of(sql: Any, context: dict[str, Any]) -> frozenset[str]:
    """The statement's session-state hazards: from its text, and a named (server-side) cursor from Django's own
    cursor (QuerySet.iterator() without DISABLE_SERVER_SIDE_CURSORS), never from the SQL psycopg writes."""
    kinds = sqlhazards.classify(sql) if isinstance(sql, str) else frozenset()
    name: Any = getattr(getattr(context.get("cursor"), "cursor", None), "name", None)
    if name:
        kinds |= {"server_side_cursor"}
    return kinds


def first_examples(path: str, times: Times) -> dict[str, str]:
    """The request's examples of kinds this process has not yet sent for this path."""
    out: dict[str, str] = {}
    for kind, sql in times.examples.items():
        if (path, kind) not in _EXAMPLED and len(_EXAMPLED) < _EXAMPLED_MAX:
            _EXAMPLED.add((path, kind))
            out[kind] = sqlhazards.example(sql)
    return out


def backend_pid(wrapper: Any) -> int | None:
    """The backend pid of a DatabaseWrapper's open connection, read client-side; None when there is none."""
    raw = getattr(wrapper, "connection", None)
    try:
        info = getattr(raw, "info", None)  # psycopg 3 (django-db-connection-pool's proxy forwards attributes)
        if info is not None:
            return int(info.backend_pid) or None
        get = getattr(raw, "get_backend_pid", None)  # psycopg2
        return (int(get()) or None) if callable(get) else None
    except Exception:  # noqa: BLE001 - a connection closed under it: no pid, and the app's response stands
        return None


def close_due(wrapper: Any) -> bool | None:
    """Django's close_if_unusable_or_obsolete, read without a round trip: None with no connection open. Errors
    alone do not count: Django then asks the server (is_usable), which this does not."""
    if wrapper is None or getattr(wrapper, "connection", None) is None:
        return None
    try:
        if wrapper.autocommit != wrapper.settings_dict.get("AUTOCOMMIT", True):
            return True
        return wrapper.close_at is not None and time.monotonic() >= wrapper.close_at
    except Exception:  # noqa: BLE001 - a backend that keeps these otherwise: not told, never a failed response
        return None


_current: contextvars.ContextVar[Times | None] = contextvars.ContextVar("connbench_times", default=None)
_PID = os.getpid()  # set again after a fork (gunicorn --preload): os.register_at_fork below
_ORIGINAL: Callable[[Any, dict[str, Any]], psycopg.Connection[Any]] = pg.DatabaseWrapper.get_new_connection
_ORIGINAL_CONNECT: Callable[[Any], None] = pg.DatabaseWrapper.connect


def _after_fork() -> None:
    global _PID
    _PID = os.getpid()
    _EXAMPLED.clear()  # each worker sends its own first examples


os.register_at_fork(after_in_child=_after_fork)


def _get_new_connection(self: pg.DatabaseWrapper, conn_params: dict[str, Any]) -> psycopg.Connection[Any]:
    """Django's PostgreSQL get_new_connection, timed: a connect, or a checkout from Django's own pool."""
    t = _current.get()
    if t is None:  # outside a request (migrations, the pool's own threads)
        return _ORIGINAL(self, conn_params)
    t0 = time.perf_counter()
    try:
        return _ORIGINAL(self, conn_params)
    finally:
        ms = (time.perf_counter() - t0) * 1000.0
        if getattr(self, "pool", None):  # Django 5.1+: its native pool (older Django has none)
            t.pool += ms
        else:
            t.connect += ms
            t.new_conn = True


def _connect(self: pg.DatabaseWrapper) -> None:
    """Django's connect(): get_new_connection (timed above) plus the session's setup (autocommit, time zone,
    role), which belongs to the connect when it opened one and to the checkout when it did not."""
    t = _current.get()
    if t is None:
        return _ORIGINAL_CONNECT(self)
    connect, pool, t0 = t.connect, t.pool, time.perf_counter()
    try:
        return _ORIGINAL_CONNECT(self)
    finally:
        rest = max(0.0, (time.perf_counter() - t0) * 1000.0 - (t.connect - connect) - (t.pool - pool))
        if t.connect > connect:
            t.connect += rest
        else:
            t.pool += rest


def _in_db(original: Callable[..., Any], check: bool = False) -> Callable[..., Any]:
    """A round trip Django makes outside execute_wrapper (COMMIT, ROLLBACK, the health check's SELECT 1)."""
    def timed(self: pg.DatabaseWrapper, *args: Any, **kwargs: Any) -> Any:
        t = _current.get()
        t0 = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            if t is not None:
                ms = (time.perf_counter() - t0) * 1000.0
                t.db += ms
                if check:
                    t.check = (t.check or 0.0) + ms
    return timed


def _checkout(original: Callable[[Any, dict[str, Any]], Any]) -> Callable[[Any, dict[str, Any]], Any]:
    """django-db-connection-pool's get_new_connection: a QueuePool checkout that may connect inside."""
    def timed(self: Any, conn_params: dict[str, Any]) -> Any:
        t = _current.get()
        if t is None:
            return original(self, conn_params)
        before, t0 = t.connect, time.perf_counter()
        try:
            return original(self, conn_params)
        finally:
            t.pool += (time.perf_counter() - t0) * 1000.0 - (t.connect - before)
    return timed


def install() -> None:
    """Patch once per process: Django's PostgreSQL wrapper, and django-db-connection-pool's when installed."""
    if getattr(pg.DatabaseWrapper.get_new_connection, "_connbench", False):
        return
    _get_new_connection._connbench = True  # type: ignore[attr-defined]  # a mark on the function: patched once
    pg.DatabaseWrapper.get_new_connection = _get_new_connection
    pg.DatabaseWrapper.connect = _connect
    for name in ("_commit", "_rollback", "is_usable"):
        setattr(pg.DatabaseWrapper, name, _in_db(getattr(pg.DatabaseWrapper, name), name == "is_usable"))
    try:
        from dj_db_conn_pool.core.mixins.core import DatabasePoolWrapperMixin
    except ImportError:
        return
    DatabasePoolWrapperMixin.get_new_connection = _checkout(DatabasePoolWrapperMixin.get_new_connection)


class ServerTimingMiddleware:
    """Outermost middleware: every response, a failed request's 500 included, says where its time went."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        install()

    def __call__(self, request: HttpRequest) -> HttpResponse:
        times = Times()
        token = _current.set(times)
        t0 = time.perf_counter()

        def query(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
            q0 = time.perf_counter()
            try:
                return execute(sql, params, many, context)
            finally:
                times.db += (time.perf_counter() - q0) * 1000.0
                times.wrapper, times.thread = context.get("connection"), threading.get_native_id()
                for kind in hazards_of(sql, context):
                    times.hazards.add(kind)
                    times.examples.setdefault(kind, sql)

        try:
            with connection.execute_wrapper(query):
                response = self.get_response(request)
        finally:
            _current.reset(token)
        total = (time.perf_counter() - t0) * 1000.0
        app = max(0.0, total - times.connect - times.pool - times.db)
        response[SERVER_TIMING] = server_timing_header(
            times.connect, times.pool, times.db, app, times.new_conn, backend_pid(times.wrapper), _PID,
            times.thread, close_due(times.wrapper), times.hazards,
            first_examples(request.path, times) if times.examples else None, times.check)
        return response
