"""What each process spent: cumulative CPU seconds and RSS per component, as raw counters.

A component's CPU is its whole process tree: live members' cpu_times plus the reaped children's
totals the parent accumulates (children_user/system). That counts the many short-lived backends
of CONN_MAX_AGE=0, which per-pid sampling would miss. Rates are analysis's business.
"""

from __future__ import annotations

import json
from pathlib import Path

import psutil

from connbench.results import ProcRoot


class ProcessReader:
    """Cumulative CPU seconds per component (and per gunicorn worker), children included."""

    def __init__(self, procs_file: Path, fixed: dict[str, list[ProcRoot]] | None = None):
        self.procs_file = procs_file
        self._mtime = 0.0
        self.fixed = fixed or {}  # roots that are not in procs.json (the sampler itself)
        self.roots: dict[str, list[ProcRoot]] = dict(self.fixed)
        self._handles: dict[int, psutil.Process] = {}

    def _reload(self) -> None:
        try:
            mtime = self.procs_file.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime != self._mtime:
            self._mtime = mtime
            self.roots = {**json.loads(self.procs_file.read_text()), **self.fixed}

    def _proc(self, pid: int) -> psutil.Process:
        p = self._handles.get(pid)
        if p is None or not p.is_running():
            p = self._handles[pid] = psutil.Process(pid)
        return p

    def sample(self, now: float) -> list[tuple[object, ...]]:
        self._reload()
        rows: list[tuple[object, ...]] = []
        for component, entries in self.roots.items():
            for entry in entries:
                dyno, pid = entry.get("dyno", ""), entry["pid"]
                try:
                    root = self._proc(pid)
                    with root.oneshot():
                        ct = root.cpu_times()
                        total = ct.user + ct.system + ct.children_user + ct.children_system
                        rss = root.memory_info().rss
                    kids = root.children(recursive=True) if entry.get("tree") else []
                    for kid in kids:
                        try:
                            kct = kid.cpu_times()
                            if component.startswith("gunicorn"):
                                # each worker gets its own row too
                                rows.append((now, "gunicorn-worker", dyno, kid.pid,
                                             round(kct.user + kct.system, 4), kid.memory_info().rss, ""))
                            total += kct.user + kct.system
                            rss += kid.memory_info().rss
                        except psutil.Error:
                            continue
                except psutil.Error:
                    continue
                rows.append((now, component, dyno, pid, round(total, 4), rss, ""))
        return rows
