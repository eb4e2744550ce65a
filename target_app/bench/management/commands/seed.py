from typing import Any

from django.core.management.base import BaseCommand

from connbench.target_app.bench.models import SEED_ROWS, Item


class Command(BaseCommand):
    help = "Seed the table the read/write endpoints use (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        have = Item.objects.count()
        if have < SEED_ROWS:
            Item.objects.bulk_create(
                [Item(id=i, name=f"item-{i}", value=i) for i in range(have + 1, SEED_ROWS + 1)]
            )
        self.stdout.write(f"seeded {Item.objects.count()} rows")
