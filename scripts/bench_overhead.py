"""Measure connbench's own costs (budgets: docs/measurements.md). Not a test: timings need a quiet machine.

  1. the sampler at 100 ms: its own CPU, and the CPU its queries add to PostgreSQL;
  2. the per-request log: Locust's throughput with and without it (A/B, alternated).

Run: .venv/bin/python scripts/bench_overhead.py [--seconds 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connbench.contract import LoadConfig  # noqa: E402
from connbench.results import CellPaths  # noqa: E402
from connbench.run.stack import app_config, django_app, gunicorn_config  # noqa: E402
from connbench.scenario.knobs import Knobs  # noqa: E402
from connbench.scenario.project import Project  # noqa: E402
from connbench.services import gunicorn, locust  # noqa: E402
from connbench.services.postgres import PostgresServer  # noqa: E402
from connbench.services.procs import PrivateDir, Supervisor, remove_service_dir, service_dir, service_user  # noqa: E402


def tree_cpu(pid: int) -> float:
    p = psutil.Process(pid)
    t = p.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for c in p.children(recursive=True):
        try:
            ct = c.cpu_times()
            total += ct.user + ct.system
        except psutil.Error:
            pass
    return total


def cpu_over(pid: int, seconds: float) -> float:
    c0, t0 = tree_cpu(pid), time.monotonic()
    time.sleep(seconds)
    return (tree_cpu(pid) - c0) / (time.monotonic() - t0) * 100


def sampler_cost(server: PostgresServer, sup: Supervisor, tmp: Path, seconds: float) -> dict:
    idle = cpu_over(server.pid, seconds)
    cell = tmp / "cell"
    cell.mkdir()
    (cell / "procs.json").write_text(json.dumps({"postgres": [{"pid": server.pid, "tree": True}]}))
    conf = {"cell_dir": str(cell), "pg": server.conn.super_kwargs(), "app_role": server.conn.app_user,
            "interval": 0.1, "procs_file": str(cell / "procs.json"), "pgbouncer": None}
    conf_path = sup.private.write("sampler.json", json.dumps(conf))
    proc = sup.spawn("sampler", [sys.executable, "-m", "connbench.sampler", str(conf_path)],
                     log=cell / "sampler.log", cwd=ROOT)
    time.sleep(2)
    c0, s0, t0 = tree_cpu(server.pid), tree_cpu(proc.pid), time.monotonic()
    time.sleep(seconds)
    dt = time.monotonic() - t0
    pg_with = (tree_cpu(server.pid) - c0) / dt * 100
    sampler = (tree_cpu(proc.pid) - s0) / dt * 100
    sup.stop(proc)
    rows = sum(1 for _ in open(cell / "db.csv")) - 1
    return {"sampler_cpu_pct_of_core": round(sampler, 2), "postgres_cpu_idle_pct": round(idle, 2),
            "postgres_cpu_with_sampler_pct": round(pg_with, 2),
            "postgres_cpu_added_pct_of_core": round(pg_with - idle, 2),
            "samples_per_s": round(rows / (seconds + 2), 1)}


def locust_rate(k: Knobs, dynos, sup: Supervisor, out: Path, log: bool) -> float:
    """Requests/s Locust achieved, from its own stats (independent of our log)."""
    paths = CellPaths(out)
    load = LoadConfig(targets=[d.url for d in dynos], mix=k.mix.model_dump(), rate=k.rate,
                      request_log_dir=str(paths.locust_raw) if log else None, started_file=str(paths.locust_started))
    cfg = locust.LocustConfig(users=k.users, spawn_rate=k.spawn_rate, run_time_s=max(1, round(k.duration)))
    run = locust.start(cfg, load, sup, paths, ROOT)
    locust.wait_started(run, paths, cfg)
    run.master.wait(timeout=k.duration + 60)
    for proc in run.procs:
        sup.stop(proc)
    stats = [s for s in json.loads(paths.locust_stats.with_suffix(".json").read_text()) if s["num_requests"]]
    total = sum(s["num_requests"] for s in stats)
    span = max(s["last_request_timestamp"] for s in stats) - min(s["start_time"] for s in stats)
    return total / span


def hook_cost_us(n: int = 200_000) -> float:
    """CPU microseconds per call of the request hook alone (buffered CSV row)."""
    from connbench.locustfiles.requestlog import FileSink, RequestLog

    with tempfile.TemporaryDirectory() as d:
        log = RequestLog(FileSink(d))
        t0 = time.process_time()
        for i in range(n):
            log.on_request("GET", "/health", 1.234567 + i, 17, None, {"dyno": 0}, None, time.time())
        log.close()
        return (time.process_time() - t0) / n * 1e6


def server_timing_cost_us(conninfo: dict, n: int = 200_000) -> dict:
    """CPU microseconds per request that Server-Timing's connection ids add: in the app (the backend pid read
    client-side, the thread id, Django's close rule, the longer header) and in Locust (parsing it), each
    against the header without them, on a real psycopg connection."""
    import threading

    import psycopg

    from connbench.contract import parse_server_timing, server_timing_header
    from connbench.target_app.timing import backend_pid, close_due

    class Wrapper:  # the DatabaseWrapper attributes the middleware reads
        autocommit, settings_dict, close_at = True, {"AUTOCOMMIT": True}, None

    w = Wrapper()
    with psycopg.connect(**conninfo) as conn:
        w.connection = conn  # type: ignore[attr-defined]

        def per_request(ids: bool) -> float:
            t0 = time.process_time()
            for _ in range(n):
                if ids:
                    thread = threading.get_native_id()
                    server_timing_header(1.0, 0.0, 2.0, 3.0, False, backend_pid(w), 4242, thread, close_due(w))
                else:
                    server_timing_header(1.0, 0.0, 2.0, 3.0, False)
            return (time.process_time() - t0) / n * 1e6

        app = [per_request(True) - per_request(False) for _ in range(3)]
    header = server_timing_header(1, 0, 2, 3, False, 12345, 4242, 4243, False)
    old = server_timing_header(1, 0, 2, 3, False)

    def parse(h: str) -> float:
        t0 = time.process_time()
        for _ in range(n):
            parse_server_timing(h)
        return (time.process_time() - t0) / n * 1e6

    client = [parse(header) - parse(old) for _ in range(3)]
    return {"app_added_us_per_request": round(statistics.median(app), 2),
            "locust_added_us_per_request": round(statistics.median(client), 2)}


def hazard_cost_us(n: int = 100_000) -> dict:
    """CPU microseconds per statement that the session-state classifier adds in the app's wrapper: an ORM
    statement seen before (Django's SQL text repeats, its parameters apart: the classifier's cache answers), one
    never seen (a new text every time: the full scan), and a hazard (SET without LOCAL, never seen)."""
    from connbench import sqlhazards
    from connbench.target_app.timing import hazards_of

    orm = ('SELECT "bench_item"."id", "bench_item"."name", "bench_item"."value" FROM "bench_item" '
           'WHERE "bench_item"."id" = %s LIMIT 21')
    context: dict = {"cursor": None}

    def per(make) -> float:
        sqls = [make(i) for i in range(n)]
        sqlhazards.classify.cache_clear()
        t0 = time.process_time()
        for sql in sqls:
            hazards_of(sql, context)
        return (time.process_time() - t0) / n * 1e6

    runs = {"repeated_orm": [per(lambda i: orm) for _ in range(3)],
            "new_orm": [per(lambda i: orm.replace("%s", str(i))) for _ in range(3)],
            "new_hazard": [per(lambda i: f"SET statement_timeout = '{i}ms'") for _ in range(3)]}
    return {f"{k}_us_per_statement": round(statistics.median(v), 2) for k, v in runs.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    user = service_user()
    sup = Supervisor(private=PrivateDir(user))
    tmp = Path(tempfile.mkdtemp(prefix="cb-bench-", dir="/var/tmp"))
    os.chmod(tmp, 0o755)
    out: dict = {"method": {}, "host_cpus": psutil.cpu_count()}
    try:
        server = PostgresServer(service_dir(tmp, "pg", user) / "s", 100, sup, user, sup.private,
                                django=django_app(Project()))
        server.start()
        out["sampler"] = sampler_cost(server, sup, tmp, args.seconds)
        out["method"]["sampler"] = (f"idle PostgreSQL 18; {args.seconds:.0f} s without, then {args.seconds:.0f} s "
                                    "with the sampler at 100 ms; CPU from cumulative process-tree cpu_times")
        k = Knobs(dynos=1, workers=2, users=20, spawn_rate=20, warmup=0, duration=args.seconds,
                  mix={"health": 1.0, "read": 0.0})
        dynos = gunicorn.start_dynos(gunicorn_config(k), app_config(k, server.conn.app_database()), sup,
                                     tmp / "logs", django_app(Project()))
        gunicorn.verify(dynos, ("/health",))
        with_log, without = [], []
        for r in range(args.rounds):  # alternate, so drift hits both sides alike
            without.append(locust_rate(k, dynos, sup, tmp / f"off{r}", log=False))
            with_log.append(locust_rate(k, dynos, sup, tmp / f"on{r}", log=True))
        a, b = statistics.median(without), statistics.median(with_log)
        out["request_log"] = {"req_s_without": [round(x) for x in without], "req_s_with": [round(x) for x in with_log],
                              "median_cost_pct": round((a - b) / a * 100, 2), "hook_cpu_us_per_request":
                              round(hook_cost_us(), 2)}
        out["method"]["request_log"] = (f"1 Locust process, 20 FastHttpUsers on /health (no database), 1 dyno x 2 "
                                        f"sync workers; {args.rounds} alternated {args.seconds:.0f} s runs each way; "
                                        "throughput from Locust's own stats.json")
        # after the request log's hook: Locust's gevent patching must come before Django is imported
        out["server_timing_ids"] = server_timing_cost_us(server.conn.app_kwargs())
        out["method"]["server_timing_ids"] = ("200,000 headers with and without backend/worker/thread/close, 3 "
                                              "alternated rounds, median difference of process CPU")
        out["hazard_classifier"] = hazard_cost_us()
        out["method"]["hazard_classifier"] = ("100,000 statements through the wrapper's classifier "
                                              "(target_app.timing.hazards_of), 3 rounds, median of process CPU")
    finally:
        sup.stop_all()
        remove_service_dir(tmp, "pg")
        sup.private.remove()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
