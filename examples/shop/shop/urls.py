from catalog import views
from django.urls import path

urlpatterns = [
    path("", views.product_list),
    path("products/<int:pk>/", views.product_detail),
    path("products/<int:pk>/hit", views.product_hit),
    path("up", views.up),
    path("old-offers/", views.retired),
    path("retired/", views.retired),
    path("broken/", views.broken),
]
