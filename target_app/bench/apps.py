from django.apps import AppConfig


class BenchConfig(AppConfig):
    name = "connbench.target_app.bench"
    label = "bench"
