"""Endpoints under test: one without the database, and reads, writes and a slow query."""

import os
import random

from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

from connbench.target_app.bench.models import SEED_ROWS, Item


def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True, "pid": os.getpid()})


def db_read(request: HttpRequest) -> JsonResponse:
    item = Item.objects.filter(pk=random.randint(1, SEED_ROWS)).values("id", "name", "value").first()
    return JsonResponse({"item": item})


def db_write(request: HttpRequest) -> JsonResponse:
    pk = random.randint(1, SEED_ROWS)
    with transaction.atomic():
        updated = Item.objects.filter(pk=pk).update(value=random.randint(0, 1_000_000))
    return JsonResponse({"updated": updated, "id": pk})


def slow_ms(request: HttpRequest) -> int | HttpResponseBadRequest:
    """/db/slow's ?ms=: milliseconds to hold the connection in pg_sleep, or the 400 that says what is allowed."""
    try:
        ms = int(request.GET.get("ms", "50"))
    except ValueError:
        return HttpResponseBadRequest("ms must be an integer")
    if not 0 <= ms <= 60_000:
        return HttpResponseBadRequest("ms must be between 0 and 60000")
    return ms


def sleep_in_db(ms: int) -> None:
    with connection.cursor() as cur:
        cur.execute("SELECT pg_sleep(%s)", [ms / 1000.0])


def db_slow(request: HttpRequest) -> HttpResponse:
    ms = slow_ms(request)
    if isinstance(ms, HttpResponseBadRequest):
        return ms
    sleep_in_db(ms)
    return JsonResponse({"slept_ms": ms})


def db_conn(request: HttpRequest) -> JsonResponse:
    """Which backend served this request: lets tests see connection reuse directly."""
    with connection.cursor() as cur:
        cur.execute("SELECT pg_backend_pid(), current_setting('application_name')")
        pid, app = cur.fetchone()
    return JsonResponse({"backend_pid": pid, "application_name": app, "worker_pid": os.getpid()})
