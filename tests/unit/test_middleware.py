"""connbench's error-class middleware never changes what the app answers: the same status, body and other
middleware's behaviour with it as without it; it only names a 5xx's class in a header, and logs the traceback.

Run in a subprocess each: Django's settings are configured once per process.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import ROOT

APP = r'''
import json, logging, sys
import django
from django.conf import settings
from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.http import Http404, HttpResponse, HttpResponsePermanentRedirect
from django.urls import path

class RedirectOn404:  # what a CMS's redirects app does: acts on the 404 response
    def __init__(self, get_response):
        self.get_response = get_response
    def __call__(self, request):
        response = self.get_response(request)
        if response.status_code == 404 and request.path == "/moved/":
            return HttpResponsePermanentRedirect("/new-home/")
        return response

def missing(request): raise Http404("no such page")
def forbidden(request): raise PermissionDenied("not yours")
def suspicious(request): raise SuspiciousOperation("odd")
def bug(request): raise ValueError("a bug in a view")
def db(request):
    import psycopg
    raise psycopg.OperationalError('connection failed: connection to server at "127.0.0.1", port 5432 failed: '
                                   'FATAL:  sorry, too many clients already')
def ok(request): return HttpResponse("fine")

urlpatterns = [path("missing/", missing), path("forbidden/", forbidden), path("suspicious/", suspicious),
               path("bug/", bug), path("db/", db), path("ok/", ok)]
MW = ["__main__.RedirectOn404"]
if sys.argv[1] == "with":
    MW.append("connbench.target_app.middleware.ErrorClassMiddleware")
settings.configure(DEBUG=False, SECRET_KEY="x", ROOT_URLCONF="__main__", ALLOWED_HOSTS=["*"], MIDDLEWARE=MW,
                   INSTALLED_APPS=[], DATABASES={})
django.setup()
from django.test import Client
out = {}
for p in ("/missing/", "/moved/", "/forbidden/", "/suspicious/", "/bug/", "/db/", "/ok/"):
    r = Client(raise_request_exception=False).get(p)
    out[p] = {"status": r.status_code, "body": r.content.decode(), "location": r.get("Location"),
              "error_class": r.get("X-Connbench-Error")}
print(json.dumps(out))
'''


def _serve(mode: str) -> tuple[dict, str]:
    res = subprocess.run([sys.executable, "-c", APP, mode], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout), res.stderr


@pytest.fixture(scope="module")
def served():
    return {"without": _serve("without"), "with": _serve("with")}


def test_every_status_body_and_redirect_is_the_apps_own(served):
    without, _ = served["without"]
    with_, _ = served["with"]
    for path in without:
        mine, theirs = with_[path], without[path]
        assert (mine["status"], mine["body"], mine["location"]) == (theirs["status"], theirs["body"],
                                                                    theirs["location"]), path
    assert [without[p]["status"] for p in ("/missing/", "/moved/", "/forbidden/", "/suspicious/", "/bug/", "/ok/")] \
        == [404, 301, 403, 400, 500, 200]
    assert with_["/moved/"]["location"] == "/new-home/"  # the 404-acting middleware still ran


def test_only_a_5xx_gets_a_class_and_a_bug_is_not_a_connection_failure(served):
    with_, _ = served["with"]
    assert with_["/db/"]["error_class"] == "too_many_clients"
    assert with_["/bug/"]["error_class"] == "app_exception"
    for p in ("/missing/", "/moved/", "/forbidden/", "/suspicious/", "/ok/"):
        assert with_[p]["error_class"] is None, p


def test_the_traceback_reaches_the_log_whatever_debug_is(served):
    _, log = served["with"]
    _, quiet = served["without"]
    assert "Traceback (most recent call last)" in log and "ValueError: a bug in a view" in log
    assert "sorry, too many clients already" in log
    assert "ValueError" not in quiet  # DEBUG = False and Django's default logging: nothing, which is why


def test_a_storm_of_one_error_logs_its_traceback_a_bounded_number_of_times():
    import logging

    from connbench.target_app.middleware import FULL_TRACEBACKS, _TracebackFormatter

    fmt = _TracebackFormatter()
    try:
        raise ValueError("same")
    except ValueError:
        info = sys.exc_info()
    lines = [fmt.format(logging.LogRecord("django.request", logging.ERROR, __file__, 1, "Internal Server Error: /x",
                                          None, info)) for _ in range(FULL_TRACEBACKS + 5)]
    assert sum("Traceback" in line for line in lines) == FULL_TRACEBACKS
    assert lines[-1].endswith(f"{FULL_TRACEBACKS + 5} so far]") and "builtins.ValueError: same" in lines[-1]
