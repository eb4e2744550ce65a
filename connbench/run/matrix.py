"""Runs every cell of a scenario: progress, resume, manifest, one PostgreSQL per server setting."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from connbench import results as R
from connbench.errors import UsageError
from connbench.redact import redact_argv
from connbench.results import RunPaths
from connbench.results.schema import RunStatus
from connbench.run.cell import CellRunner, failed_to_start, load_cell_doc, skipped
from connbench.run.preflight import preflight
from connbench.run.provenance import git_commit, host_facts, versions
from connbench.run.stack import django_app
from connbench.scenario.expand import Cell, Scenario, redact_scenario
from connbench.scenario.knobs import PGBOUNCER_MODES
from connbench.services import pgbouncer as pgb
from connbench.services.cleanup import cleanup_recorded
from connbench.services.database import DatabaseServer
from connbench.services.external import ExternalServer, public_url
from connbench.services.postgres import (
    SYSTEM_MISSING,
    PostgresServer,
    build_flags,
    system_bin_dir,
)
from connbench.services.procs import (
    PrivateDir,
    RunAs,
    ServiceError,
    Supervisor,
    remove_service_dir,
    service_dir,
)

MAX_LIVE_SERVERS = 8  # PostgreSQL servers kept up at once, so repeats can alternate between server settings
DONE = ("completed", "skipped")
ServerKey = tuple[int, str, str, bool]  # Knobs.server_key(): cells with equal keys share a server


class RunError(UsageError):
    """A run that cannot start or resume; the message says what to do."""


def new_run_id(scenario: Scenario) -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + "".join(c if c.isalnum() else "-" for c in scenario.meta.name)


class MatrixRunner:
    def __init__(self, scenario: Scenario, run_dir: Path, *, resume: bool = False, console: Console | None = None,
                 sample_interval: float = 0.1, argv: list[str] | None = None,
                 keep_data: bool = False, external: ExternalServer | None = None):
        self.keep_data = keep_data
        self.external = external  # --database-url: the one server, never started or stopped by the run
        self.scenario = scenario
        self.paths = RunPaths(run_dir)
        self.resume = resume
        self.console = console or Console(stderr=True)
        self.sample_interval = sample_interval
        self.argv = argv or sys.argv
        self.sup = Supervisor(self.paths.pids)  # its PrivateDir is made when the run starts
        self.user: RunAs | None = None  # the service user, known once the preflight has passed
        self.servers: dict[ServerKey, PostgresServer] = {}  # live ones, by server key, least recently used first
        self.manifest: R.Manifest | None = None

    # -- manifest -----------------------------------------------------------------------
    def check_resumable(self) -> R.Manifest:
        """Prove the directory is a run of this scenario before anything in it is touched."""
        root, sc = self.paths.root, self.scenario
        if not root.is_dir():
            raise RunError(f"{root}: no such run directory; run without --resume to start one")
        if not self.paths.manifest.is_file():
            raise RunError(f"{root}: no manifest.json, so it is not a connbench run; nothing was touched")
        try:
            manifest = R.Manifest.load(self.paths.manifest)
        except R.ResultsError as e:
            raise RunError(f"{self.paths.manifest}: not a connbench run manifest ({e}); nothing was touched") from None
        if manifest.kind != "matrix" or manifest.written_version != R.SCHEMA_VERSION:
            raise RunError(f"{root}: a {manifest.kind} run written by schema {manifest.written_version}; only a "
                           f"matrix run of schema {R.SCHEMA_VERSION} can be resumed. Nothing was touched")
        if manifest.scenario_hash != sc.hash:
            raise RunError(f"{sc.path} changed since {root} was started (hash "
                           f"{str(manifest.scenario_hash)[:40]} vs {sc.hash}); resume with the same file "
                           "or start a new run")
        was = manifest.servers.get("external")
        now = public_url(self.external.url) if self.external else None
        if was is not None and now is None or (now is not None and was is not None and any(
                str(was.settings.get(k)) != str(now.get(k)) for k in ("host", "port", "dbname", "user"))):
            where = {k: was.settings.get(k) for k in ("host", "port", "dbname", "user")}
            raise RunError(f"{root} ran on your PostgreSQL ({where}); resume it with the same --database-url. "
                           "Nothing was touched")
        if now is not None and was is None and any(c.status in DONE for c in manifest.cells):
            raise RunError(f"{root} ran on connbench's own PostgreSQL; resume it without --database-url, or start "
                           "a new run. Nothing was touched")
        return manifest

    def _init_manifest(self, resumed: R.Manifest | None) -> None:
        sc = self.scenario
        if resumed is not None:
            self.manifest = resumed
            self.manifest.resumes.append(R.Resume(at=time.time(), argv=redact_argv(self.argv)))
            return
        if self.paths.root.exists() and any(self.paths.root.iterdir()):
            raise RunError(f"{self.paths.root} already exists and is not empty; use --resume {self.paths.root} "
                           "to continue it, or choose another --run-dir")
        self.paths.root.mkdir(parents=True, exist_ok=True)
        self.manifest = R.Manifest(
            run_id=self.paths.root.name, argv=redact_argv(self.argv), scenario_file=str(sc.path),
            scenario=redact_scenario(sc.raw), project=sc.project.public(),
            scenario_hash=sc.hash, scenario_name=sc.meta.name, description=sc.meta.description,
            pruned=[R.Pruned(axes=p.axes, reason=p.reason) for p in sc.pruned], git=R.Git(**git_commit()),
            versions=versions(), host=host_facts(), run_as=self.user.name if self.user else None,
            sample_interval_s=self.sample_interval, started=time.time(),
            cells=[R.ManifestCell(cell_id=c.cell_id, group=c.group, repeat=c.repeat, axes=c.axes) for c in sc.cells],
        )
        self._save_manifest()

    def _save_manifest(self) -> None:
        assert self.manifest is not None  # set by _init_manifest, before anything is saved
        self.manifest.dump(self.paths.manifest)

    def _record(self, doc: R.CellDoc) -> None:
        assert self.manifest is not None  # set by _init_manifest, before any cell runs
        self.manifest.record(doc)
        self._save_manifest()

    # -- servers ------------------------------------------------------------------------
    def _server_for(self, cell: Cell) -> DatabaseServer:
        if self.external is not None:
            return self._external()
        key = cell.knobs.server_key()
        server = self.servers.pop(key, None)
        if server is not None and server.proc is not None and server.proc.poll() is None:
            self.servers[key] = server  # most recently used last
            return server
        if server is not None:  # it died (a crash, a failed restart fault): a fresh one
            server.stop()
        while len(self.servers) >= MAX_LIVE_SERVERS:  # bounded: the least recently used goes
            self.servers.pop(next(iter(self.servers))).stop()
        name = "maxc-" + "-".join(str(x) for x in key)
        pg_root = service_dir(self.paths.root, "pg", self.user)
        shutil.rmtree(pg_root / name, ignore_errors=True)  # a fresh cluster: its credentials were per start
        k = cell.knobs
        assert self.sup.private is not None  # run() makes it before the first cell
        server = PostgresServer(pg_root / name, k.max_connections, self.sup, self.user, self.sup.private,
                                server=k.server, auth=k.auth, tls=k.tls,
                                django=django_app(self.scenario.project))
        build = build_flags(server.bin_dir)
        if k.tls and not build["with_openssl"]:
            raise ServiceError(f"tls = true, but the {k.server} PostgreSQL ({server.bin_dir}) is built without "
                               "OpenSSL: it cannot serve TLS")
        self.console.print(f"  starting PostgreSQL ({k.server}, max_connections={k.max_connections}, "
                           f"auth={k.auth}, tls={'on' if k.tls else 'off'})")
        try:
            server.start()
        except BaseException:
            server.stop()  # half-started: stop it now, not at the end of the run
            raise
        self.servers[key] = server
        assert self.manifest is not None  # set by _init_manifest, before any cell runs
        self.manifest.servers[name] = R.ServerInfo(
            version=server.version, max_connections=server.max_connections, app_slots=server.app_slots,
            kind=k.server, auth=k.auth, tls=k.tls, build=dict(build), verified=server.verified,
            settings={n: v for n, v in server.settings(0).items() if n not in ("port", "ssl_cert_file",
                                                                              "ssl_key_file")})
        return server

    def _external(self) -> ExternalServer:
        ext = self.external
        assert ext is not None and self.manifest is not None  # called with --database-url, once a cell runs
        if "external" not in self.manifest.servers:
            self.console.print("  preparing your database: the app's migrations" + (" and seed" if
                               self.scenario.project.bundled else ""))
            ext.start()
            self.manifest.servers["external"] = R.ServerInfo(
                version=ext.version, max_connections=ext.max_connections, app_slots=ext.app_slots, kind="external",
                tls=ext.ssl, settings={**public_url(ext.url), "superuser": ext.superuser})
        return ext

    # -- the run --------------------------------------------------------------------------
    def run(self) -> int:
        resumed = self.check_resumable() if self.resume else None
        self.user = preflight(self.paths.root, {c.knobs.server for c in self.scenario.cells},
                              local_server=self.external is None).user
        self.console.print(f"run {self.paths.root}: {len(self.scenario.cells)} cells of {self.scenario.meta.name}")
        if resumed is not None:
            killed = cleanup_recorded(self.paths.pids)
            if killed:
                self.console.print(f"cleaned up processes left by the previous harness: {', '.join(killed)}")
            # A server killed with SIGKILL may leave a half-shut cluster: start from fresh data.
            remove_service_dir(self.paths.root, "pg")
        self._init_manifest(resumed)
        manifest = self.manifest
        assert manifest is not None  # _init_manifest sets it (or raises)
        self.sup.private = PrivateDir(self.user)
        todo = run_order(self.scenario.cells)
        server_failed: dict[ServerKey, str] = {}  # a server setting that failed to start fails its other cells at once
        failed = 0
        progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(), TaskProgressColumn(),
                            TimeElapsedColumn(), console=self.console, transient=False)
        overall = progress.add_task("cells", total=len(todo))
        phase = progress.add_task("", total=1, visible=False)
        ticker = _PhaseTicker(progress, phase)
        status: RunStatus = "completed"
        try:
            with progress:
                ticker.start()
                for n, cell in enumerate(todo, 1):
                    progress.update(overall, description=f"cell {n}/{len(todo)} {cell.cell_id}")
                    paths = self.paths.cell(cell.cell_id)
                    prior = load_cell_doc(paths) if self.resume else None
                    if prior and prior.status in DONE:
                        self._record(prior)
                        progress.advance(overall)
                        continue
                    if cell.knobs.pooling in PGBOUNCER_MODES and pgb.pgbouncer_binary() is None:
                        doc = skipped(cell, paths, pgb.MISSING)
                    elif cell.knobs.server == "system" and system_bin_dir() is None:
                        doc = skipped(cell, paths, SYSTEM_MISSING)
                    else:
                        key = cell.knobs.server_key()
                        try:
                            if key in server_failed:
                                raise ServiceError(server_failed[key])
                            server = self._server_for(cell)
                        except Exception as e:  # noqa: BLE001 - this cell fails; the next may still run
                            why = str(e) if key in server_failed else f"PostgreSQL: {type(e).__name__}: {e}"
                            server_failed.setdefault(key, f"{why} (the same server setting as {cell.cell_id})")
                            doc = failed_to_start(cell, paths, why)
                        else:
                            runner = CellRunner(cell, paths, server, self.sup, self.user, on_phase=ticker.phase,
                                                sample_interval=self.sample_interval,
                                                faults=self.scenario.faults_for(cell),
                                                seed=self.scenario.meta.seed + cell.repeat,
                                                project=self.scenario.project, generator=self.scenario.generator,
                                                calibration=manifest.calibration)
                            doc = runner.run()
                    self._record(doc)
                    failed += doc.status == "failed"
                    progress.console.print(_cell_line(n, len(todo), doc))
                    progress.advance(overall)
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        except BaseException:
            status = "crashed"
            raise
        finally:
            # processes first: nothing below (a console on a closed pipe, a full disk) may leave them running
            self.sup.stop_all()
            ticker.stop()
            progress.update(phase, visible=False)
            self.paths.pids.unlink(missing_ok=True)
            kept = [s for s in self.servers.values() if s.conn is not None] if self.keep_data else []
            if kept:
                where = ", ".join(str(s.keep_credentials()) for s in kept)
                self.console.print(f"kept the clusters; their credentials are in {where}: delete "
                                   f"{self.paths.root / 'pg'} before sharing the run directory")
            elif not self.keep_data:  # the cluster is throwaway: --resume provisions a new one
                remove_service_dir(self.paths.root, "pg")
            self.sup.private.remove()
            manifest.ended = time.time()
            manifest.status = status if status != "completed" or not failed else "completed_with_failures"
            self._save_manifest()
        return 1 if failed else 0


def run_order(cells: list[Cell]) -> list[Cell]:
    """Round-robin: every cell once, then every cell again, so drift (a warming cache, a busy neighbour)
    hits every setting alike; the servers stay up meanwhile. Past MAX_LIVE_SERVERS server settings,
    grouped by server first, so each starts once."""
    keys = {c.knobs.server_key() for c in cells}
    by = (lambda c: (c.repeat,)) if len(keys) <= MAX_LIVE_SERVERS else (lambda c: (c.knobs.server_key(), c.repeat))
    order = sorted(range(len(cells)), key=lambda i: (*by(cells[i]), i))
    return [cells[i] for i in order]


def _cell_line(n: int, total: int, doc: R.CellDoc) -> Text:
    color = {"completed": "green", "failed": "red", "skipped": "yellow"}.get(doc.status, "white")
    extra = doc.error or doc.skip_reason or f"{doc.requests or 0} requests"
    return Text(f"[{n}/{total}] {doc.cell_id}: {doc.status}", style=color) + Text(f" - {extra}")




class _PhaseTicker(threading.Thread):
    """Moves the within-cell bar along the current phase's planned duration."""

    def __init__(self, progress: Progress, task: TaskID):
        super().__init__(daemon=True)
        self.progress, self.task = progress, task
        self._evt = threading.Event()
        self._lock = threading.Lock()
        self._t0, self._seconds, self._name = 0.0, 0.0, ""

    def phase(self, name: str, seconds: float) -> None:
        with self._lock:
            self._t0, self._seconds, self._name = time.monotonic(), seconds, name
        self.progress.update(self.task, description=f"  {name}", total=max(seconds, 0.001), completed=0,
                             visible=True)

    def run(self) -> None:
        while not self._evt.wait(0.25):
            with self._lock:
                if self._seconds > 0:
                    done = min(self._seconds, time.monotonic() - self._t0)
                    self.progress.update(self.task, completed=done)

    def stop(self) -> None:
        self._evt.set()
