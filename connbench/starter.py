"""`connbench init`: a commented starter scenario, valid as written (tests check it loads)."""

from __future__ import annotations

import os
from pathlib import Path

STARTER_NAME = "connbench.toml"

STARTER = '''\
# A connbench scenario: which settings to compare, and what must hold.
#   connbench list connbench.toml -v    the cells, and the connections each should hold (and why)
#   connbench run connbench.toml        run them; the HTML report's path is printed at the end
# Every knob: connbench/spec.py (Knobs), or the README's "Scenarios".

[scenario]
name = "starter"
description = "CONN_MAX_AGE 0 vs persistent vs Django's pool, at 2 sync workers."
repeats = 4                 # each setting runs 4 times, round-robin: intervals and tests on every figure

[defaults]
dynos = 1                   # gunicorn instances (a simulated Heroku dyno each)
workers = 2                 # gunicorn workers per dyno
worker_class = "sync"       # sync | gthread (with threads = N) | gevent | asgi
users = 8                   # Locust users, closed loop (or arrival_rate = N for the open model)
warmup = 1                  # seconds, not measured
duration = 5                # seconds, measured
cooldown = 1                # seconds, load stopped, connections still counted
max_connections = 100       # the PostgreSQL server's
mix = { read = 1 }          # endpoints: read, write, slow (pg_sleep), health

[matrix]                    # one setting per combination
conn_max_age = [0, "none"]
pooling = ["direct", "django-pool"]
# Django's pool needs CONN_MAX_AGE = 0: the (django-pool, none) combination is pruned, with the reason.

[[expect]]                  # like a k6 threshold: checked after the run, sets the exit code
name = "persistent connections: one per worker"
where = { conn_max_age = "none", pooling = "direct" }
connections = "predicted"
error_rate_max = 0.0
'''


def write_starter(directory: Path, text: str = STARTER) -> Path:
    """Write DIR/connbench.toml; never over an existing file (FileExistsError), never through a symlink."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / STARTER_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return path
