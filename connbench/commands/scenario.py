"""`connbench list`, `validate` and `init`: a scenario's cells and what each should hold, before anything runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from connbench.commands.common import load_scenario, max_cells_flag
from connbench.errors import EXIT_OK
from connbench.scenario.predict import predict


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, func, helptext in (("list", list_cells, "print the cells a scenario expands into"),
                                 ("validate", validate, "check a scenario file")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("scenario", help="scenario TOML file, or a shipped one by name (e.g. quick)")
        s.add_argument("-v", "--verbose", action="store_true", help="show the prediction basis and every pruned cell")
        max_cells_flag(s)
        s.set_defaults(func=func)
    ini = sub.add_parser("init", help="write connbench.toml in DIR: for the Django project there (manage.py), "
                         "detected and checked; elsewhere a commented starter scenario")
    ini.add_argument("dir", nargs="?", default=".", help="default: the current directory")
    ini.set_defaults(func=init)


def list_cells(args: argparse.Namespace, console: Console) -> int:
    scen = load_scenario(args.scenario, args)
    table = Table(title=f"{scen.meta.name}: {len(scen.cells)} cells ({scen.path})")
    table.add_column("cell id")
    axes = list(dict.fromkeys(k for cell in scen.cells for k in cell.axes))
    for a in axes:
        table.add_column(a)
    table.add_column("predicted conns")
    if args.verbose:
        table.add_column("basis", overflow="fold")
    for cell in scen.cells:
        p = predict(cell.knobs)
        pred = "no bound: grows with requests" if p.bounded is False else (
            str(p.connections) if p.connections is not None else (
                f"{p.at_rest} at rest, <= {p.connections_max}" if p.at_rest is not None else "?"))
        if p.pgbouncer_server_max is not None:
            pred += f" (server <= {p.pgbouncer_server_max})"
        table.add_row(cell.cell_id, *[str(cell.axes.get(a, "")) for a in axes], pred,
                      *([p.basis] if args.verbose else []))
    Console(width=max(Console().width, 160), markup=False, highlight=False).print(table)
    waits = [(cell.cell_id, w) for cell in scen.cells if (w := predict(cell.knobs).pool_wait)]
    for cell_id, why in waits:  # before the run, not after its timeouts
        console.print(f"warning: {cell_id}: pool smaller than concurrency: {why}", highlight=False, markup=False)
    reasons: dict[str, list[dict[str, Any]]] = {}
    for pruned in scen.pruned:
        reasons.setdefault(pruned.reason, []).append(pruned.axes)
    for reason, which in reasons.items():
        console.print(f"pruned {len(which)}: {reason}", highlight=False)
        if args.verbose:
            for axes_ in which:
                console.print(f"    {axes_}", highlight=False)
    return EXIT_OK


def validate(args: argparse.Namespace, console: Console) -> int:
    scen = load_scenario(args.scenario, args)
    console.print(f"{scen.path}: ok, {len(scen.cells)} cells, {len(scen.pruned)} pruned")
    return EXIT_OK


def init(args: argparse.Namespace, console: Console) -> int:
    from connbench.run.init_project import init_command

    return init_command(Path(args.dir), console)
