"""A small shop: not connbench's app. Its own settings, as a project would have them; connbench's shim
(target_app/byo_settings.py) imports these and overrides only the database connection."""

import os

SECRET_KEY = os.environ.get("SHOP_SECRET_KEY", "example-only-not-a-secret")
DEBUG = os.environ.get("SHOP_DEBUG") == "1"
ALLOWED_HOSTS = ["shop.example.com"]
INSTALLED_APPS = ["django.contrib.contenttypes", "catalog"]
MIDDLEWARE = ["catalog.middleware.RedirectRetired", "django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "shop.urls"
WSGI_APPLICATION = "shop.wsgi.application"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("SHOP_DB", "shop"),
        "HOST": "db.internal.example.com",
        "CONN_MAX_AGE": 600,
        "ATOMIC_REQUESTS": False,
    }
}
