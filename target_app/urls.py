from django.conf import settings
from django.urls import path

from connbench.target_app import async_views, views
from connbench.target_app.hazard_views import VIEWS as HAZARDS

# The cell's `view` knob: sync views, or async views on Django's async ORM (the same endpoints)
v = async_views if settings.CONFIG.view == "async" else views

DB_ENDPOINTS = ("read", "write", "slow", "conn")  # /db/<name> -> db_<name>

urlpatterns = [path("health", views.health), *(path(f"db/{name}", getattr(v, f"db_{name}")) for name in DB_ENDPOINTS),
               *(path(f"hazard/{name}", view) for name, view in HAZARDS.items())]  # sync views only
