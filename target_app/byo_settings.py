"""Settings for your own Django project (a scenario's [app]): yours, with only what connbench must decide.

Imports the module named by CONNBENCH_USER_SETTINGS and takes every setting from it, then overrides:
the default database's connection knobs (host, port, credentials, CONN_MAX_AGE, health checks, pool
options, the engine for django-db-connection-pool, DISABLE_SERVER_SIDE_CURSORS for transaction pooling),
ALLOWED_HOSTS (loopback), DEBUG (False: no query log), and puts connbench's middleware first
(Server-Timing; the error class, which also logs django.request's tracebacks to the dyno's log). Both
only add headers: every status and body is your app's own. Everything else -- apps, URLs, LOGGING,
other databases' entries, caches -- stays yours. docs/your-app.md lists each change and why.
"""

import importlib
import os

from connbench.contract import AppConfig

_cell = AppConfig.from_env()  # lower case: your settings' names (even a CONFIG) never overwrite it
_yours = importlib.import_module(os.environ["CONNBENCH_USER_SETTINGS"])
globals().update({name: value for name, value in vars(_yours).items() if name.isupper()})

_default = dict(getattr(_yours, "DATABASES", {}).get("default", {}))
# your TEST, TIME_ZONE, ATOMIC_REQUESTS, ... stay; the connection itself is the cell's
for _key in ("ENGINE", "HOST", "PORT", "NAME", "USER", "PASSWORD", "CONN_MAX_AGE", "CONN_HEALTH_CHECKS",
             "OPTIONS", "POOL_OPTIONS", "DISABLE_SERVER_SIDE_CURSORS"):
    _default.pop(_key, None)
DATABASES = {**getattr(_yours, "DATABASES", {}), "default": {**_default, **_cell.django_database()}}
ALLOWED_HOSTS = _cell.allowed_hosts()
_HARNESS = ["connbench.target_app.timing.ServerTimingMiddleware",
            "connbench.target_app.middleware.ErrorClassMiddleware"]
MIDDLEWARE = _HARNESS + [m for m in getattr(_yours, "MIDDLEWARE", []) if m not in _HARNESS]
DEBUG = False  # a benchmark of DEBUG = True measures Django's query log, not the connections
