"""The shop's own Locust file, as a team might already have one: connbench runs it as it is
([load] locustfile = "locustfile.py") and logs every request beside it."""

import random

from locust import HttpUser, constant, task


class Shopper(HttpUser):
    wait_time = constant(0)

    @task(3)
    def browse(self):
        self.client.get("/")

    @task(1)
    def look_at_one(self):
        self.client.get(f"/products/{random.randint(1, 40)}/", name="/products/[id]/")
