"""What the parameters predict: connections per pooling mode, and the slots the app's role gets."""

from __future__ import annotations

from typing import Any

from connbench.results import Predicted
from connbench.scenario.knobs import PGBOUNCER_MODES, Knobs

# Django ticket #33497: under ASGI every request's sync code runs in a fresh single-use thread, and
# connections are thread-local: with CONN_MAX_AGE != 0 each request leaves its connection behind.
ASGI_LEAK = "ASGI with CONN_MAX_AGE != 0: each request runs in a fresh thread and leaves its connection behind"


def predict(k: Knobs, app_slots: int | None = None) -> Predicted:
    """Connections the parameters predict, with the reasoning stated.

    connections: what the server should hold at plateau under sustained load;
    connections_max: an upper bound (None = unbounded); pgbouncer_server_max for PgBouncer.
    """
    per_worker_conc = k.concurrency
    leaks = k.worker_class == "asgi" and k.persistent
    procs = k.dynos * k.workers
    out: dict[str, Any] = {"connections": None, "connections_max": None, "at_rest": None,
                           "pgbouncer_server_max": None, "pgbouncer_clients": None, "basis": "", "bounded": None}
    if k.pooling == "django-pool":
        # psycopg_pool adds a connection whenever a request has to wait -- even the first, while
        # min_size connections are still opening -- and keeps idle ones for max_idle (10 min):
        # measured here, one sync worker with min 1 / max 2 holds 2.
        out.update(connections=procs * k.pool_max_size, connections_max=procs * k.pool_max_size,
                   basis=f"{procs} processes x max_size {k.pool_max_size} (the pool grows whenever a "
                         f"request waits, from min_size {k.pool_min_size})")
    elif k.pooling == "dj-db-conn-pool":
        cap = k.dbcp_pool_size + k.dbcp_max_overflow
        per = min(per_worker_conc, k.dbcp_pool_size)
        out.update(connections=procs * per, connections_max=procs * min(per_worker_conc, cap),
                   basis=f"{procs} processes x min(concurrency {per_worker_conc}, POOL_SIZE {k.dbcp_pool_size})"
                         f"; at most +MAX_OVERFLOW {k.dbcp_max_overflow} while busy")
    else:
        app_side = procs * per_worker_conc
        if k.worker_class == "gevent":
            app_side = min(app_side, k.users)  # one connection per greenlet serving a request
        elif k.worker_class == "asgi":
            app_side = min(app_side, k.concurrency)  # one connection per request in flight
        if k.pooling in PGBOUNCER_MODES:
            server_max = k.pgbouncer_pool_size + k.pgbouncer_reserve_pool
            clients = app_side if k.persistent and not leaks else None
            out.update(pgbouncer_clients=clients, pgbouncer_server_max=server_max,
                       connections=min(app_side, server_max) if k.persistent or k.pooling.endswith("transaction")
                       else None,
                       connections_max=server_max,
                       basis=f"PgBouncer pool {k.pgbouncer_pool_size} + reserve {k.pgbouncer_reserve_pool} "
                             f"server connections; app side {app_side} clients")
            if leaks:
                out["basis"] += f"; {ASGI_LEAK}: app -> PgBouncer client connections accumulate (up to " \
                                f"max_client_conn {k.pgbouncer_max_client_conn})"
        elif leaks:
            out.update(connections=None, connections_max=None, at_rest=None, bounded=False,
                       basis=f"{ASGI_LEAK}: connections accumulate with requests until the garbage collector "
                             "closes them or the server is full; no bound")
        elif k.persistent:
            out.update(connections=app_side, connections_max=app_side,
                       basis=f"{k.dynos} dynos x {k.workers} workers x {per_worker_conc} "
                             f"{'greenlets' if k.worker_class == 'gevent' else 'threads'}, one connection each")
        else:
            out.update(connections=None, connections_max=app_side, at_rest=0,
                       basis="CONN_MAX_AGE=0: a connection per request, closed at its end: 0 at rest, "
                             f"one per request in flight under load, at most {app_side}"
                             + (" (ASGI: the requests the load keeps in flight)" if k.worker_class == "asgi" else ""))
    if out["bounded"] is None:
        out["bounded"] = True
    if out["at_rest"] is None and k.pooling not in PGBOUNCER_MODES and not leaks:
        out["at_rest"] = out["connections"]
    out["pool_wait"] = pool_wait(k)
    if app_slots is not None and out["connections_max"] is not None:
        out["exceeds_app_slots"] = out["connections_max"] > app_slots
    return Predicted(**out)


def pool_wait(k: Knobs) -> str | None:
    """When one worker can run more requests at once than its pool has connections: the surplus waits for a
    connection, and past the pool's timeout fails (a gthread worker with 4 threads on a pool of 2 queues, then
    PoolTimeout after 30 s by default, then the proxy's 504). None when the pool covers the concurrency."""
    demand = k.concurrency
    if k.worker_class in ("gevent", "asgi") and not k.open_model:
        demand = min(demand, k.users)  # a closed loop never has more requests in flight than users
    unit = {"gthread": "threads", "gevent": "greenlets", "asgi": "concurrent requests"}.get(k.worker_class, "")
    if k.pooling == "django-pool" and demand > k.pool_max_size:
        cap, timeout, error = k.pool_max_size, k.pool_timeout, "django_pool_timeout"
        pool = f"Django's pool (max_size {cap})"
    elif k.pooling == "dj-db-conn-pool" and demand > k.dbcp_pool_size + k.dbcp_max_overflow:
        cap, timeout, error = k.dbcp_pool_size + k.dbcp_max_overflow, k.dbcp_timeout, "dbcp_pool_timeout"
        pool = f"django-db-connection-pool (POOL_SIZE {k.dbcp_pool_size} + MAX_OVERFLOW {k.dbcp_max_overflow})"
    else:
        return None
    return (f"each worker runs up to {demand} {unit or 'requests'} at once on {pool}: up to {demand - cap} of them "
            f"wait for a connection, and a wait past {timeout:g} s fails with {error}")
