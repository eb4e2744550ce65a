from django.db import models

SEED_ROWS = 1000  # rows `seed` creates; the views pick among them


class Item(models.Model):
    name = models.CharField(max_length=64)
    value = models.IntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)
