"""Error classification against strings captured from the real components.

tests/fixtures/error_strings.json holds every captured error (component, version, how it was
produced, exception type, SQLSTATE, message, and for exceptions the __cause__/__context__ chain;
for client-side rows the status, X-Connbench-Error header and 5xx body). Its "how_to_recapture" key
says how to produce them again; re-capture when a component's version changes and keep the
expected_class of each row unless the component really changed its behaviour.

Exceptions are rebuilt with local classes that carry the real module and class names and raised
the way the originals were (``raise ... from ...`` for a cause), so no database driver is imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from connbench import errorclass as ec
from connbench.contract import DROPPED, ERROR_CLASSES, ERROR_HEADER, UNANSWERED

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "error_strings.json"
DOC = json.loads(FIXTURE.read_text(encoding="utf-8"))
ENTRIES = DOC["entries"]
EXC_ROWS = [e for e in ENTRIES if e["kind"] == "exception"]
RESP_ROWS = [e for e in ENTRIES if e["kind"] == "response"]

_classes: dict[str, type] = {}


def fake_class(qualified: str) -> type:
    """A class named like the real one (module and name), e.g. psycopg.errors.AdminShutdown."""
    if qualified not in _classes:
        module, _, name = qualified.rpartition(".")
        base = TimeoutError if qualified == "builtins.TimeoutError" else Exception
        _classes[qualified] = type(name, (base,), {"__module__": module or "builtins"})
    return _classes[qualified]


def make(exception_type: str, message: str, sqlstate: str | None = None) -> BaseException:
    exc = fake_class(exception_type)(message)
    if sqlstate is not None:
        exc.sqlstate = sqlstate
    return exc


def raise_chain(links: list[dict]) -> BaseException:
    """links go outer to inner; each link's "_how" says how the next (inner) one is attached to it.

    The innermost is raised first, then each outer one while handling it (``raise ... from`` for a
    cause), the way the originals were raised. Returns the outermost, as caught.
    """
    caught: BaseException | None = None
    for link in reversed(links):
        exc = make(link["exception_type"], link["message"], link["sqlstate"])
        try:
            if caught is None:
                raise exc
            try:
                raise caught
            except BaseException as inner:
                if link["_how"] == "cause":
                    raise exc from inner
                raise exc  # noqa: B904 - an implicit __context__ is what is being rebuilt
        except BaseException as e:  # noqa: BLE001
            caught = e
    assert caught is not None
    return caught


def rebuild(entry: dict) -> BaseException:
    outer = {k: entry[k] for k in ("exception_type", "sqlstate", "message")}
    chain = [outer, *entry.get("chain", [])]
    links = [{**node, "_how": chain[i + 1]["link"] if i + 1 < len(chain) else None} for i, node in enumerate(chain)]
    return raise_chain(links)


# ---- the captured strings -------------------------------------------------------------------------


def test_fixture_is_well_formed():
    assert DOC["how_to_recapture"]
    ids = [e["id"] for e in ENTRIES]
    assert len(ids) == len(set(ids))
    for e in ENTRIES:
        assert {"source", "how", "exception_type", "sqlstate", "message", "expected_class"} <= e.keys(), e["id"]
        assert e["expected_class"] in ERROR_CLASSES, e["id"]
    # every class the harness can meet from real components has at least one real sample
    seen = {e["expected_class"] for e in ENTRIES}
    # dropped and unanswered are the open-model dispatcher's own rows, never classified from an error;
    # app_exception is the middleware's verdict on anything outside the database layers (test_middleware.py)
    assert seen >= set(ERROR_CLASSES) - {ec.CLIENT_ERROR, DROPPED, UNANSWERED, ec.APP_EXCEPTION}


@pytest.mark.parametrize("entry", EXC_ROWS, ids=[e["id"] for e in EXC_ROWS])
def test_captured_exception_chain(entry):
    exc = rebuild(entry)
    assert type(exc).__name__ == entry["exception_type"].rpartition(".")[2]
    assert len(ec.exception_chain(exc)) == 1 + len(entry.get("chain", []))
    assert ec.classify_exception(exc) == entry["expected_class"]


@pytest.mark.parametrize("entry", EXC_ROWS, ids=[e["id"] for e in EXC_ROWS])
def test_captured_message_alone(entry):
    """The text (plus SQLSTATE when psycopg had one) is enough on its own, for every captured error."""
    assert ec.classify_message(entry["message"], entry["sqlstate"]) == entry["expected_class"]


@pytest.mark.parametrize("entry", RESP_ROWS, ids=[e["id"] for e in RESP_ROWS])
def test_captured_response(entry):
    got = ec.classify_response(entry["status"], entry["header_class"], entry["message"], entry.get("body"))
    assert got == entry["expected_class"]


def test_gunicorn_timeout_page_without_body_is_plain_5xx():
    row = next(e for e in RESP_ROWS if e["id"] == "client_gunicorn_worker_timeout_500")
    assert ec.classify_response(row["status"], None, row["message"]) == ec.HTTP_5XX
    assert ec.classify_response(500, None, row["message"], row["body"].encode()) == ec.GUNICORN_WORKER_TIMEOUT
    assert ec.is_gunicorn_error_page(row["body"])
    django_page = next(e for e in RESP_ROWS if e["id"] == "client_django_500")["body"]
    assert not ec.is_gunicorn_error_page(django_page)


# ---- chain walking --------------------------------------------------------------------------------


class OperationalError(Exception):
    """Named like django.db.utils.OperationalError / psycopg.OperationalError."""

    def __init__(self, message: str = "", sqlstate: str | None = None):
        super().__init__(message)
        self.sqlstate = sqlstate


def wrap(inner: BaseException, outer: BaseException, *, cause: bool = True) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as e:
            if cause:
                raise outer from e
            raise outer  # noqa: B904
    except BaseException as e:  # noqa: BLE001
        return e


def test_sqlstate_of_the_cause_decides_when_the_wrapper_text_says_nothing():
    exc = wrap(OperationalError("boom", sqlstate="53300"), OperationalError("boom"))
    assert ec.classify_exception(exc) == ec.TOO_MANY_CLIENTS
    exc = wrap(OperationalError("x", sqlstate="57P01"), OperationalError("x"))
    assert ec.classify_exception(exc) == ec.CONNECTION_LOST
    exc = wrap(OperationalError("x", sqlstate="57P03"), OperationalError("x"))
    assert ec.classify_exception(exc) == ec.DB_UNAVAILABLE


def test_implicit_context_is_walked():
    exc = wrap(make("psycopg_pool.PoolTimeout", "whatever"), RuntimeError("rendering the error page"), cause=False)
    assert exc.__cause__ is None and exc.__context__ is not None
    assert ec.classify_exception(exc) == ec.DJANGO_POOL_TIMEOUT


def test_cause_is_preferred_over_context():
    cause = OperationalError("terminating connection due to administrator command", "57P01")
    context = OperationalError("sorry, too many clients already")
    try:
        try:
            raise context
        except OperationalError:
            raise OperationalError("wrapped") from cause  # noqa: B904
    except OperationalError as e:
        exc = e
    assert exc.__context__ is context
    assert ec.classify_exception(exc) == ec.CONNECTION_LOST


def test_outermost_recognised_link_wins():
    inner = OperationalError("sorry, too many clients already")
    outer = make("psycopg_pool.PoolTimeout", "couldn't get a connection after 5.00 sec")
    assert ec.classify_exception(wrap(inner, outer)) == ec.DJANGO_POOL_TIMEOUT


def test_depth_is_bounded():
    exc: BaseException = OperationalError("sorry, too many clients already")
    for i in range(ec.MAX_CHAIN_DEPTH):
        exc = wrap(exc, RuntimeError(f"layer {i}"))
    assert len(ec.exception_chain(exc)) == ec.MAX_CHAIN_DEPTH
    assert ec.classify_exception(exc) == ec.HTTP_5XX
    assert ec.classify_exception(exc.__cause__) == ec.TOO_MANY_CLIENTS


def test_cycle_terminates():
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__cause__, b.__cause__ = b, a
    assert ec.exception_chain(a) == [a, b]
    assert ec.classify_exception(a) == ec.HTTP_5XX


def test_type_names_decide_without_text_or_sqlstate():
    assert ec.classify_exception(make("psycopg_pool.PoolTimeout", "")) == ec.DJANGO_POOL_TIMEOUT
    assert ec.classify_exception(make("psycopg_pool.TooManyRequests", "")) == ec.DJANGO_POOL_TIMEOUT
    assert ec.classify_exception(make("sqlalchemy.exc.TimeoutError", "")) == ec.DBCP_POOL_TIMEOUT
    assert ec.classify_exception(make("psycopg.errors.AdminShutdown", "")) == ec.CONNECTION_LOST
    assert ec.classify_exception(make("psycopg.errors.CannotConnectNow", "")) == ec.DB_UNAVAILABLE
    assert ec.classify_exception(make("psycopg.errors.TooManyConnections", "")) == ec.TOO_MANY_CLIENTS
    # a subclass keeps its base's class
    sub = type("MyPoolTimeout", (fake_class("psycopg_pool.PoolTimeout"),), {"__module__": "app"})
    assert ec.classify_exception(sub("")) == ec.DJANGO_POOL_TIMEOUT
    # builtins.TimeoutError is not SQLAlchemy's
    assert ec.classify_exception(TimeoutError("timed out")) == ec.HTTP_5XX


def test_pgbouncer_text_beats_its_protocol_violation_sqlstate():
    assert ec.classify_message("query_wait_timeout", "08P01") == ec.PGBOUNCER_WAIT_TIMEOUT
    assert ec.classify_message("invalid command 'BEGIN', use SHOW HELP;", "08P01") == ec.HTTP_5XX


def test_unrecognised_and_odd_inputs():
    assert ec.classify_exception(None) == ec.OK
    assert ec.classify_exception(ValueError("nope")) == ec.HTTP_5XX
    assert ec.classify_exception(SystemExit(1)) == ec.HTTP_5XX
    assert ec.classify_message("") == ec.HTTP_5XX
    assert ec.classify_message(None) == ec.HTTP_5XX
    assert ec.classify_message("anything", "57p01") == ec.CONNECTION_LOST

    class BadStr(Exception):
        def __str__(self):
            raise RuntimeError("no")

    assert ec.classify_exception(BadStr()) == ec.HTTP_5XX
    weird = OperationalError("x")
    weird.sqlstate = 53300  # not a string: ignored
    assert ec.classify_exception(weird) == ec.HTTP_5XX


# ---- classify_response ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "header", "text", "expected"),
    [
        (503, "too_many_clients", "URL http://127.0.0.1:8000/: code=503", ec.TOO_MANY_CLIENTS),
        (503, " pgbouncer_wait_timeout ", "code=503", ec.PGBOUNCER_WAIT_TIMEOUT),
        (503, "not-a-class", "code=503", ec.HTTP_5XX),
        (500, None, "URL http://127.0.0.1:8000/: code=500", ec.HTTP_5XX),
        (502, None, "code=502", ec.HTTP_5XX),
        (504, "", "code=504", ec.HTTP_5XX),
        (404, None, "code=404", ec.CLIENT_ERROR),
        (200, None, "validation failed", ec.CLIENT_ERROR),
        (200, None, None, ec.OK),
        (0, None, "[Errno 111] Connection refused", ec.CONNECTION_REFUSED),
        (None, None, "URL http://127.0.0.1:1/: 3, original=[Errno 111] Connection refused", ec.CONNECTION_REFUSED),
        (0, None, "connection closed.", ec.GUNICORN_WORKER_TIMEOUT),
        (0, None, "[Errno 104] Connection reset by peer", ec.GUNICORN_WORKER_TIMEOUT),
        (0, None, "URL http://127.0.0.1:8000/: 0, original=timed out", ec.CLIENT_TIMEOUT),
        (0, None, "something else", ec.CLIENT_ERROR),
        (0, None, None, ec.CLIENT_ERROR),
        (0, "db_unavailable", "connection closed.", ec.DB_UNAVAILABLE),
    ],
)
def test_classify_response(status, header, text, expected):
    assert ec.classify_response(status, header, text) == expected


def test_constants():
    assert ERROR_HEADER == "X-Connbench-Error"
    assert ec.OK == ""
    assert len(set(ERROR_CLASSES)) == len(ERROR_CLASSES) and ec.OK not in ERROR_CLASSES
    assert ec.TOO_MANY_CLIENTS == "too_many_clients"
    assert ec.GUNICORN_WORKER_TIMEOUT == "gunicorn_worker_timeout"


def test_imports_nothing_heavy():
    code = (
        "import sys, connbench.errorclass; "
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('django', 'psycopg', 'psycopg_pool', 'sqlalchemy', 'locust', 'gevent', 'geventhttpclient')]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
