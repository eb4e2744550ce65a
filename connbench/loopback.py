"""The loopback rule: servers bind to loopback addresses and load goes to loopback addresses only.
Anything else needs the user to say so (--allow-remote, or allow_remote = true in the scenario)."""
from __future__ import annotations

import ipaddress

from connbench.errors import UsageError


class RemoteTargetError(UsageError):
    """A non-loopback address given without the flag that allows it."""


def is_loopback(host: str | None) -> bool:
    """127.0.0.0/8, ::1 (bracketed or not) or localhost."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_local(host: str | None) -> bool:
    """A database host that stays on this machine: loopback, or none / a directory (a Unix socket)."""
    return not host or host.startswith("/") or is_loopback(host)


def require_local(what: str, host: str | None, allow_remote: bool, flag: str, purpose: str) -> None:
    """Raise unless host is local or allow_remote; the message names what, the host and the flag."""
    if not is_local(host) and not allow_remote:
        raise RemoteTargetError(f"{what} points at {host!r}, which is not a loopback address; pass {flag} "
                                f"to {purpose} on purpose")
