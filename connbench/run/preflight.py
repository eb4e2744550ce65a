"""Before any cell starts: can this machine run the services at all? If not, one line and exit 2, no cell.

Each check is a step that passes or fails with a fix. It runs what the cells will run, as the user
they will run it as (`postgres --version` as the service user, `test -x` on the directories), so a
failure here is the failure every cell would have had, said once.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from connbench.errors import UsageError
from connbench.services.postgres import pg_bin_dir, system_bin_dir
from connbench.services.procs import RunAs, ServiceError, can_reach, private_root, service_user
from connbench.services.reachable import UnreachableError, ensure_cache


class PreflightError(UsageError):
    """The machine cannot run the scenario; the message is one line saying what and how to fix it."""


class _AsUser(TypedDict, total=False):
    """subprocess.run's arguments that run a command as the service user (none: as this one)."""

    user: int
    group: int
    extra_groups: list[int]


@dataclass(frozen=True)
class Ready:
    user: RunAs | None  # the service user PostgreSQL and PgBouncer run as; None when we are not root
    pg_bins: dict[str, Path]  # server kind -> binaries the service user can run


def preflight(run_root: Path, server_kinds: set[str], local_server: bool) -> Ready:
    """`server_kinds`: the kinds of PostgreSQL the cells start ("embedded", "system"), when `local_server`."""
    try:
        who = service_user()
    except ServiceError as e:
        raise PreflightError(str(e)) from None
    bins: dict[str, Path] = {}
    if local_server:
        for kind in sorted(server_kinds):
            if kind == "system" and system_bin_dir() is None:
                continue  # those cells are skipped, each saying why: no reason to run none
            bins[kind] = _runnable_postgres(kind, who)
    if who is not None:
        run_root = Path(run_root).resolve()
        parent = next((p for p in (run_root, *run_root.parents) if p.exists()), Path("/"))
        if not can_reach(parent, who):  # the services' data then lives in the cache
            try:
                ensure_cache(who)
            except UnreachableError as e:
                raise PreflightError(f"{run_root} is out of the service user's reach, and {e}") from None
        try:
            private_root(who)
        except ServiceError as e:
            raise PreflightError(str(e)) from None
    return Ready(who, bins)


def _runnable_postgres(kind: str, who: RunAs | None) -> Path:
    try:
        bins = pg_bin_dir(kind, who)
    except ServiceError as e:
        raise PreflightError(str(e)) from None
    cmd = [str(bins / "postgres"), "--version"]
    as_user: _AsUser = {"user": who.uid, "group": who.gid, "extra_groups": []} if who else {}
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30, **as_user)
        why = res.stderr.strip()[-300:] if res.returncode else ""
    except (OSError, subprocess.TimeoutExpired) as e:
        why = str(e)
    if why:
        who_s = f"the service user '{who.name}'" if who else "this user"
        raise PreflightError(f"{cmd[0]} cannot be run by {who_s} ({why}); reinstall connbench "
                             "(`make bootstrap`) or check that directory's permissions")
    return bins
