"""What each process spent: cumulative CPU seconds and RSS per component, as raw counters.

A component's CPU is its whole process tree: live members' cpu_times plus the reaped children's
totals the parent accumulates (children_user/system). That counts the many short-lived backends
of CONN_MAX_AGE=0, which per-pid sampling would miss. Rates are analysis's business.
"""

from __future__ import annotations

import json
from collections import defaultdict
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

    def _children_index(self) -> dict[int, list[int]]:
        """ppid -> pids, from one pass over /proc per sample. psutil's Process.children() makes that pass per
        call (1.2 ms at 68 processes here), once per tree root: at 2 Hz, most of the sampler's budget."""
        try:
            ppids = psutil._ppid_map()  # what children() itself reads; private, so a fallback follows
        except (AttributeError, OSError):
            ppids = {p.pid: p.info["ppid"] for p in psutil.process_iter(["ppid"])}
        index: dict[int, list[int]] = defaultdict(list)
        for pid, ppid in ppids.items():
            index[ppid].append(pid)
        # forget the handles of processes gone (CONN_MAX_AGE=0 starts a backend per request)
        self._handles = {pid: h for pid, h in self._handles.items() if pid in ppids}
        return index

    def _descendants(self, index: dict[int, list[int]], pid: int) -> list[psutil.Process]:
        out, stack, seen = [], list(index.get(pid, ())), {pid}
        while stack:
            kid = stack.pop()
            if kid in seen:
                continue
            seen.add(kid)
            try:
                out.append(self._proc(kid))
            except psutil.Error:
                continue
            stack.extend(index.get(kid, ()))
        return out

    def sample(self, now: float) -> list[tuple[object, ...]]:
        self._reload()
        rows: list[tuple[object, ...]] = []
        index = self._children_index() if any(e.get("tree") for es in self.roots.values() for e in es) else {}
        for component, entries in self.roots.items():
            for entry in entries:
                dyno, pid = entry.get("dyno", ""), entry["pid"]
                try:
                    root = self._proc(pid)
                    with root.oneshot():
                        ct = root.cpu_times()
                        total = ct.user + ct.system + ct.children_user + ct.children_system
                        rss = root.memory_info().rss
                    kids = self._descendants(index, pid) if entry.get("tree") else []
                    for kid in kids:
                        try:
                            with kid.oneshot():  # one read of /proc/<pid>/stat for both
                                kct, krss = kid.cpu_times(), kid.memory_info().rss
                            if component.startswith("gunicorn"):
                                # each worker gets its own row too
                                rows.append((now, "gunicorn-worker", dyno, kid.pid,
                                             round(kct.user + kct.system, 4), krss, ""))
                            total += kct.user + kct.system
                            rss += krss
                        except psutil.Error:
                            continue
                except psutil.Error:
                    continue
                rows.append((now, component, dyno, pid, round(total, 4), rss, ""))
        return rows
