import os

from django.core.wsgi import get_wsgi_application

from connbench.contract import APP_ENV, AppConfig

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "connbench.target_app.settings")
application = get_wsgi_application()

if APP_ENV in os.environ and AppConfig.from_env().touch_db_at_import:
    # a startup check, as projects write them: with gunicorn's --preload it runs in the master, and the
    # connection it opens (or Django's pool, with the connection checked out of it) is what every worker inherits
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
