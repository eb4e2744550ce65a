"""gunicorn config hooks (loaded with `-c python:connbench.services.gunicorn_hooks`).

post_fork names every worker's database sessions: libpq reads PGAPPNAME at connect time,
so each connection shows up in pg_stat_activity as "cb:d<dyno>:w<n>" and the sampler can
attribute it to a dyno and a worker. n is gunicorn's worker age: a replaced worker gets a
new n, so a killed worker's connections are never mistaken for its successor's.
"""

import os
import sys
from typing import Any

from connbench.contract import APPNAME_PREFIX, DYNO_ENV


def post_fork(server: Any, worker: Any) -> None:  # gunicorn's Arbiter and Worker (no stubs)
    os.environ["PGAPPNAME"] = f"{APPNAME_PREFIX}:d{os.environ[DYNO_ENV]}:w{worker.age}"
    # Django creates its psycopg pool lazily, per process. If the app was preloaded and a
    # pool exists already, it belongs to the master: forget it so this worker opens its own.
    base = sys.modules.get("django.db.backends.postgresql.base")
    if base is not None:
        base.DatabaseWrapper._connection_pools.clear()
