"""The database endpoints as async views (Django's async ORM: afirst, aupdate), for view = "async".

Django runs the async ORM's queries in sync_to_async threads: under ASGI, which thread holds a
connection, and for how long, is exactly what connbench measures.
"""

import os
import random
from typing import cast

from asgiref.sync import sync_to_async
from django.db import connection
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

from connbench.target_app.bench.models import SEED_ROWS, Item
from connbench.target_app.views import sleep_in_db, slow_ms


async def db_read(request: HttpRequest) -> JsonResponse:
    item = await Item.objects.filter(pk=random.randint(1, SEED_ROWS)).values("id", "name", "value").afirst()
    return JsonResponse({"item": item})


async def db_write(request: HttpRequest) -> JsonResponse:
    pk = random.randint(1, SEED_ROWS)
    updated = await Item.objects.filter(pk=pk).aupdate(value=random.randint(0, 1_000_000))
    return JsonResponse({"updated": updated, "id": pk})


async def db_slow(request: HttpRequest) -> HttpResponse:
    ms = slow_ms(request)
    if isinstance(ms, HttpResponseBadRequest):
        return ms
    await sync_to_async(sleep_in_db)(ms)
    return JsonResponse({"slept_ms": ms})


def _conn() -> tuple[int, str]:
    with connection.cursor() as cur:
        cur.execute("SELECT pg_backend_pid(), current_setting('application_name')")
        return cast(tuple[int, str], cur.fetchone())


async def db_conn(request: HttpRequest) -> JsonResponse:
    pid, app = await sync_to_async(_conn)()
    return JsonResponse({"backend_pid": pid, "application_name": app, "worker_pid": os.getpid()})
