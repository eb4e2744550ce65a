"""What the open-model dispatcher costs, and the highest rate it holds on this machine.

For each offered rate, one Locust process (one OpenUser) sends a uniform schedule to target_app's
/health (no database) served by 1 dyno x 2 sync workers, and the raw request log gives the schedule
lag (t_start - t_intended) and Locust's CPU per request. The highest rate whose lag p99 stays under
10 ms is the one docs/measurements.md quotes.   Usage: python scripts/bench_dispatcher.py [--seconds 6]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connbench.contract import AppConfig, Database, LoadConfig  # noqa: E402
from connbench.results import CellPaths  # noqa: E402
from connbench.run.stack import django_app  # noqa: E402
from connbench.scenario.project import Project  # noqa: E402
from connbench.services import gunicorn, locust  # noqa: E402
from connbench.services.procs import Supervisor  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_overhead import tree_cpu  # noqa: E402 - the same process-tree CPU reading

RATES = (100, 200, 400, 600, 800, 1000, 1200, 1600)


def one_rate(rate: float, seconds: float, dynos, sup: Supervisor, out: Path) -> dict:
    paths = CellPaths(out)
    load = LoadConfig(targets=[d.url for d in dynos], mix={"health": 1.0}, rate=None,
                      request_log_dir=str(paths.locust_raw), started_file=str(paths.locust_started),
                      arrival_rate=rate, arrival="uniform", max_in_flight=1000, schedule_s=seconds, drain_s=5)
    cfg = locust.LocustConfig(users=1, spawn_rate=1, run_time_s=round(seconds), user_class="OpenUser",
                              stop_timeout_s=10)
    proc = locust.start(cfg, load, sup, paths, ROOT)
    locust.wait_started(proc, paths)
    cpu0 = tree_cpu(proc.pid)
    last = cpu0
    while proc.poll() is None:  # cumulative CPU, read until the process is gone
        try:
            last = tree_cpu(proc.pid)
        except psutil.Error:
            break
        time.sleep(0.2)
    sup.stop(proc)
    n = locust.merge_request_logs(paths.locust_raw, paths.requests)
    with open(paths.requests, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["error_class"] == ""]
    lag = sorted((float(r["t_start"]) - float(r["t_intended"])) * 1000 for r in rows)
    p99 = lag[min(len(lag) - 1, int(0.99 * (len(lag) - 1) + 0.5))] if lag else float("nan")
    return {"offered_rps": rate, "requests": n, "ok": len(rows), "lag_p99_ms": round(p99, 2),
            "locust_cpu_us_per_request": round((last - cpu0) / max(1, n) * 1e6, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=6)
    args = ap.parse_args()
    sup = Supervisor()
    tmp = Path(tempfile.mkdtemp(prefix="cb-dispatch-"))
    app = AppConfig(db=Database("127.0.0.1", 9, "none", "none", ""), conn_max_age=0, health_checks=False,
                    pooling="direct")  # /health touches no database
    results = []
    try:
        dynos = gunicorn.start_dynos(gunicorn.GunicornConfig(1, 2, 1, "sync", 100), app, sup, tmp / "logs",
                                     django_app(Project()))
        gunicorn.verify(dynos, ("/health",))
        for rate in RATES:
            r = one_rate(rate, args.seconds, dynos, sup, tmp / f"r{rate}")
            results.append(r)
            print(json.dumps(r), file=sys.stderr)
    finally:
        sup.stop_all()
    held = [r["offered_rps"] for r in results if r["lag_p99_ms"] < 10 and r["ok"] >= 0.95 * r["requests"]]
    print(json.dumps({"method": f"1 Locust process, OpenUser, uniform schedule, {args.seconds:g} s per rate, "
                                "/health on 1 dyno x 2 sync workers; lag = t_start - t_intended",
                      "results": results, "highest_rate_with_lag_p99_under_10ms": max(held, default=None)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
