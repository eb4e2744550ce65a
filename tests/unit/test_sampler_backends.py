"""The sampler's backend tracker on synthetic samples, written through the real writer, and the smaps_rollup
parser on a real file."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from connbench.results import BACKEND_EVENTS, BACKENDS_COLUMNS, CsvAppender
from connbench.sampler.backends import BackendTracker, memory_verdict, parse_rollup, read_rollup, write_memory
from connbench.sampler.readers import Backend, groups_of


def be(pid: int, start: float, state: str = "idle", name: str = "cb:d0:w1", app: bool = True) -> Backend:
    return Backend(pid, start, name, state, app, False)


def track(tmp_path: Path, samples: list[tuple[float, list[Backend]]]) -> list[dict[str, str]]:
    """Run the tracker over the samples, stop it, and read backends.csv back."""
    out = CsvAppender(tmp_path / "backends.csv", BACKENDS_COLUMNS)
    tracker = BackendTracker(out)
    for t, rows in samples:
        tracker.update(t, rows)
    tracker.close()
    out.close()
    with open(tmp_path / "backends.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == BACKENDS_COLUMNS
        rows = list(reader)
    assert {r["event"] for r in rows} <= set(BACKEND_EVENTS)
    return rows


def test_a_reused_pid_is_two_lives(tmp_path):
    # pid 42 lives, goes, and the OS gives it to a new backend in the same cell
    rows = track(tmp_path, [
        (100.0, [be(42, 99.5)]),
        (100.1, [be(42, 99.5, "active")]),
        (100.2, []),
        (100.3, [be(42, 100.25, "active", "cb:d1:w0")]),
    ])
    assert [(r["event"], r["t"], r["backend_start"]) for r in rows] == [
        ("seen", "100.0", "99.5"), ("gone", "100.2", "99.5"), ("seen", "100.3", "100.25"),
        ("open", "100.3", "100.25")]
    first, gone, second, still = rows
    assert (first["dyno"], first["worker"], first["state"]) == ("0", "1", "idle")
    assert (second["dyno"], second["worker"], second["state"]) == ("1", "0", "active")
    assert (gone["samples"], gone["idle_samples"]) == ("2", "1")
    assert (still["samples"], still["idle_samples"]) == ("1", "0")


def test_a_pid_reused_between_two_samples_is_gone_and_seen_at_once(tmp_path):
    rows = track(tmp_path, [(1.0, [be(7, 0.5)]), (1.1, [be(7, 1.05)])])
    assert [(r["event"], r["backend_start"]) for r in rows] == [
        ("seen", "0.5"), ("seen", "1.05"), ("gone", "0.5"), ("open", "1.05")]


def test_idle_counting_and_open_at_its_last_sample(tmp_path):
    states = ["active", "idle", "idle in transaction", "idle", "active"]
    other = [be(9, 0.1, "idle", "")]  # an unattributed backend: tracked, no dyno or worker
    rows = track(tmp_path, [(10.0 + i / 10, [be(5, 9.0, s)] + (other if i < 2 else [])) for i, s in enumerate(states)])
    by = {(r["pid"], r["event"]): r for r in rows}
    assert (by["5", "open"]["samples"], by["5", "open"]["idle_samples"]) == ("5", "2")  # "idle" only
    assert by["5", "open"]["t"] == "10.4"  # its last sample
    assert (by["9", "seen"]["dyno"], by["9", "seen"]["worker"]) == ("", "")
    assert by["9", "gone"]["t"] == "10.2" and by["9", "gone"]["samples"] == "2"
    assert ("9", "open") not in by
    assert len([r for r in rows if r["event"] == "seen"]) == 2  # once per life, not per sample


def test_groups_count_every_client_backend_as_the_breakdown_query_did():
    rows = [be(1, 1.0), be(2, 2.0), be(3, 3.0, "active"), be(4, 4.0, "", "psql", app=False)]
    assert sorted(groups_of(rows)) == [("cb:d0:w1", "active", 1), ("cb:d0:w1", "idle", 2), ("psql", "", 1)]
    assert groups_of([]) == []


def test_rollup_of_a_real_process():
    pss, rss = read_rollup(os.getpid())
    assert 0 < pss <= rss
    text = Path("/proc/self/smaps_rollup").read_bytes()
    pss, rss = parse_rollup(text)
    assert 0 < pss <= rss
    assert rss % 1024 == 0 and pss % 1024 == 0  # kB in the file, bytes out


def test_rollup_without_its_lines_is_an_error():
    with pytest.raises(ValueError):
        parse_rollup(b"Rss: 12 kB\n")


def test_mem_rows_for_live_backends_skip_the_gone(tmp_path):
    out = CsvAppender(tmp_path / "backends.csv", BACKENDS_COLUMNS)
    tracker = BackendTracker(out)
    tracker.update(5.0, [be(os.getpid(), 1.0), be(2**22 + 1, 2.0)])  # the second: above pid_max, no such process
    write_memory(5.0, tracker, out)
    out.close()
    with open(tmp_path / "backends.csv", newline="") as fh:
        mem = [r for r in csv.DictReader(fh) if r["event"] == "mem"]
    assert len(mem) == 1 and mem[0]["pid"] == str(os.getpid()) and mem[0]["backend_start"] == "1.0"
    assert 0 < int(mem[0]["pss_bytes"]) <= int(mem[0]["rss_bytes"])


def test_memory_verdict_says_why_not():
    assert memory_verdict(False, os.getpid()) == \
        "not measured: not a server connbench runs on this machine (--database-url)"
    # this process is no postgres: a pid of another namespace would look like this
    assert memory_verdict(True, os.getpid()).startswith("not measured: pid ")
    assert memory_verdict(True, 2**22 + 1).startswith("not measured: no /proc/")
