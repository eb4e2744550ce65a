"""gunicorn config hooks (loaded with `-c python:connbench.services.gunicorn_hooks`).

post_fork names every worker's database sessions: libpq reads PGAPPNAME at connect time,
so each connection shows up in pg_stat_activity as "cb:d<dyno>:w<n>" and the sampler can
attribute it to a dyno and a worker. n is gunicorn's worker age: a replaced worker gets a
new n, so a killed worker's connections are never mistaken for its successor's.

pre_fork runs in the master. Only with the cell's close_pools_before_fork (the fix, as a setting) does it touch
the app: it closes the connections and Django's pools the master opened (a preloaded app that queried at import),
so each worker opens its own. Without it, what the master opened is inherited by every worker, as it would be in
production: connbench shows that, it never repairs it unasked.
"""

import os
import sys
from typing import Any

from connbench.contract import APP_ENV, APPNAME_PREFIX, DYNO_ENV, AppConfig


def post_fork(server: Any, worker: Any) -> None:  # gunicorn's Arbiter and Worker (no stubs)
    os.environ["PGAPPNAME"] = f"{APPNAME_PREFIX}:d{os.environ[DYNO_ENV]}:w{worker.age}"


def pre_fork(server: Any, worker: Any) -> None:
    if APP_ENV not in os.environ or not AppConfig.from_env().close_pools_before_fork:
        return
    if "django.db" not in sys.modules:  # not preloaded: the master never imported Django, so owns nothing
        return
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        conn.close()
        close_pool = getattr(conn, "close_pool", None)  # Django 5.1+'s PostgreSQL backend
        if close_pool is not None:
            close_pool()
