from django.urls import path

from target_app import views

urlpatterns = [
    path("health", views.health),
    path("db/read", views.db_read),
    path("db/write", views.db_write),
    path("db/slow", views.db_slow),
    path("db/conn", views.db_conn),
]
