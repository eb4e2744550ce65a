"""`connbench report` and `compare`: analysis of run directories (only reads files; nothing is started)."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from rich.console import Console

from connbench.commands.common import err, fraction
from connbench.errors import EXIT_FAILED, EXIT_OK
from connbench.results import RunPaths


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rep = sub.add_parser("report", help="rebuild summary, charts and index.html from a run's raw files")
    rep.add_argument("run_dir", help="a run directory (reports/<id>)")
    rep.add_argument("--no-charts", action="store_true", help="everything but the charts (charts/ is left alone)")
    rep.set_defaults(func=lambda args, console: report(Path(args.run_dir), console, charts=not args.no_charts))
    c = sub.add_parser("compare", help="compare two runs setting by setting")
    c.add_argument("run_a", help="the baseline run directory")
    c.add_argument("run_b", help="the run compared against it")
    c.add_argument("--format", choices=("text", "markdown", "csv"), default="text", help="output (default: text)")
    c.add_argument("--threshold", type=fraction, default=0.05, help="smallest relative change that counts")
    c.set_defaults(func=compare)


def report(run_dir: Path, console: Console, charts: bool = True) -> int:
    from connbench.analysis.expectations import failed  # analysis loads matplotlib: only when reporting
    from connbench.analysis.report import build_report

    path = build_report(run_dir, charts=charts)
    bad = failed(run_dir)
    for r in bad:
        err(console, f"expectation failed: {r['cell_id']}: {r['name']}: {r['check']} {r['limit']} "
                      f"(measured {r['measured']})")
    damaged = _damaged(RunPaths(run_dir).summary)
    for cell_id, why in damaged[:20]:
        err(console, f"cell damaged: {cell_id}: {why}")
    console.print(f"report: {path.resolve()}")
    print(path.resolve())
    return EXIT_FAILED if bad or damaged else EXIT_OK


def _damaged(summary: Path) -> list[tuple[str, str]]:
    """Cells whose raw files analysis could not read: the report says so, and so does the exit code."""
    with open(summary, newline="", encoding="utf-8") as fh:
        return [(r["cell_id"], r.get("damage") or "") for r in csv.DictReader(fh) if r.get("status") == "damaged"]


def compare(args: argparse.Namespace, console: Console) -> int:
    from connbench.analysis.compare import compare

    print(compare(Path(args.run_a), Path(args.run_b), threshold=args.threshold, fmt=args.format))
    return EXIT_OK
