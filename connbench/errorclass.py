"""Why did a request fail? One short class name per failed request.

Imported by the Django app under test (target_app's middleware: ``classify_exception``) and by the
Locust request hook (``classify_response``), so it uses the standard library only: exception types
are recognised by their module and class names, never by importing psycopg, psycopg_pool or SQLAlchemy.

Every rule below was checked against strings produced by the real components (PostgreSQL 18.6,
psycopg 3.3 / psycopg_pool 3.3, Django 5.2, django-db-connection-pool 1.2.6 + SQLAlchemy 2.1,
PgBouncer 1.18, gunicorn 23, Locust 2.47 / geventhttpclient 2.6); they are kept, with how each was
produced, in tests/fixtures/error_strings.json. Facts that shaped the rules:

- psycopg errors raised while *connecting* have ``sqlstate = None`` (the server's FATAL is only in the
  text: "connection failed: connection to server at ... failed: FATAL:  sorry, too many clients
  already"), so the text matters as much as the SQLSTATE.
- Django wraps psycopg errors: ``django.db.utils.OperationalError`` (no sqlstate) with the psycopg
  error in ``__cause__``. Its native pool timeout is that wrapper around ``psycopg_pool.PoolTimeout``
  ("couldn't get a connection after 0.20 sec"). When the server is full, the native pool only logs the
  server's FATAL: the request sees a pool timeout.
- django-db-connection-pool lets SQLAlchemy's ``sqlalchemy.exc.TimeoutError`` ("QueuePool limit of
  size 1 overflow 0 reached, connection timed out, timeout 0.20 ...") through unwrapped.
- PgBouncer reports every pooler error with SQLSTATE 08P01 (protocol_violation): the text decides.
  A dead server behind PgBouncer, a full server once the pool is logged in, and PgBouncer's own safe
  shutdown (SIGINT) all reach the client as "query_wait_timeout".
- gunicorn never answers 502 or 504. On WORKER TIMEOUT a sync worker gets SIGABRT, the handler raises
  SystemExit inside the view, Django does not catch it (it is not an Exception) and gunicorn answers
  with its own 500 page (no ``Server`` header, body "<h1><p>Internal Server Error</p></h1>"). A worker
  that cannot run the handler (stuck in C code; a gevent worker whose hub is blocked) is SIGKILLed on
  the next check: the client sees the connection closed with no response. geventhttpclient retries an
  idempotent request whose connection closed (up to its pool size + 1 times) before Locust sees it.
"""

from __future__ import annotations

import re

from connbench.contract import (
    APP_EXCEPTION,
    CLIENT_ERROR,
    CLIENT_TIMEOUT,
    CONNECTION_LOST,
    CONNECTION_REFUSED,
    DB_UNAVAILABLE,
    DBCP_POOL_TIMEOUT,
    DJANGO_POOL_TIMEOUT,
    DUPLICATE_CURSOR,
    ERROR_CLASSES,
    GUNICORN_WORKER_TIMEOUT,
    HTTP_5XX,
    INVALID_CURSOR,
    OK,
    PGBOUNCER_MAX_CLIENT_CONN,
    PGBOUNCER_WAIT_TIMEOUT,
    PREPARED_STATEMENT_MISSING,
    TOO_MANY_CLIENTS,
)

_KNOWN = frozenset(ERROR_CLASSES)

MAX_CHAIN_DEPTH = 10

# SQLSTATEs that decide on their own (psycopg sets .sqlstate on errors the server sent after login).
_SQLSTATE = {
    "53300": TOO_MANY_CLIENTS,  # too_many_connections
    "57P01": CONNECTION_LOST,  # admin_shutdown: pg_terminate_backend(), fast shutdown
    "25P03": CONNECTION_LOST,  # idle_in_transaction_session_timeout
    "57P02": CONNECTION_LOST,  # crash_shutdown
    "57P05": CONNECTION_LOST,  # idle_session_timeout
    "08003": CONNECTION_LOST,  # connection_does_not_exist
    "08006": CONNECTION_LOST,  # connection_failure
    "57P03": DB_UNAVAILABLE,  # cannot_connect_now: starting up, shutting down, in recovery
    "34000": INVALID_CURSOR,  # invalid_cursor_name: a held cursor's FETCH on another server connection
    "26000": PREPARED_STATEMENT_MISSING,  # invalid_sql_statement_name: EXECUTE on another server connection
    "42P03": DUPLICATE_CURSOR,  # duplicate_cursor: a cursor another client left on this server connection
}

# psycopg.errors class names for the same SQLSTATEs, for an error that lost its .sqlstate.
_PSYCOPG_NAMES = {
    "TooManyConnections": TOO_MANY_CLIENTS,
    "AdminShutdown": CONNECTION_LOST,
    "IdleInTransactionSessionTimeout": CONNECTION_LOST,
    "CrashShutdown": CONNECTION_LOST,
    "IdleSessionTimeout": CONNECTION_LOST,
    "ConnectionDoesNotExist": CONNECTION_LOST,
    "ConnectionFailure": CONNECTION_LOST,
    "CannotConnectNow": DB_UNAVAILABLE,
    "InvalidCursorName": INVALID_CURSOR,
    "InvalidSqlStatementName": PREPARED_STATEMENT_MISSING,
    "DuplicateCursor": DUPLICATE_CURSOR,
}

# Texts checked before the SQLSTATE: PgBouncer sends all its errors as 08P01.
_PGBOUNCER_TEXT = (
    ("query_wait_timeout", PGBOUNCER_WAIT_TIMEOUT),
    ("no more connections allowed (max_client_conn)", PGBOUNCER_MAX_CLIENT_CONN),
    ("client_idle_timeout", CONNECTION_LOST),  # PgBouncer closed the app's idle connection to it
)

# A connect-phase failure (psycopg prefixes "connection failed:") in which the server hung up during
# the handshake: seen while PostgreSQL reinitialised after a backend crash. The database is not there,
# no established connection was lost.
_CONNECT_PHASE = "connection failed:"
_CLOSED_UNEXPECTEDLY = "server closed the connection unexpectedly"

# Lower-case substrings, first match wins.
_TEXT = (
    ("sorry, too many clients already", TOO_MANY_CLIENTS),
    ("remaining connection slots are reserved", TOO_MANY_CLIENTS),
    ("too many connections for role", TOO_MANY_CLIENTS),  # 53300 too (rolconnlimit); not reproduced
    ("too many connections for database", TOO_MANY_CLIENTS),  # 53300 too (datconnlimit); not reproduced
    ("couldn't get a connection after", DJANGO_POOL_TIMEOUT),  # psycopg_pool.PoolTimeout
    ("queuepool limit of size", DBCP_POOL_TIMEOUT),  # sqlalchemy.exc.TimeoutError
    ("the database system is starting up", DB_UNAVAILABLE),
    ("the database system is shutting down", DB_UNAVAILABLE),
    ("the database system is in recovery mode", DB_UNAVAILABLE),
    ("the database system is not yet accepting connections", DB_UNAVAILABLE),
    ("the database system is not accepting connections", DB_UNAVAILABLE),
    ("connection refused", DB_UNAVAILABLE),  # PostgreSQL or PgBouncer port closed
    ("terminating connection due to", CONNECTION_LOST),  # administrator command, idle-session timeout
    ("terminating connection because of crash", CONNECTION_LOST),
    (_CLOSED_UNEXPECTEDLY, CONNECTION_LOST),
    ("terminating connection due to idle", CONNECTION_LOST),  # idle (in transaction) session timeout
    ("consuming input failed", CONNECTION_LOST),
    ("the connection is closed", CONNECTION_LOST),  # psycopg 3, a connection that failed before
    ("connection already closed", CONNECTION_LOST),  # psycopg2's wording; not reproduced
    ("could not receive data from server", CONNECTION_LOST),  # libpq; not reproduced
)
# Session state that is not on this server connection (the SQLSTATEs above, for a text without one)
_MISSING_STATE = ((re.compile(r'\b(?:cursor|portal) ".*" does not exist'), INVALID_CURSOR),
                  (re.compile(r'\bprepared statement ".*" does not exist'), PREPARED_STATEMENT_MISSING),
                  (re.compile(r'\bcursor ".*" already exists'), DUPLICATE_CURSOR))
# psycopg_pool.TooManyRequests: "the pool 'pool-2' has already 1 requests waiting"
_POOL_QUEUE_FULL = re.compile(r"has already \d+ requests waiting")

# gunicorn's own error page (gunicorn.util.write_error), which Django never produces.
_GUNICORN_ERROR_PAGE = "<h1><p>Internal Server Error</p></h1>"

# Client-side transport failures (status 0): lower-case substrings of str(exception).
_REFUSED = ("connection refused", "errno 111", "econnrefused")
_CLOSED = (
    "connection closed",  # geventhttpclient HTTPConnectionClosed('connection closed.')
    "connection reset by peer",  # not reproduced: a killed worker with unread request bytes sends RST
    "errno 104",
    "remote end closed connection",  # http.client / requests (HttpUser); not reproduced
    "remotedisconnected",
    "broken pipe",
)
_TIMEOUT = ("timed out", "timeout")


def _names(exc: BaseException) -> list[tuple[str, str]]:
    """(module, class name) of the exception's class and its bases."""
    out = []
    for cls in type(exc).__mro__:
        if cls is BaseException or cls is object:
            break
        out.append((getattr(cls, "__module__", "") or "", getattr(cls, "__name__", "") or ""))
    return out


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not break error handling
        return ""


def _by_type(exc: BaseException) -> str | None:
    for module, name in _names(exc):
        if module.startswith("psycopg_pool") and name in ("PoolTimeout", "TooManyRequests"):
            return DJANGO_POOL_TIMEOUT
        if module.startswith("sqlalchemy") and name == "TimeoutError":
            return DBCP_POOL_TIMEOUT
        if module.startswith("psycopg") and name in _PSYCOPG_NAMES:
            return _PSYCOPG_NAMES[name]
    return None


def _by_text(message: str, sqlstate: str | None) -> str | None:
    text = message.lower()
    for needle, cls in _PGBOUNCER_TEXT:
        if needle in text:
            return cls
    if sqlstate and sqlstate.upper() in _SQLSTATE:
        return _SQLSTATE[sqlstate.upper()]
    if _CONNECT_PHASE in text and _CLOSED_UNEXPECTEDLY in text:
        return DB_UNAVAILABLE
    for needle, cls in _TEXT:
        if needle in text:
            return cls
    if _POOL_QUEUE_FULL.search(text):
        return DJANGO_POOL_TIMEOUT
    for pattern, cls in _MISSING_STATE:
        if pattern.search(text):
            return cls
    return None


def _classify_one(exc: BaseException) -> str | None:
    found = _by_type(exc)
    if found:
        return found
    sqlstate = getattr(exc, "sqlstate", None)
    return _by_text(_message(exc), sqlstate if isinstance(sqlstate, str) else None)


def exception_chain(exc: BaseException, max_depth: int = MAX_CHAIN_DEPTH) -> list[BaseException]:
    """exc, then what caused it: ``__cause__`` when set, else ``__context__``; bounded, cycle-safe."""
    chain: list[BaseException] = []
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and len(chain) < max_depth and id(node) not in seen:
        seen.add(id(node))
        chain.append(node)
        node = node.__cause__ if node.__cause__ is not None else node.__context__
    return chain


# The database and connection layers: exceptions from these modules (or wrapping one) are the harness's to
# classify. Everything else (Http404, PermissionDenied, a bug in a view) is the app's own business.
_DB_MODULES = ("psycopg", "psycopg2", "psycopg_pool", "django.db", "sqlalchemy", "dj_db_conn_pool")


def is_database_exception(exc: BaseException | None) -> bool:
    """Does the exception, or anything in its chain, come from the database or connection layers?"""
    if exc is None:
        return False
    return any(module == m or module.startswith(m + ".") for link in exception_chain(exc)
               for module, _ in _names(link) for m in _DB_MODULES)


def classify_app_exception(exc: BaseException | None) -> str:
    """Class of an exception a view raised: a database class, else APP_EXCEPTION (the app's own failure)."""
    if exc is None:
        return OK
    return classify_exception(exc) if is_database_exception(exc) else APP_EXCEPTION


def classify_exception(exc: BaseException | None) -> str:
    """Class of an exception seen inside the app; HTTP_5XX when nothing in its chain is recognised.

    The outermost recognised link wins: Django's OperationalError text already names the failure in
    most cases, and its ``__cause__`` (the psycopg error, with ``sqlstate`` when the server sent one)
    decides otherwise.
    """
    if exc is None:
        return OK
    for link in exception_chain(exc):
        found = _classify_one(link)
        if found:
            return found
    return HTTP_5XX


def classify_message(message: str | None, sqlstate: str | None = None) -> str:
    """Class from an error text (and SQLSTATE when known); HTTP_5XX when nothing matches."""
    return _by_text(message or "", sqlstate) or HTTP_5XX


def is_gunicorn_error_page(body: str | bytes | None) -> bool:
    """True for gunicorn's own error page: in a Django app, a worker killed by its timeout."""
    if not body:
        return False
    if isinstance(body, bytes | bytearray):
        body = bytes(body[:2000]).decode("latin-1")
    return _GUNICORN_ERROR_PAGE in body


def classify_response(
    status: int | None,
    header_class: str | None,
    exception_text: str | None,
    body: str | bytes | None = None,
) -> str:
    """Class of a request as the load generator saw it.

    ``header_class`` is the app's own verdict (``X-Connbench-Error``) and wins when it names a known
    class. Without a status (0 or None) the request failed in transport: refused, closed with no
    response (a worker killed by gunicorn's timeout), or timed out on the client. A 5xx without the
    header is HTTP_5XX unless ``body`` is given and is gunicorn's own error page: gunicorn answers a
    timed-out sync worker with a plain 500 of its own, never 502/504 (those come from a proxy).
    """
    if header_class:
        cls = header_class.strip()
        if cls in _KNOWN:
            return cls
    text = (exception_text or "").lower()
    if not status:
        if any(s in text for s in _REFUSED):
            return CONNECTION_REFUSED
        if any(s in text for s in _CLOSED):
            return GUNICORN_WORKER_TIMEOUT
        if any(s in text for s in _TIMEOUT):
            return CLIENT_TIMEOUT
        return CLIENT_ERROR
    if status >= 500:
        if status == 500 and is_gunicorn_error_page(body):
            return GUNICORN_WORKER_TIMEOUT
        return HTTP_5XX
    if status >= 400 or exception_text:
        return CLIENT_ERROR
    return OK
