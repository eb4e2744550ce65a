from django.conf import settings
from django.urls import path

from target_app import async_views, views

# The cell's `view` knob: sync views, or async views on Django's async ORM (the same endpoints)
v = async_views if settings.CONFIG.view == "async" else views

urlpatterns = [
    path("health", views.health),
    path("db/read", v.db_read),
    path("db/write", v.db_write),
    path("db/slow", v.db_slow),
    path("db/conn", v.db_conn),
]
