"""What every command shares: one-line errors on stderr, loading a scenario, argument types."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.text import Text

from connbench.scenario import expand
from connbench.text import printable


def err(console: Console, msg: str) -> None:
    # user text (paths, values) is never markup: "[defaults]" must print as written; and one
    # bounded line whatever it holds (a newline or an escape sequence in a file name or value)
    console.print(Text("connbench: ", style="bold red") + Text(printable(msg, 2000)), highlight=False, soft_wrap=True)


def stderr_console() -> Console:
    return Console(stderr=True, markup=False, highlight=False)


def load_scenario(path: str, args: argparse.Namespace | None = None) -> expand.Scenario:
    return expand.load(Path(path), max_cells=getattr(args, "max_cells", None) or expand.DEFAULT_MAX_CELLS)


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text[:50]!r} is not a whole number >= 1")
    return int(text)


def interval(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 0.01 <= v <= 10:  # nan fails too
        raise argparse.ArgumentTypeError(f"{text[:50]!r} is not a number of seconds from 0.01 to 10")
    return v


def fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 0 <= v <= 10:
        raise argparse.ArgumentTypeError(f"{text[:50]!r} is not a relative change from 0 to 10 (0.05 = 5 %)")
    return v


def max_cells_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-cells", type=positive, default=expand.DEFAULT_MAX_CELLS,
                        help=f"refuse matrices larger than this (default {expand.DEFAULT_MAX_CELLS})")
