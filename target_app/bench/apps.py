from django.apps import AppConfig


class BenchConfig(AppConfig):
    name = "target_app.bench"
    label = "bench"
