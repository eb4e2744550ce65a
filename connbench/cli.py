"""connbench: one entry point, with subcommands. Exit codes: 0 ok, 1 a cell or check failed,
2 bad input (nothing was started), 130 interrupted."""

from __future__ import annotations

import argparse
import csv
import signal
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from connbench import expand
from connbench.predict import predict
from connbench.results import RunPaths
from connbench.spec import POOLINGS, WORKER_CLASSES, ProbeSettings, ScenarioError, clip_list

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _err(console: Console, msg: str) -> None:
    # user text (paths, values) is never markup: "[defaults]" must print as written; and one
    # bounded line whatever it holds (a newline or an escape sequence in a file name or value)
    if not msg.isprintable():
        msg = "".join(c if c.isprintable() else repr(c)[1:-1] for c in msg)
    if len(msg) > 2000:
        msg = msg[:2000] + "..."
    console.print(Text("connbench: ", style="bold red") + Text(msg), highlight=False, soft_wrap=True)


def _console() -> Console:
    return Console(stderr=True, markup=False, highlight=False)


def _load(path: str, args=None) -> expand.Scenario:
    return expand.load(Path(path), max_cells=getattr(args, "max_cells", None) or expand.DEFAULT_MAX_CELLS)


def cmd_list(args, console: Console) -> int:
    scen = _load(args.scenario, args)
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
    reasons: dict[str, list] = {}
    for p in scen.pruned:
        reasons.setdefault(p.reason, []).append(p.axes)
    for reason, which in reasons.items():
        console.print(f"pruned {len(which)}: {reason}", highlight=False)
        if args.verbose:
            for axes_ in which:
                console.print(f"    {axes_}", highlight=False)
    return EXIT_OK


def cmd_validate(args, console: Console) -> int:
    scen = _load(args.scenario, args)
    console.print(f"{scen.path}: ok, {len(scen.cells)} cells, {len(scen.pruned)} pruned")
    return EXIT_OK


def cmd_init(args, console: Console) -> int:
    from connbench.run.init_project import init_command

    return init_command(Path(args.dir), console)


def cmd_run(args, console: Console) -> int:
    from connbench.run.matrix import MatrixRunner, new_run_id
    from connbench.run.worker import generator_for

    scen = _load(args.scenario, args)  # every scenario error surfaces here, before anything starts
    scen.generator = generator_for(scen, args.generator_workers, args.locust_processes)
    external = None
    source = "--database-url"
    if not args.database_url and scen.server is not None:  # [server] url: the same as --database-url
        args.database_url, args.allow_remote = scen.server.url, args.allow_remote or scen.server.allow_remote
        source = f"{scen.path}: server.url"
    if args.database_url:
        from connbench.run.probe_load import is_loopback
        from connbench.services.external import ExternalServer, public_url, url_host

        host = url_host(args.database_url)
        local = not host or host.startswith("/") or is_loopback(host)  # none or a directory: a Unix socket
        if not local and not args.allow_remote:
            raise ScenarioError(f"{source} points at {host!r}, which is not a loopback address; pass "
                                "--allow-remote (or server.allow_remote = true) to load a remote database on purpose")
        external = ExternalServer(args.database_url, scen.project)
        facts = external.facts()  # read-only: nothing is created before the cells are settled
        console.print(f"your PostgreSQL {facts['version']} ({public_url(args.database_url)}): max_connections "
                      f"{facts['max_connections']}, {facts['reserved']} reserved; nothing will be started")
        scen = scen.pruned_by(lambda c: external.prune_reason(c.knobs, scen.faults_for(c)))
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
        code = max(code, _report(run_dir, console, charts=not args.no_charts))
    return code


def _report(run_dir: Path, console: Console, charts: bool = True) -> int:
    try:
        from analysis.report import build_report
    except ImportError as e:  # analysis not installed: the raw files are still there
        _err(console, f"report not built ({e}); raw results are in {run_dir}")
        return EXIT_FAILED
    from analysis.expectations import failed

    path = build_report(run_dir, charts=charts)
    bad = failed(run_dir)
    for r in bad:
        _err(console, f"expectation failed: {r['cell_id']}: {r['name']}: {r['check']} {r['limit']} "
                      f"(measured {r['measured']})")
    damaged = _damaged(RunPaths(run_dir).summary)
    for cell_id, why in damaged[:20]:
        _err(console, f"cell damaged: {cell_id}: {why}")
    console.print(f"report: {path.resolve()}")
    print(path.resolve())
    return EXIT_FAILED if bad or damaged else EXIT_OK


def _damaged(summary: Path) -> list[tuple[str, str]]:
    """Cells whose raw files analysis could not read: the report says so, and so does the exit code."""
    with open(summary, newline="", encoding="utf-8") as fh:
        return [(r["cell_id"], r.get("damage") or "") for r in csv.DictReader(fh) if r.get("status") == "damaged"]


def cmd_compare(args, console: Console) -> int:
    from analysis.compare import compare

    print(compare(Path(args.run_a), Path(args.run_b), threshold=args.threshold, fmt=args.format))
    return EXIT_OK


KNOB_FLAGS = ("dynos", "workers", "threads", "worker_class", "conn_max_age", "pooling", "max_connections",
              "health_checks")


def cmd_probe(args, console: Console) -> int:
    from pydantic import ValidationError

    from connbench.run.matrix import new_run_id
    from connbench.run.probe import ProbeRunner, check_database, print_summary

    scen = _load(args.scenario, args)
    ids = [c.cell_id for c in scen.cells]
    if len(scen.cells) > 1 and not args.cell:
        raise ScenarioError(f"{scen.path}: {len(scen.cells)} cells; choose one with --cell ({clip_list(ids)})")
    cell = next((c for c in scen.cells if c.cell_id == args.cell), None) if args.cell else scen.cells[0]
    if cell is None:
        raise ScenarioError(f"{scen.path}: no cell {args.cell[:100]!r}; cells: {clip_list(ids)}")
    overrides = {k: getattr(args, k) for k in KNOB_FLAGS if getattr(args, k) is not None}
    cma = overrides.get("conn_max_age")
    if cma is not None and cma.strip().lower() not in ("none", "null", "unlimited"):
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
        return _report(run_dir, console)
    return EXIT_OK


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text[:50]!r} is not a whole number >= 1")
    return int(text)


def _interval(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 0.01 <= v <= 10:  # nan fails too
        raise argparse.ArgumentTypeError(f"{text[:50]!r} is not a number of seconds from 0.01 to 10")
    return v


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 0 <= v <= 10:
        raise argparse.ArgumentTypeError(f"{text[:50]!r} is not a relative change from 0 to 10 (0.05 = 5 %)")
    return v


def cmd_worker(args, console: Console) -> int:
    from connbench.run.worker import run

    return run(args.master, args.name, args.locustfile, args.once, args.allow_remote, console.print,
               Path(args.reports) / "workers")


def _max_cells(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-cells", type=_positive, default=expand.DEFAULT_MAX_CELLS,
                        help=f"refuse matrices larger than this (default {expand.DEFAULT_MAX_CELLS})")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="connbench", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run every cell of a scenario and build the report")
    r.add_argument("scenario", help="scenario TOML file, e.g. scenarios/quick.toml")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue a run: skip completed cells, rerun the rest")
    r.add_argument("--run-dir", help="where to write the run (default: REPORTS/<timestamp>-<name>)")
    r.add_argument("--reports", default="reports", help="output root (default: reports)")
    r.add_argument("--sample-interval", type=_interval, default=0.1, help="sampler period in seconds (default 0.1)")
    r.add_argument("--locust-processes", type=_positive, default=1, help="as --generator-workers N (default 1)")
    r.add_argument("--generator-workers", type=int, metavar="N", help="Locust master + N workers ([generator] workers)")
    r.add_argument("--no-report", action="store_true", help="skip building the HTML report")
    r.add_argument("--no-charts", action="store_true", help="the report without its charts: summary, expectations "
                   "and findings in a second (CI); `connbench report RUN` draws them later")
    r.add_argument("--keep-data", action="store_true", help="keep the PostgreSQL cluster (and its credentials, "
                   "in pg/) after the run; delete pg/ before sharing the run directory")
    r.add_argument("--database-url", help="use your PostgreSQL (nothing is started; its password is never "
                   "written); e.g. postgresql://app:secret@127.0.0.1:5432/appdb")
    r.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --database-url")
    _max_cells(r)
    r.set_defaults(func=cmd_run)

    for name, func, helptext in (("list", cmd_list, "print the cells a scenario expands into"),
                                 ("validate", cmd_validate, "check a scenario file")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("scenario")
        s.add_argument("-v", "--verbose", action="store_true", help="show the prediction basis and every pruned cell")
        _max_cells(s)
        s.set_defaults(func=func)

    rep = sub.add_parser("report", help="rebuild summary, charts and index.html from a run's raw files")
    rep.add_argument("run_dir")
    rep.add_argument("--no-charts", action="store_true", help="everything but the charts (charts/ is left alone)")
    rep.set_defaults(func=lambda args, console: _report(Path(args.run_dir), console, charts=not args.no_charts))

    ini = sub.add_parser("init", help="write connbench.toml in DIR: for the Django project there (manage.py), "
                         "detected and checked; elsewhere a commented starter scenario")
    ini.add_argument("dir", nargs="?", default=".", help="default: the current directory")
    ini.set_defaults(func=cmd_init)

    pr = sub.add_parser("probe", help="hit the app until the connection count stops rising")
    pr.add_argument("scenario", nargs="?", default="scenarios/probe.toml", help="default: scenarios/probe.toml")
    pr.add_argument("--cell", help="which cell of the scenario to probe (when it has several)")
    pr.add_argument("--mode", choices=("ramp", "sequential", "both"))
    for k in ("dynos", "workers", "threads", "max_connections"):
        pr.add_argument(f"--{k.replace('_', '-')}", type=int, dest=k)
    pr.add_argument("--worker-class", choices=WORKER_CLASSES, dest="worker_class")
    pr.add_argument("--conn-max-age", dest="conn_max_age", help='seconds or "none"')
    pr.add_argument("--health-checks", choices=("on", "off"), dest="health_checks")
    pr.add_argument("--pooling", choices=POOLINGS)
    pr.add_argument("--stable-steps", type=int, help="stop after K steps without a rise (default 3)")
    pr.add_argument("--max-steps", type=int)
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
    _max_cells(pr)
    pr.add_argument("--run-dir")
    pr.add_argument("--reports", default="reports")
    pr.add_argument("--no-report", action="store_true")
    pr.set_defaults(func=cmd_probe)

    w = sub.add_parser("worker", help="a Locust worker joining a run's master (on this machine or another)")
    w.add_argument("--master", required=True, help="HOST:PORT: the scenario's [generator] bind and port")
    w.add_argument("--name", help="this worker's name in requests.csv (default: host-pid)")
    w.add_argument("--locustfile", help="the scenario's [load] locustfile, if it has one")
    w.add_argument("--once", action="store_true", help="exit after one test (default: join each cell's master)")
    w.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --master")
    w.add_argument("--reports", default="reports", help="its logs go to REPORTS/workers (default: reports)")
    w.set_defaults(func=cmd_worker)

    c = sub.add_parser("compare", help="compare two runs cell by cell")
    c.add_argument("run_a")
    c.add_argument("run_b")
    c.add_argument("--format", choices=("text", "markdown", "csv"), default="text")
    c.add_argument("--threshold", type=_fraction, default=0.05, help="smallest relative change that counts")
    c.set_defaults(func=cmd_compare)
    return p


def _sigterm(*_a):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    console = _console()
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)  # same clean stop as Ctrl-C
    # A shell starts background jobs with SIGINT ignored, and Python then leaves it ignored: Ctrl-C (or
    # a test's SIGINT) would be lost and the run go on to its end. Ctrl-C always stops a run cleanly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return args.func(args, console)
    except ScenarioError as e:
        _err(console, str(e))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err(console, "interrupted; every process the harness started has been stopped")
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - last resort: an actionable line, not a traceback
        from connbench.run.matrix import RunError
        from connbench.run.preflight import PreflightError
        from connbench.run.probe_load import ProbeError

        if isinstance(e, (RunError, ProbeError, PreflightError)):
            _err(console, str(e))
            return EXIT_USAGE
        try:
            from analysis import AnalysisError
        except ImportError:
            AnalysisError = ()  # noqa: N806
        if AnalysisError and isinstance(e, AnalysisError):
            _err(console, str(e))
            return EXIT_USAGE
        from connbench.results import ResultsError
        from connbench.services.procs import ServiceError

        if isinstance(e, (ServiceError, ResultsError)):  # a component failed (the probe has no cells to fail)
            _err(console, str(e))
            return EXIT_FAILED
        raise


if __name__ == "__main__":
    sys.exit(main())
