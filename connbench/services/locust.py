"""Locust, headless, as a subprocess: its own CSV, HTML and JSON kept in the cell directory."""

from __future__ import annotations

import csv
import glob
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

from connbench.contract import REQUESTS_COLUMNS, LoadConfig
from connbench.results import CellPaths, write_csv_atomic
from connbench.services.procs import ServiceError, Supervisor, exited, wait_until

LOCUSTFILE = "locustfiles/app.py"
LOGONLY = "locustfiles/logonly.py"  # beside your own locustfile: the raw request log and the start mark


@dataclass(frozen=True)
class LocustConfig:
    users: int
    spawn_rate: float
    run_time_s: int  # warm-up + measure, as one Locust run
    processes: int = 1
    user_class: str | None = "AppUser"  # AppUser: closed model; OpenUser: one per process; None: your file's
    locustfile: str | None = None  # yours: connbench's request log (locustfiles/logonly.py) rides along
    stop_timeout_s: float = 5  # how long users may finish what they are doing when the run time ends


def start(cfg: LocustConfig, load: LoadConfig, sup: Supervisor, paths: CellPaths, root: Path) -> Popen:
    """Run warm-up + measure as one Locust run; it writes load.started_file when the test starts."""
    paths.locust.mkdir(parents=True, exist_ok=True)
    if load.started_file:
        Path(load.started_file).unlink(missing_ok=True)
    cmd = [
        sys.executable, "-m", "locust", "-f",
        f"{cfg.locustfile},{root / LOGONLY}" if cfg.locustfile else str(root / LOCUSTFILE),
        "--headless", "--only-summary",
        "--users", str(cfg.users), "--spawn-rate", str(cfg.spawn_rate),
        "--run-time", f"{cfg.run_time_s}s", "--stop-timeout", f"{cfg.stop_timeout_s:g}",
        "--host", load.targets[0],
        "--csv", str(paths.locust_stats),
        "--html", str(paths.locust_report),
        "--json-file", str(paths.locust_stats),
        "--exit-code-on-error", "0",
        "--loglevel", "WARNING",
        *([cfg.user_class] if cfg.user_class else []),
    ]  # fmt: skip
    if cfg.processes > 1:
        cmd += ["--processes", str(cfg.processes)]
    env = {**os.environ, **load.to_env(), "PYTHONPATH": str(root)}
    return sup.spawn("locust", cmd, log=paths.locust_log, env=env, cwd=root)


def wait_started(proc: Popen, paths: CellPaths, timeout: float = 30.0) -> float:
    """The unix time Locust began its test (written by the locustfile's test_start hook)."""
    log, started = paths.locust_log, paths.locust_started

    def began() -> float | None:
        exited(proc, f"locust, before starting (log: {log}),")
        return float(started.read_text()) if started.exists() and started.stat().st_size else None

    t = wait_until(began, timeout)
    if t is None:
        raise ServiceError(f"locust did not start within {timeout:.0f} s (log: {log})")
    return t


def merge_request_logs(raw_dir: Path, dest: Path) -> int:
    """Merge every Locust process's raw log into one requests.csv, sorted by start time."""
    rows = []
    for path in sorted(glob.glob(str(raw_dir / "requests-*.csv"))):
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
