"""The pre-load check means what it says: only a 2xx passes, a redirect is reported and not followed, a
deterministic failure fails at once, and the message carries the app's own traceback from the dyno's log.

A real HTTP server on loopback stands in for a dyno's answers (the e2e tests run real gunicorn).
"""

from __future__ import annotations

import http.server
import subprocess
import threading
import time

import pytest

from connbench.services.gunicorn import Dyno, log_excerpt, verify
from connbench.services.procs import ServiceError

TRACEBACK = """[2026-12-03 10:00:00 +0000] [12] [WARNING] booting
2026-12-03 10:00:01 [connbench] ERROR django.request: Internal Server Error: /health
Traceback (most recent call last):
  File "/app/django/core/handlers/exception.py", line 55, in inner
    response = get_response(request)
  File "/app/shop/views.py", line 3, in health
    raise ImproperlyConfigured("The SECRET_KEY setting must not be empty.")
django.core.exceptions.ImproperlyConfigured: The SECRET_KEY setting must not be empty.
[2026-12-03 10:00:02 +0000] [11] [INFO] Handling signal: term
"""


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        status, headers = {"/ok": (200, {}), "/moved": (302, {"Location": "/login/"}),
                           "/broken": (500, {})}.get(self.path, (404, {}))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def dyno(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proc = subprocess.Popen(["sleep", "60"])
    log = tmp_path / "gunicorn-d0.log"
    log.write_text(TRACEBACK)
    yield Dyno(0, server.server_address[1], proc, log)
    proc.kill()
    proc.wait()
    server.shutdown()


def test_a_2xx_passes(dyno):
    verify([dyno], ("/ok",), timeout=5)


def test_the_same_500_twice_fails_at_once_with_the_apps_traceback(dyno):
    t0 = time.monotonic()
    with pytest.raises(ServiceError) as e:
        verify([dyno], ("/broken",), timeout=20)
    assert time.monotonic() - t0 < 3  # not the 20 s of retries
    msg = str(e.value)
    assert "dyno 0 /broken failed: HTTP 500, twice" in msg
    assert "ImproperlyConfigured: The SECRET_KEY setting must not be empty." in msg
    assert 'File "/app/shop/views.py", line 3, in health' in msg
    assert "Handling signal" not in msg  # gunicorn's noise after the exception is left out


def test_a_redirect_is_reported_with_its_location_and_not_followed(dyno):
    with pytest.raises(ServiceError, match=r"HTTP 302 \(a redirect to /login/: not followed\), twice"):
        verify([dyno], ("/moved",), timeout=20)


def test_a_dyno_that_exited_fails_at_once_with_its_log(dyno):
    dyno.proc.kill()
    dyno.proc.wait()
    with pytest.raises(ServiceError, match="exited with code") as e:
        verify([dyno], ("/ok",), timeout=20)
    assert "SECRET_KEY" in str(e.value)


def test_the_excerpt_without_a_traceback_is_the_logs_last_lines(tmp_path):
    log = tmp_path / "d.log"
    log.write_text("".join(f"line {i}\n" for i in range(40)))
    assert log_excerpt(log, lines=3) == "line 37\nline 38\nline 39"
    assert log_excerpt(tmp_path / "missing.log") == ""
