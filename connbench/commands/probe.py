"""`connbench probe`: hit the app until the connection count stops rising."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from connbench.commands.common import load_scenario, max_cells_flag
from connbench.commands.report import report
from connbench.errors import EXIT_OK, ScenarioError
from connbench.results import RunPaths
from connbench.scenario import expand
from connbench.scenario.knobs import NONE_SPELLINGS, POOLINGS, WORKER_CLASSES, ProbeSettings
from connbench.text import clip_list

KNOB_FLAGS = ("dynos", "workers", "threads", "worker_class", "conn_max_age", "pooling", "max_connections",
              "health_checks")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pr = sub.add_parser("probe", help="hit the app until the connection count stops rising")
    pr.add_argument("scenario", nargs="?", default="scenarios/probe.toml", help="default: scenarios/probe.toml")
    pr.add_argument("--cell", help="which cell of the scenario to probe (when it has several)")
    pr.add_argument("--mode", choices=("ramp", "sequential", "both"),
                    help="requests one at a time, concurrent load rising step by step, or both "
                         "(default: the scenario's)")
    for k in ("dynos", "workers", "threads", "max_connections"):
        pr.add_argument(f"--{k.replace('_', '-')}", type=int, dest=k, help=f"the knob {k} (default: the cell's)")
    pr.add_argument("--worker-class", choices=WORKER_CLASSES, dest="worker_class", help="the knob worker_class")
    pr.add_argument("--conn-max-age", dest="conn_max_age", help='seconds or "none"')
    pr.add_argument("--health-checks", choices=("on", "off"), dest="health_checks", help="the knob health_checks")
    pr.add_argument("--pooling", choices=POOLINGS, help="the knob pooling")
    pr.add_argument("--stable-steps", type=int, help="stop after K steps without a rise (default 3)")
    pr.add_argument("--max-steps", type=int, help="stop after this many steps whatever the count (default 30)")
    pr.add_argument("--step-requests", type=int, help="sequential: requests per step (default 20)")
    pr.add_argument("--step-seconds", type=float, help="ramp: seconds per step (default 1)")
    pr.add_argument("--path", help="endpoint to hit (default /db/read)")
    pr.add_argument("--limit", type=int, help="connections your database allows the app (e.g. a plan's 20)")
    pr.add_argument("--preboot", action="store_true",
                    help="headroom: count dynos twice (Heroku Preboot runs the old and new set during a deploy)")
    pr.add_argument("--one-off", type=int, dest="one_off", metavar="N",
                    help="headroom: N one-off dynos (heroku run consoles, release phase), one connection each")
    pr.add_argument("--target", help="probe an existing app at this URL instead of starting one")
    pr.add_argument("--database-url", help="the database the --target app uses (for the count)")
    pr.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --target/--database-url")
    max_cells_flag(pr)
    pr.add_argument("--run-dir", help="where to write the probe (default: REPORTS/<timestamp>-<name>-probe)")
    pr.add_argument("--reports", default="reports", help="output root (default: reports)")
    pr.add_argument("--no-report", action="store_true", help="skip building the HTML report")
    pr.set_defaults(func=probe)


def probe(args: argparse.Namespace, console: Console) -> int:
    from pydantic import ValidationError

    from connbench.probe.runner import ProbeRunner, check_database, print_summary
    from connbench.run.matrix import new_run_id

    scen = load_scenario(args.scenario, args)
    ids = [c.cell_id for c in scen.cells]
    if len(scen.cells) > 1 and not args.cell:
        raise ScenarioError(f"{scen.path}: {len(scen.cells)} cells; choose one with --cell ({clip_list(ids)})")
    cell = next((c for c in scen.cells if c.cell_id == args.cell), None) if args.cell else scen.cells[0]
    if cell is None:
        raise ScenarioError(f"{scen.path}: no cell {args.cell[:100]!r}; cells: {clip_list(ids)}")
    overrides = {k: getattr(args, k) for k in KNOB_FLAGS if getattr(args, k) is not None}
    cma = overrides.get("conn_max_age")
    if cma is not None and cma.strip().lower() not in NONE_SPELLINGS:
        if not cma.strip().isdigit():
            raise ScenarioError(f'--conn-max-age: {cma[:100]!r} is not seconds (an integer >= 0) or "none"')
        overrides["conn_max_age"] = int(cma)
    if "health_checks" in overrides:
        overrides["health_checks"] = overrides["health_checks"] == "on"
    knobs = expand.knobs_from(scen.path, "command line", {**cell.knobs.model_dump(exclude_unset=True), **overrides})
    reason = expand.prune_reason(knobs, scen.meta.model_copy(update={"allow_gevent_persistent": True}))
    if reason:
        raise ScenarioError(f"probe: {reason}")
    if args.path is None and not scen.project.bundled and "path" not in scen.probe.model_fields_set:
        # your project: hit the first [load] path (else its health path), not the bundled app's /db/read
        args.path = next(iter(scen.project.load_paths or {}), scen.project.verify_paths[0])
    flags = {k: v for k, v in (("mode", args.mode), ("stable_steps", args.stable_steps),
                               ("max_steps", args.max_steps), ("step_requests", args.step_requests),
                               ("step_seconds", args.step_seconds), ("limit", args.limit), ("path", args.path),
                               ("preboot", args.preboot or None), ("one_off", args.one_off))
             if v is not None}
    try:
        settings = ProbeSettings(**{**scen.probe.model_dump(), **flags})
    except ValidationError as e:
        err = e.errors()[0]
        raise ScenarioError(f"{scen.path} [probe] / flags: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    run_dir = (Path(args.run_dir) if args.run_dir else Path(args.reports) / (new_run_id(scen) + "-probe")).absolute()
    runner = ProbeRunner(knobs, settings, run_dir, console, target=args.target, database_url=args.database_url,
                         allow_remote=args.allow_remote, scenario_name=scen.meta.name, project=scen.project)
    if args.database_url:
        check_database(args.database_url)
    doc = runner.run()
    print_summary(doc, console)
    console.print(f"probe.json: {RunPaths(run_dir).probe.resolve()}")
    if not args.no_report:
        return report(run_dir, console)
    return EXIT_OK
