"""Each app backend's life and memory (backends.csv): seen, gone, open at stop, and mem every mem_interval.

A backend is keyed by (pid, backend_start), never by pid alone: the OS reuses pids, and at CONN_MAX_AGE=0 a
cell has hundreds of short-lived backends. Memory is read from /proc/<pid>/smaps_rollup, so only when the
server runs on this machine and the sampler may read its processes' files; whether it did is said once, as
events.csv's "memory" event (cell.json's memory).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from connbench.results import CsvAppender
from connbench.sampler.readers import Backend, parse_appname

Key = tuple[int, float]  # (pid, backend_start)
MEASURED = "measured"


@dataclass(slots=True)
class Life:
    dyno: str
    worker: str
    samples: int = 0
    idle_samples: int = 0
    last_t: float = 0.0  # the last sample that showed it


class BackendTracker:
    """The live set, from one sample to the next; its events go to `out` (a CsvAppender of BACKENDS_COLUMNS)."""

    def __init__(self, out: CsvAppender):
        self.out = out
        self.live: dict[Key, Life] = {}

    def update(self, now: float, backends: Iterable[Backend]) -> None:
        """One sample's app backends: "seen" for each new key, "gone" for each live key it no longer shows."""
        present: set[Key] = set()
        for b in backends:
            key = (b.pid, b.backend_start)
            present.add(key)
            life = self.live.get(key)
            if life is None:
                dyno, worker = parse_appname(b.appname)
                life = self.live[key] = Life(dyno, worker)
                self.out.write((now, "seen", b.pid, b.backend_start, dyno, worker, b.state, "", "", "", ""))
            life.samples += 1
            life.idle_samples += b.state == "idle"
            life.last_t = now
        if len(present) != len(self.live):  # the common case at a plateau: nobody went
            for key in [k for k in self.live if k not in present]:
                self._end(now, "gone", key, self.live.pop(key))

    def _end(self, t: float, event: str, key: Key, life: Life) -> None:
        self.out.write((t, event, key[0], key[1], life.dyno, life.worker, "", life.samples, life.idle_samples,
                        "", ""))

    def close(self) -> None:
        """At the sampler's stop: "open" for each backend still live, at its last sample."""
        for key, life in self.live.items():
            self._end(life.last_t, "open", key, life)
        self.live = {}


def parse_rollup(text: bytes) -> tuple[int, int]:
    """smaps_rollup's (Pss, Rss) in bytes (the file says kB: KiB)."""
    pss = rss = -1
    for line in text.splitlines():
        if line.startswith(b"Rss:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith(b"Pss:"):
            pss = int(line.split()[1]) * 1024
        if pss >= 0 and rss >= 0:
            break
    if pss < 0 or rss < 0:
        raise ValueError("smaps_rollup without Pss: or Rss:")
    return pss, rss


def read_rollup(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
        return parse_rollup(fh.read())


def memory_verdict(local: bool, server_pid: int) -> str:
    """Whether backends' memory can be read: MEASURED, or "not measured: <why>". server_pid: a backend of the
    server (the sampler's own session's), which runs as the server's user like the app's backends."""
    if not local:
        return "not measured: not a server connbench runs on this machine (--database-url)"
    path = Path(f"/proc/{server_pid}")
    try:
        if (path / "comm").read_text().strip() != "postgres":  # another pid namespace: a stranger's pid
            return f"not measured: pid {server_pid} here is not the server's backend (another pid namespace?)"
        read_rollup(server_pid)
    except PermissionError:
        return f"not measured: {path}/smaps_rollup is not readable by uid {os.geteuid()} (no CAP_SYS_PTRACE?)"
    except FileNotFoundError:
        return f"not measured: no {path}/smaps_rollup (another pid namespace, or a Linux before 4.14)"
    except (OSError, ValueError) as e:
        return f"not measured: {path}/smaps_rollup: {type(e).__name__}"
    return MEASURED


def write_memory(now: float, tracker: BackendTracker, out: CsvAppender) -> None:
    """A "mem" row per live app backend. One that has gone since the sample is skipped (its pid could only be
    reused by the OS in the microseconds since, and then by another backend of the same server)."""
    for (pid, start), life in tracker.live.items():
        try:
            pss, rss = read_rollup(pid)
        except (OSError, ValueError):
            continue
        out.write((now, "mem", pid, start, life.dyno, life.worker, "", "", "", pss, rss))
