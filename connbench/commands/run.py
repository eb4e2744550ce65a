"""`connbench run`: every cell of a scenario, then the report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from connbench.commands.common import interval, load_scenario, max_cells_flag, positive
from connbench.commands.report import report
from connbench.errors import ScenarioError
from connbench.loopback import require_local
from connbench.scenario.expand import Scenario


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    r = sub.add_parser("run", help="run every cell of a scenario and build the report")
    r.add_argument("scenario", help="scenario TOML file, e.g. scenarios/quick.toml")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue a run: skip completed cells, rerun the rest")
    r.add_argument("--run-dir", help="where to write the run (default: REPORTS/<timestamp>-<name>)")
    r.add_argument("--reports", default="reports", help="output root (default: reports)")
    r.add_argument("--sample-interval", type=interval, default=0.1, help="sampler period in seconds (default 0.1)")
    r.add_argument("--locust-processes", type=positive, default=1, help="as --generator-workers N (default 1)")
    r.add_argument("--generator-workers", type=int, metavar="N", help="Locust master + N workers ([generator] workers)")
    r.add_argument("--no-report", action="store_true", help="skip building the HTML report")
    r.add_argument("--no-charts", action="store_true", help="the report without its charts: summary, expectations "
                   "and findings in a second (CI); `connbench report RUN` draws them later")
    r.add_argument("--keep-data", action="store_true", help="keep the PostgreSQL cluster (and its credentials, "
                   "in pg/) after the run; delete pg/ before sharing the run directory")
    r.add_argument("--database-url", help="use your PostgreSQL (nothing is started; its password is never "
                   "written); e.g. postgresql://app:secret@127.0.0.1:5432/appdb")
    r.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --database-url")
    r.add_argument("--cells", metavar="ID[,ID...]", help="run only these cells (ids or settings); the others are "
                   "listed in the report as not run")
    max_cells_flag(r)
    r.set_defaults(func=run)


def select_cells(scen: Scenario, text: str) -> Scenario:
    """--cells: the scenario with only the named cells (by id or setting); an unknown name is a usage error."""
    wanted = {w.strip() for w in text.split(",") if w.strip()}
    known = sorted({c.group for c in scen.cells} | {c.cell_id for c in scen.cells})
    unknown = sorted(wanted - set(known))
    if unknown or not wanted:
        raise ScenarioError(f"{scen.path}: --cells: no cell named {', '.join(unknown) or repr(text)}; allowed: "
                            f"{', '.join(known)}")
    return scen.pruned_by(lambda c: None if wanted & {c.cell_id, c.group} else "not selected (--cells)")


def run(args: argparse.Namespace, console: Console) -> int:
    from connbench.run.matrix import MatrixRunner, new_run_id
    from connbench.run.worker import generator_for

    scen = load_scenario(args.scenario, args)  # every scenario error surfaces here, before anything starts
    if args.cells:
        scen = select_cells(scen, args.cells)
    scen.generator = generator_for(scen, args.generator_workers, args.locust_processes)
    external = None
    source = "--database-url"
    if not args.database_url and scen.server is not None:  # [server] url: the same as --database-url
        args.database_url, args.allow_remote = scen.server.url, args.allow_remote or scen.server.allow_remote
        source = f"{scen.path}: server.url"
    if args.database_url:
        from connbench.run.stack import django_app, external_prune_reason
        from connbench.services.external import ExternalServer, public_url, url_host

        require_local(source, url_host(args.database_url), args.allow_remote,
                      "--allow-remote (or server.allow_remote = true)", "load a remote database")
        external = ExternalServer(args.database_url, django_app(scen.project))
        facts = external.facts()  # read-only: nothing is created before the cells are settled
        console.print(f"your PostgreSQL {facts['version']} ({public_url(args.database_url)}): max_connections "
                      f"{facts['max_connections']}, {facts['reserved']} reserved; nothing will be started")
        scen = scen.pruned_by(lambda c: external_prune_reason(external, c.knobs, scen.faults_for(c)))
        if not scen.cells:
            raise ScenarioError(f"{scen.path}: no cell can run on this server: "
                                + "; ".join(dict.fromkeys(p.reason for p in scen.pruned)))
    if args.resume:
        run_dir = Path(args.resume)
    else:
        run_dir = Path(args.run_dir) if args.run_dir else Path(args.reports) / new_run_id(scen)
    run_dir = run_dir.absolute()  # children (the sampler, gunicorn) run in other directories
    runner = MatrixRunner(scen, run_dir, resume=bool(args.resume), console=console,
                          sample_interval=args.sample_interval,
                          argv=sys.argv, keep_data=args.keep_data, external=external)
    code = runner.run()
    if not args.no_report:
        code = max(code, report(run_dir, console, charts=not args.no_charts))
    return code
