"""`python -m analysis report RUN_DIR | summarize RUN_DIR | compare A B [--format md]`.

The `connbench report` / `connbench compare` subcommands call the same functions.
"""

from __future__ import annotations

import argparse
import sys

from analysis import AnalysisError
from connbench import results as R


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("report", help="regenerate summary.csv, charts and index.html").add_argument("run_dir")
    sub.add_parser("summarize", help=f"write {R.SUMMARY_CSV} and {R.SUMMARY_GROUPS_CSV}").add_argument("run_dir")
    cp = sub.add_parser("compare", help="compare run B against run A")
    cp.add_argument("run_a")
    cp.add_argument("run_b")
    cp.add_argument("--format", default="text", choices=["text", "markdown", "md", "csv"])
    cp.add_argument("--threshold", type=float, default=0.05, help="relative change shown as '~' below this")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "report":
            from analysis.report import build_report

            print(build_report(args.run_dir))
        elif args.cmd == "summarize":
            from analysis.summarize import summarize

            df = summarize(args.run_dir)
            print(f"{len(df)} cells -> {R.RunPaths(args.run_dir).summary}")
        else:
            from analysis.compare import compare

            sys.stdout.write(compare(args.run_a, args.run_b, args.threshold, args.format))
    except AnalysisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
