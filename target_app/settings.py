"""Settings for the app under test: the database settings come whole from the harness.

connbench hands the app one JSON environment variable (connbench.contract.AppConfig); there are no
defaults here, so an app started without it fails at once instead of measuring a guess.
"""

import os

from connbench.contract import AppConfig

CONFIG = AppConfig.from_env()

BASE_DIR = os.path.dirname(os.path.abspath(__file__))
SECRET_KEY = CONFIG.secret_key
DEBUG = False
ALLOWED_HOSTS = CONFIG.allowed_hosts()
ROOT_URLCONF = "connbench.target_app.urls"
WSGI_APPLICATION = "connbench.target_app.wsgi.application"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "connbench.target_app.bench"]
# Server-Timing outermost: a failed request's 500 says where its time went too. The error-class
# middleware also sends django.request's errors, tracebacks included, to the dyno's log.
MIDDLEWARE = ["connbench.target_app.timing.ServerTimingMiddleware",
              "connbench.target_app.middleware.ErrorClassMiddleware"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {"default": CONFIG.django_database()}
