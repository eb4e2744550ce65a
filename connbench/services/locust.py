"""Locust, headless, as a subprocess: its own CSV, HTML and JSON kept in the cell directory."""

from __future__ import annotations

import csv
import glob
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from subprocess import Popen

from connbench.contract import (
    GENERATOR_ENV,
    GENERATOR_EVENTS_FILE,
    GENERATORS_COLUMNS,
    GENERATORS_FILE,
    LOAD_ENV,
    REQUESTS_COLUMNS,
    LoadConfig,
)
from connbench.results import PROCESSES_COLUMNS, CellPaths, write_csv_atomic
from connbench.services.procs import ServiceError, Supervisor, exited, free_port, wait_until

LOCUSTFILE = "connbench/locustfiles/app.py"  # under root: the checkout, or site-packages when installed
LOGONLY = "connbench/locustfiles/logonly.py"  # beside your own locustfile: the raw request log and the start mark


@dataclass(frozen=True)
class LocustConfig:
    users: int
    spawn_rate: float
    run_time_s: int  # warm-up + measure, as one Locust run
    user_class: str | None = "AppUser"  # AppUser: closed model; OpenUser: one per process; None: your file's
    locustfile: str | None = None  # yours: connbench's request log (locustfiles/logonly.py) rides along
    stop_timeout_s: float = 5  # how long users may finish what they are doing when the run time ends
    # Locust's master/worker mode ([generator]): the master waits for expect_workers, local_workers of them
    # started here; 0: one Locust process.
    expect_workers: int = 0
    local_workers: int = 0
    bind: str = "127.0.0.1"
    port: int = 0
    wait_s: float = 60.0


@dataclass
class LocustRun:
    """The processes of one Locust run: the master (or the only process) and the workers started here."""

    master: Popen[bytes]
    workers: list[Popen[bytes]] = field(default_factory=list)
    address: str = ""  # the master's HOST:PORT, for `connbench worker --master`

    @property
    def procs(self) -> list[Popen[bytes]]:
        return [self.master, *self.workers]


def locustfiles(locustfile: str | None, root: Path) -> str:
    """Locust's -f: connbench's, or yours with connbench's request log beside it."""
    return f"{locustfile},{root / LOGONLY}" if locustfile else str(root / LOCUSTFILE)


def worker_command(master: str, locustfile: str | None, root: Path) -> list[str]:
    """A Locust worker of the master at HOST:PORT: its settings come from the master when the test starts."""
    host, _, port = master.rpartition(":")
    return [sys.executable, "-m", "locust", "-f", locustfiles(locustfile, root), "--worker",
            "--master-host", host.strip("[]"), "--master-port", port, "--loglevel", "WARNING"]


def start(cfg: LocustConfig, load: LoadConfig, sup: Supervisor, paths: CellPaths, root: Path) -> LocustRun:
    """Run warm-up + measure as one Locust run; it writes load.started_file when the test starts."""
    paths.locust.mkdir(parents=True, exist_ok=True)
    if load.started_file:
        Path(load.started_file).unlink(missing_ok=True)
    cmd = [
        sys.executable, "-m", "locust", "-f", locustfiles(cfg.locustfile, root),
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
    if cfg.expect_workers:  # a master: it ends the run itself, waiting for its workers
        i = cmd.index("--run-time")
        del cmd[i:i + 2]
        load = replace(load, run_time_s=float(cfg.run_time_s))
    env = {**os.environ, **load.to_env(), "PYTHONPATH": str(root)}
    if not cfg.expect_workers:
        return LocustRun(sup.spawn("locust", cmd, log=paths.locust_log, env=env, cwd=root))
    port = cfg.port or free_port(cfg.bind)
    cmd[cmd.index("WARNING")] = "INFO"  # the master says how many workers joined, and which it lost
    cmd += ["--master", "--master-bind-host", cfg.bind, "--master-bind-port", str(port),
            "--expect-workers", str(cfg.expect_workers), "--expect-workers-max-wait", f"{cfg.wait_s:g}"]
    run = LocustRun(sup.spawn("locust", cmd, log=paths.locust_log, env=env, cwd=root),
                    address=f"[{cfg.bind}]:{port}" if ":" in cfg.bind else f"{cfg.bind}:{port}")
    # a worker's settings are the master's, and its name the master's too (by its share)
    worker_env = {k: v for k, v in env.items() if k not in (LOAD_ENV, GENERATOR_ENV)}
    try:
        for i in range(cfg.local_workers):
            run.workers.append(sup.spawn(f"locust-worker-{i}", worker_command(run.address, cfg.locustfile, root),
                                         log=paths.locust / f"worker-{i}.log", env=worker_env, cwd=root))
    except BaseException:
        for proc in run.procs:
            sup.stop(proc, timeout=5)
        raise
    return run


def wait_started(run: LocustRun, paths: CellPaths, cfg: LocustConfig) -> float:
    """The unix time Locust began its test (written by the locustfile's test_start hook)."""
    log, started = paths.locust_log, paths.locust_started
    timeout = 30.0 + (cfg.wait_s if cfg.expect_workers else 0.0)

    def began() -> float | None:
        if any(w.poll() is not None for w in run.workers):  # a master giving up quits its workers first
            wait_until(lambda: run.master.poll() is not None, 3.0)
        if run.master.poll() is not None and cfg.expect_workers and "Gave up waiting for workers" in _text(log):
            raise ServiceError(f"the Locust master gave up waiting for its {cfg.expect_workers} workers after "
                               f"{cfg.wait_s:g} s ([generator] wait_s): {_connected(log, cfg.expect_workers)} connected"
                               + (f"; start each remote one with `connbench worker --master {run.address}`"
                                  if cfg.expect_workers > cfg.local_workers else "")
                               + f" (logs: {paths.locust})")
        exited(run.master, f"locust, before starting (log: {log}),")
        for i, worker in enumerate(run.workers):
            exited(worker, f"locust worker {i}, before the test started (log: {paths.locust / f'worker-{i}.log'}),")
        return float(started.read_text()) if started.exists() and started.stat().st_size else None

    t = wait_until(began, timeout)
    if t is None:
        raise ServiceError(f"locust did not start within {timeout:.0f} s (log: {log})")
    return t


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _connected(log: Path, expected: int) -> str:
    """How many workers had connected, from the master's last word on it (it logs each one ready)."""
    found = re.findall(r"(\d+) (?:of \d+ connected|workers connected)", _text(log))
    return f"{found[-1]} of {expected}" if found else f"0 of {expected}"


def generator_events(paths: CellPaths, seen: int) -> list[tuple[float, str, str]]:
    """What the master said of its workers (its generator-events.csv), after the first `seen`."""
    path = paths.locust_raw / GENERATOR_EVENTS_FILE
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = [r for r in list(csv.reader(fh))[1:] if len(r) == 3]
    except OSError:
        return []
    out = []
    for t, kind, detail in rows[seen:]:
        try:
            out.append((float(t), kind, detail))
        except ValueError:
            break  # a line still being written: read next time
    return out


def merge_request_logs(raw_dir: Path, dest: Path) -> int:
    """Merge every Locust process's raw log into one requests.csv, sorted by start time."""
    rows: list[list[str]] = []
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


def merge_generators(paths: CellPaths) -> int:
    """The workers' own CPU (the master's generators.csv) into processes.csv as component locust-worker.
    Called once the sampler has stopped: processes.csv is then complete, and rewritten whole."""
    src = paths.locust_raw / GENERATORS_FILE
    try:
        with open(src, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = tuple(next(reader, ()))
            mine = [r for r in reader if len(r) == len(GENERATORS_COLUMNS)] if header == GENERATORS_COLUMNS else []
    except OSError:
        mine = []  # no master
    if not mine:
        return 0  # or one killed before its first report: nothing to add
    named = dict(zip(GENERATORS_COLUMNS, range(len(GENERATORS_COLUMNS)), strict=True))
    # on the master's clock (this machine's, the measure window's), not the worker's: a remote clock may be off
    extra = [(r[named["t_master"]], "locust-worker", "", r[named["pid"]], r[named["cpu_seconds"]],
              r[named["rss_bytes"]], r[named["generator"]]) for r in mine]
    rows: list[Sequence[str]] = []
    if paths.processes.exists():
        with open(paths.processes, newline="", encoding="utf-8") as fh:
            rows = [r for r in list(csv.reader(fh))[1:] if len(r) == len(PROCESSES_COLUMNS)]
    write_csv_atomic(paths.processes, PROCESSES_COLUMNS, sorted([*rows, *extra], key=lambda r: float(r[0])))
    return len(extra)
