"""Settings for the app under test: every knob comes from CONNBENCH_* environment variables.

The harness (connbench/services/gunicorn.py) sets them from a cell's parameters; see
`connbench.services.gunicorn.app_environment` for the mapping.
"""

import os

BASE_DIR = os.path.dirname(os.path.abspath(__file__))
SECRET_KEY = os.environ.get("CONNBENCH_SECRET_KEY", "connbench-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
ROOT_URLCONF = "target_app.urls"
WSGI_APPLICATION = "target_app.wsgi.application"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "target_app.bench"]
MIDDLEWARE = ["target_app.middleware.ErrorClassMiddleware"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django.request": {"handlers": ["console"], "level": "ERROR", "propagate": False}},
}


def _env(name: str, default: str = "") -> str:
    return os.environ.get(f"CONNBENCH_{name}", default)


def _bool(name: str, default: bool = False) -> bool:
    return _env(name, "1" if default else "0").strip().lower() in ("1", "true", "yes", "on")


def conn_max_age(raw: str):
    """CONN_MAX_AGE from text: "none" means unlimited persistent connections."""
    raw = raw.strip().lower()
    return None if raw in ("none", "null", "unlimited") else int(raw)


POOLING = _env("POOLING", "direct")

_db = {
    "ENGINE": "django.db.backends.postgresql",
    "HOST": _env("DB_HOST", "127.0.0.1"),
    "PORT": _env("DB_PORT", "5432"),
    "NAME": _env("DB_NAME", "connbench"),
    "USER": _env("DB_USER", "app"),
    "PASSWORD": _env("DB_PASSWORD", ""),
    "CONN_MAX_AGE": conn_max_age(_env("CONN_MAX_AGE", "0")),
    "CONN_HEALTH_CHECKS": _bool("HEALTH_CHECKS"),
    "OPTIONS": {"connect_timeout": int(_env("CONNECT_TIMEOUT", "10"))},
}

if POOLING == "django-pool":
    # Django requires CONN_MAX_AGE=0 with its pool (ImproperlyConfigured otherwise).
    _db["CONN_MAX_AGE"] = 0
    _db["OPTIONS"]["pool"] = {
        "min_size": int(_env("POOL_MIN_SIZE", "1")),
        "max_size": int(_env("POOL_MAX_SIZE", "4")),
        "timeout": float(_env("POOL_TIMEOUT", "5")),
    }
elif POOLING == "dj-db-conn-pool":
    _db["ENGINE"] = "dj_db_conn_pool.backends.postgresql"
    _db["POOL_OPTIONS"] = {
        "POOL_SIZE": int(_env("DBCP_POOL_SIZE", "2")),
        "MAX_OVERFLOW": int(_env("DBCP_MAX_OVERFLOW", "2")),
        "RECYCLE": int(_env("DBCP_RECYCLE", "3600")),
        "PRE_PING": _bool("DBCP_PRE_PING"),
        "TIMEOUT": float(_env("DBCP_TIMEOUT", "5")),
    }
elif POOLING.startswith("pgbouncer"):
    # Transaction pooling hands each transaction any server connection: named cursors
    # (server-side) would not survive, so Django's documented setting turns them off.
    _db["DISABLE_SERVER_SIDE_CURSORS"] = POOLING == "pgbouncer-transaction"

DATABASES = {"default": _db}
