"""The only places connbench reaches into Locust's private API, each with why. locust is pinned below 3
(pyproject.toml); the e2e generator tests exercise every one of them against the real Locust."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def send_final_stats(runner: Any) -> None:
    """A worker's last statistics report, sent now: Locust sends it only on its own schedule, and a worker
    the master stops must report before its final rows message, on the same connection."""
    runner._send_stats()


def start_no_more_users(runner: Any) -> None:
    """A worker the master stopped: a "spawn" message still on its way must start no user."""
    runner.start_worker = lambda *_a, **_kw: None


def freeze_users(runner: Any, instead: Callable[..., None]) -> None:
    """A master's users stay where the test started them: Locust redistributes them when a worker joins,
    quits or goes missing, both through runner.start and inside the first start's ramp (its dispatcher)."""
    runner.start = instead
    dispatcher = runner._users_dispatcher
    dispatcher.add_worker = dispatcher.remove_worker = instead
