"""connbench: how many PostgreSQL connections a Django app under gunicorn holds, and what they cost.

Exit codes: 0 ok, 1 a cell or check failed, 2 bad input (nothing was started), 130 interrupted.
"""

from __future__ import annotations

import argparse
import signal
import sys

from connbench.commands import probe, report, run, scenario, worker
from connbench.commands.common import err, stderr_console
from connbench.errors import EXIT_INTERRUPTED, ConnbenchError


def build_parser() -> argparse.ArgumentParser:
    summary, _, codes = (__doc__ or "").partition("\n\n")
    p = argparse.ArgumentParser(prog="connbench", description=summary, epilog=codes.strip())
    sub = p.add_subparsers(dest="command", required=True)
    for command in (run, scenario, report, probe, worker):
        command.add_parsers(sub)
    return p


def _sigterm(*_a: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    console = stderr_console()
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)  # same clean stop as Ctrl-C
    # A shell starts background jobs with SIGINT ignored, and Python then leaves it ignored: Ctrl-C (or
    # a test's SIGINT) would be lost and the run go on to its end. Ctrl-C always stops a run cleanly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code: int = args.func(args, console)
        return code
    except ConnbenchError as e:  # every error of connbench's own: one actionable line, never a traceback
        err(console, str(e))
        return e.exit_code
    except KeyboardInterrupt:
        err(console, "interrupted; every process the harness started has been stopped")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
