"""`connbench worker`: a Locust worker joining a run's master, on this machine or another."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    w = sub.add_parser("worker", help="a Locust worker joining a run's master (on this machine or another)")
    w.add_argument("--master", required=True, help="HOST:PORT: the scenario's [generator] bind and port")
    w.add_argument("--name", help="this worker's name in requests.csv (default: host-pid)")
    w.add_argument("--locustfile", help="the scenario's [load] locustfile, if it has one")
    w.add_argument("--once", action="store_true", help="exit after one test (default: join each cell's master)")
    w.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --master")
    w.add_argument("--reports", default="reports", help="its logs go to REPORTS/workers (default: reports)")
    w.set_defaults(func=worker)


def worker(args: argparse.Namespace, console: Console) -> int:
    from connbench.run.worker import run

    return run(args.master, args.name, args.locustfile, args.once, args.allow_remote, console.print,
               Path(args.reports) / "workers")
