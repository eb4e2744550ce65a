"""The sampler's process reader on a real process tree: a parent whose child burns CPU, read as one component
(the tree summed) with a row per direct or deeper descendant of a gunicorn root; the handle of a gone
process is dropped."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psutil

from connbench.sampler.processes import ProcessReader

# parent -> child -> grandchild; the grandchild spins for 0.3 s of CPU, then every one sleeps
TREE = ("import subprocess, sys, time\n"
        "depth = int(sys.argv[1])\n"
        "if depth: subprocess.Popen([sys.executable, '-c', sys.argv[2], str(depth - 1), sys.argv[2]])\n"
        "else:\n"
        "    t = time.process_time()\n"
        "    while time.process_time() - t < 0.3: pass\n"
        "time.sleep(30)\n")


def test_a_tree_is_summed_and_each_descendant_of_gunicorn_has_its_row(tmp_path):
    root = subprocess.Popen([sys.executable, "-c", TREE, "2", TREE])
    kids: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            kids = psutil.Process(root.pid).children(recursive=True)
            if len(kids) == 2 and sum(k.cpu_times().user + k.cpu_times().system for k in kids) >= 0.3:
                break
            time.sleep(0.05)
        procs = tmp_path / "procs.json"
        procs.write_text(json.dumps({"gunicorn-d0": [{"pid": root.pid, "dyno": 0, "tree": True}]}))
        reader = ProcessReader(procs)
        rows = reader.sample(1.0)
        workers = [r for r in rows if r[1] == "gunicorn-worker"]
        (total,) = [r for r in rows if r[1] == "gunicorn-d0"]
        assert {r[3] for r in workers} == {k.pid for k in kids}
        assert total[4] >= 0.3 and total[4] >= sum(r[4] for r in workers)  # the tree's CPU, spinner included
        assert set(reader._handles) >= {k.pid for k in kids}
        root.kill()
        root.wait(timeout=5)  # ours to reap: gone from /proc at once (its orphans are killed below)
        reader.sample(2.0)
        assert root.pid not in reader._handles  # gone: forgotten
    finally:
        for p in [*kids, *psutil.Process().children(recursive=True)]:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
