"""Locust, headless, as a subprocess: its own CSV, HTML and JSON kept in the cell directory."""

from __future__ import annotations

import csv
import glob
import json
import os
import sys
import time
from pathlib import Path
from subprocess import Popen

from connbench.results import REQUESTS_COLUMNS, write_csv_atomic
from connbench.services.procs import ServiceError, Supervisor
from connbench.spec import Knobs

LOCUSTFILE = "locustfiles/app.py"


def start(k: Knobs, targets: list[str], sup: Supervisor, out_dir: Path, root: Path,
          processes: int = 1, request_log: bool = True) -> tuple[Popen, Path]:
    """Run warm-up + measure as one Locust run; returns the process and its start-marker file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    started = out_dir / "started"
    started.unlink(missing_ok=True)
    run_time = max(1, round(k.warmup + k.duration))
    cmd = [
        sys.executable, "-m", "locust", "-f", str(root / LOCUSTFILE),
        "--headless", "--only-summary",
        "--users", str(k.users), "--spawn-rate", str(k.spawn_rate),
        "--run-time", f"{run_time}s", "--stop-timeout", "5",
        "--host", targets[0],
        "--csv", str(out_dir / "stats"),
        "--html", str(out_dir / "report.html"),
        "--json-file", str(out_dir / "stats"),
        "--exit-code-on-error", "0",
        "--loglevel", "WARNING",
    ]
    if processes > 1:
        cmd += ["--processes", str(processes)]
    env = {
        **os.environ,
        "CONNBENCH_ROOT": str(root),
        "CONNBENCH_TARGETS": ",".join(targets),
        "CONNBENCH_MIX": json.dumps(k.mix.model_dump()),
        "CONNBENCH_RATE": "" if k.rate is None else str(k.rate),
        "CONNBENCH_REQUEST_LOG_DIR": str(out_dir / "raw"),
        "CONNBENCH_STARTED_FILE": str(started),
    }
    if not request_log:  # only for measuring the log's own cost (scripts/bench_overhead.py)
        env.pop("CONNBENCH_REQUEST_LOG_DIR")
    proc = sup.spawn("locust", cmd, log=out_dir / "locust.log", env=env, cwd=root)
    return proc, started


def wait_started(proc: Popen, started: Path, timeout: float = 30.0) -> float:
    """The unix time Locust began its test (written by the locustfile's test_start hook)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if started.exists() and started.stat().st_size:
            return float(started.read_text())
        if proc.poll() is not None:
            raise ServiceError(f"locust exited with code {proc.returncode} before starting "
                               f"(log: {started.parent / 'locust.log'})")
        time.sleep(0.05)
    raise ServiceError(f"locust did not start within {timeout:.0f} s (log: {started.parent / 'locust.log'})")


def merge_request_logs(out_dir: Path, dest: Path) -> int:
    """Merge every Locust process's raw log into one requests.csv, sorted by start time."""
    rows = []
    for path in sorted(glob.glob(str(out_dir / "raw" / "requests-*.csv"))):
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                continue
            if tuple(header) != REQUESTS_COLUMNS:
                raise ServiceError(f"{path}: unexpected columns {header}")
            rows.extend(r for r in reader if len(r) == len(REQUESTS_COLUMNS))
    rows.sort(key=lambda r: float(r[0]))
    write_csv_atomic(dest, REQUESTS_COLUMNS, rows)
    return len(rows)
