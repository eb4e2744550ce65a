"""The connection slots the app's role gets on a server: what PostgreSQL and the harness leave it.

The harness's own sessions are accounted so the app's role gets exactly max_connections - 2 on a server
connbench started: PostgreSQL lets a superuser take a general slot first (reserved slots are only the last
ones), so the sampler's one superuser session occupies a general slot; one more slot is reserved for
superusers so fault injection can always connect, even to a full server.
"""
from __future__ import annotations

SUPERUSER_RESERVED = 1
HARNESS_SESSIONS = 1


def app_slots(max_connections: int, reserved: int = SUPERUSER_RESERVED,
              harness_sessions: int = HARNESS_SESSIONS) -> int:
    """Connections the app's role can open: what is not reserved for superusers nor held by the harness
    (its one session takes a general slot even as a superuser). Defaults: a server the harness started."""
    return max_connections - reserved - harness_sessions
