"""One endpoint per session-state hazard (connbench.sqlhazards.KINDS): each works on a direct connection and
relies on what a transaction pooler does not keep. Under PgBouncer's transaction mode each statement below runs
in its own transaction (Django's autocommit), so on any server connection PgBouncer has free.

Names and lock keys are unique per request where a leftover would collide (a cursor or statement a failed request
left on a persistent connection). Advisory locks are only ever tried, never waited for: an unlock that finds no lock
(it ran on another server connection than the lock) answers 409, it never blocks a worker.
"""

from __future__ import annotations

import secrets

from django.db import connection
from django.http import HttpRequest, JsonResponse

from connbench.contract import HAZARD_ENDPOINTS
from connbench.target_app.bench.models import Item


def _one(sql: str) -> object:
    with connection.cursor() as cur:
        cur.execute(sql)
        row = cur.fetchone() if cur.description else None
    return row[0] if row else None


def hazard_set(request: HttpRequest) -> JsonResponse:
    _one("SET statement_timeout = '5s'")
    return JsonResponse({"statement_timeout": _one("SHOW statement_timeout")})


def hazard_set_config(request: HttpRequest) -> JsonResponse:
    _one("SELECT set_config('connbench.tenant', '42', false)")
    return JsonResponse({"tenant": _one("SELECT current_setting('connbench.tenant', true)")})


def hazard_advisory(request: HttpRequest) -> JsonResponse:
    key = secrets.randbits(31)  # one per request: concurrent requests on direct connections never contend
    got = _one(f"SELECT pg_try_advisory_lock({key})")
    released = _one(f"SELECT pg_advisory_unlock({key})")
    if not released:  # the unlock ran on a server connection that does not hold the lock: it stays behind there
        _one("SELECT pg_advisory_unlock_all()")  # (whichever server connection this lands on)
    return JsonResponse({"locked": got, "released": released}, status=200 if got and released else 409)


def hazard_listen(request: HttpRequest) -> JsonResponse:
    _one("LISTEN connbench_jobs")
    return JsonResponse({"listening": True})


def hazard_temp(request: HttpRequest) -> JsonResponse:
    _one("CREATE TEMP TABLE IF NOT EXISTS connbench_scratch (n int)")
    _one("INSERT INTO connbench_scratch VALUES (1)")  # relation does not exist: another server connection
    return JsonResponse({"rows": _one("SELECT count(*) FROM connbench_scratch")})


def hazard_hold(request: HttpRequest) -> JsonResponse:
    name = f"connbench_c_{secrets.token_hex(4)}"
    _one(f"DECLARE {name} CURSOR WITH HOLD FOR SELECT generate_series(1, 10)")
    first = _one(f"FETCH 5 FROM {name}")  # cursor does not exist: another server connection
    _one(f"CLOSE {name}")
    return JsonResponse({"first": first})


def hazard_prepare(request: HttpRequest) -> JsonResponse:
    name = f"connbench_p_{secrets.token_hex(4)}"
    _one(f"PREPARE {name} AS SELECT 1")
    value = _one(f"EXECUTE {name}")  # prepared statement does not exist: another server connection
    _one(f"DEALLOCATE {name}")
    return JsonResponse({"value": value})


def hazard_iterator(request: HttpRequest) -> JsonResponse:
    # Django's named cursor (DECLARE ... WITH HOLD outside a transaction) unless DISABLE_SERVER_SIDE_CURSORS
    ids = [i.id for i in Item.objects.order_by("id")[:50].iterator(chunk_size=10)]
    return JsonResponse({"items": len(ids)})


VIEWS = {"set": hazard_set, "set_config": hazard_set_config, "advisory": hazard_advisory,
         "listen": hazard_listen, "temp": hazard_temp, "hold": hazard_hold, "prepare": hazard_prepare,
         "iterator": hazard_iterator}  # /hazard/<name>
if tuple(VIEWS) != HAZARD_ENDPOINTS:  # the contract names the endpoints the locustfile requests
    raise RuntimeError(f"hazard views {tuple(VIEWS)} differ from the contract's {HAZARD_ENDPOINTS}")
