"""Every error connbench reports to its user, and the exit code each carries.

The CLI prints one line for any ConnbenchError and exits with its code: no error of connbench's own
reaches the user as a traceback. Standard library only: the app and the locustfile may raise them too.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # something ran and failed (a cell, a component, a threshold)
EXIT_USAGE = 2  # bad input, found before anything started
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM: every process stopped


class ConnbenchError(Exception):
    """An error with a message a user can act on."""

    exit_code = EXIT_FAILED


class UsageError(ConnbenchError):
    """Input that cannot run (a file, a key, a flag); raised before anything starts."""

    exit_code = EXIT_USAGE


class ScenarioError(UsageError):
    """A scenario that cannot run; the message says where and what is allowed."""


class ComponentError(ConnbenchError):
    """A real component (PostgreSQL, PgBouncer, gunicorn, Locust) or a file it wrote failed."""
