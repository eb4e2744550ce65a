"""After a SIGKILLed harness: stop what it left running for this run, and nothing else.

`run --resume` calls cleanup_recorded once the directory is proven a run (matrix.check_resumable).
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import psutil

from connbench.services.procs import RUN_ENV, _group_members, _killpg, _marked_groups, _wait_group_gone


def _belongs(pgid: int, create_time: float, run_mark: str) -> bool:
    """The recorded leader is still the process we started for this run (not a reused pid)."""
    try:
        leader = psutil.Process(pgid)
        return bool(abs(leader.create_time() - create_time) < 0.01 and leader.environ().get(RUN_ENV) == run_mark)
    except (psutil.Error, OSError):
        return False


def cleanup_recorded(pids_file: Path) -> list[str]:
    """Stop process groups a previous harness of this run left behind (it was SIGKILLed).

    Only groups whose leader has the recorded start time and carries this run's mark in its
    environment are signalled, and groups led by any process with that mark (one spawned just before
    the kill, not yet recorded); anything else is left alone.
    """
    if not pids_file.is_file() or pids_file.is_symlink():
        return []
    run_mark = str(pids_file.parent.resolve())
    try:
        doc = json.loads(pids_file.read_text() or "{}")
    except (ValueError, OSError):
        return []
    if not isinstance(doc, dict) or doc.get("run") != run_mark:
        return []
    groups: dict[int, str] = {}
    for e in doc.get("processes") or []:
        try:
            pgid, created, name = int(e["pgid"]), float(e["create_time"]), str(e["name"])[:40]
        except (KeyError, TypeError, ValueError):
            continue
        if pgid > 1 and _belongs(pgid, created, run_mark):
            groups[pgid] = name
    # A process spawned a moment before the SIGKILL may never have reached pids.json: its mark finds it.
    for pgid, name in _marked_groups(run_mark).items():
        groups.setdefault(pgid, name)
    killed = []
    for pgid, name in groups.items():
        if not _group_members(pgid):
            continue
        _killpg(pgid, signal.SIGTERM)
        _wait_group_gone(pgid, 5.0)
        _killpg(pgid, signal.SIGKILL)
        _wait_group_gone(pgid, 5.0)
        killed.append(f"{name} (pgid {pgid})")
    private = doc.get("private_dir")
    if isinstance(private, str) and Path(private).name.startswith("connbench-private-"):
        shutil.rmtree(private, ignore_errors=True)  # credentials of the killed run
    pids_file.unlink(missing_ok=True)
    return killed
