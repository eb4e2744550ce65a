"""Runs a probe: the app started like a cell (default) or an existing app (--target), then output."""

from __future__ import annotations

import csv
import statistics
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict
from rich.console import Console
from rich.table import Table
from rich.text import Text

from connbench import results as R
from connbench.loopback import require_local
from connbench.probe import load as probe
from connbench.probe import rules as plateau
from connbench.redact import redact_argv, url_without_userinfo
from connbench.results import RunPaths
from connbench.run.preflight import preflight
from connbench.run.stack import Stack, django_app
from connbench.sampler.readers import ARTICLE_QUERY, DbReader
from connbench.scenario.knobs import Knobs, ProbeSettings
from connbench.scenario.predict import predict
from connbench.scenario.project import Project
from connbench.services import gunicorn
from connbench.services.external import public_url
from connbench.services.postgres import PostgresServer
from connbench.services.procs import PrivateDir, RunAs, Supervisor, remove_service_dir, service_dir
from connbench.slots import SUPERUSER_RESERVED
from connbench.slots import app_slots as predict_app_slots


def _check_remote(target: str | None, database_url: str | None, allow_remote: bool) -> None:
    hosts: list[tuple[str, str | None]] = []
    try:
        if target:
            host = urlsplit(target).hostname
            if not host:
                raise ValueError("no host")
            hosts.append(("--target", host))
        if database_url:
            hosts.append(("--database-url", str(conninfo_to_dict(database_url).get("host") or "localhost")))
    except (ValueError, psycopg.Error):  # no detail: a parser's message may quote the string, password and all
        raise probe.ProbeError("--target / --database-url: not a valid URL or conninfo string "
                               "(e.g. http://127.0.0.1:8000 and postgresql://user@127.0.0.1:5432/db)") from None
    for flag, host in hosts:
        require_local(flag, host, allow_remote, "--allow-remote", "probe a remote app")


class ProbeRunner:
    def __init__(self, knobs: Knobs, settings: ProbeSettings, run_dir: Path, console: Console,
                 target: str | None = None, database_url: str | None = None, allow_remote: bool = False,
                 scenario_name: str = "probe", project: Project | None = None):
        self.project = project or Project()
        if bool(target) != bool(database_url):
            raise probe.ProbeError("--target and --database-url go together: the probe counts connections "
                                   "on the database the target app uses")
        _check_remote(target, database_url, allow_remote)
        self.k, self.s, self.console = knobs, settings, console
        self.paths = RunPaths(run_dir)
        self.target, self.database_url = target, database_url
        self.scenario_name = scenario_name
        self.sup = Supervisor(self.paths.pids)
        self.user: RunAs | None = None  # the service user, known once the preflight has passed
        self.server: PostgresServer | None = None
        self.stack: Stack | None = None

    # -- services -------------------------------------------------------------------------
    def _start_app(self, server: PostgresServer) -> list[str]:
        # raw samples of the probe's app, kept beside probe.json (not under cells/: it is no cell)
        paths = self.paths.probe_app
        paths.root.mkdir(parents=True, exist_ok=True)
        self.stack = Stack(self.k, server, self.sup, self.user, paths, project=self.project)
        self.stack.start()
        gunicorn.verify(self.stack.dynos, self.project.verify_paths[:1])
        return [d.url for d in self.stack.dynos]

    def _stop_app(self) -> None:
        if self.stack is not None:
            self.stack.stop()
            self.stack = None

    # -- run --------------------------------------------------------------------------------
    def run(self) -> R.ProbeDoc:
        self.user = preflight(self.paths.root, {self.k.server}, local_server=not self.target).user
        self.paths.root.mkdir(parents=True, exist_ok=True)
        modes: list[probe.ModeName] = ["sequential", "ramp"] if self.s.mode == "both" else [self.s.mode]
        results: dict[probe.ModeName, R.ProbeMode] = {}
        started = time.time()
        self.sup.private = PrivateDir(self.user)
        try:
            if self.target:
                db = DbReader({"conninfo": self.database_url}, None)
                targets = [self.target]
            else:
                pg_root = service_dir(self.paths.root, "pg", self.user)
                self.server = PostgresServer(pg_root / "probe", self.k.max_connections, self.sup, self.user,
                                             self.sup.private, server=self.k.server, auth=self.k.auth,
                                             tls=self.k.tls, django=django_app(self.project))
                self.console.print(f"starting PostgreSQL (max_connections={self.k.max_connections}) and "
                                   f"{self.k.dynos} dyno(s) x {self.k.workers} {self.k.worker_class} workers")
                conn = self.server.start()
                db = DbReader(conn.super_kwargs(), conn.app_user)
            counter = probe.Counter(db)
            counter.sample()  # connects: the server's limits are read then
            max_conn, reserved = db.limits
            slots = self.s.limit or predict_app_slots(max_conn, reserved=reserved)
            for i, mode in enumerate(modes):
                if not self.target:
                    if i:  # a fresh app: connections the previous mode opened must not count
                        self._stop_app()
                    assert self.server is not None  # started above: the probe runs its own app
                    targets = self._start_app(self.server)
                results[mode] = probe.run_mode(mode, self.s, probe.Hitter(targets, self.s.path), counter,
                                               self._progress, limit=slots,
                                               bound=predict(self.k).connections_max)
            db.close()
        finally:
            self.sup.stop_all()  # first: nothing below may leave a process running
            self._stop_app()
            self.paths.pids.unlink(missing_ok=True)
            remove_service_dir(self.paths.root, "pg")
            self.sup.private.remove()
        return self._finish(results, max_conn, reserved, started)

    def _progress(self, mode: str, st: R.ProbeStep) -> None:
        self.console.print(f"  {mode:10s} step {st.step + 1:2d}: load {st.load:3d}, {st.requests_total:6d} requests "
                           f"so far, count = {st.count}" + (f" (peak {st.peak_during} during)" if
                                                             st.peak_during != st.count else ""), highlight=False)

    def _finish(self, results: dict[probe.ModeName, R.ProbeMode], max_conn: int, reserved: int,
                started: float) -> R.ProbeDoc:
        app_slots = predict_app_slots(max_conn, reserved=reserved)  # the probe's own session: one slot
        pred = predict(self.k, app_slots=app_slots)
        best = results.get("ramp") or results["sequential"]
        plateau_value = best.plateau.plateau or 0
        per_dyno = best.per_dyno_at_plateau or -(-plateau_value // max(1, self.k.dynos))
        limit = self.s.limit or app_slots
        leaked = any(r.leak for r in results.values())
        grew = outgrew(results)
        mib, measure = backend_memory(self.paths.probe_app.backends) if not self.target else (None, None)
        doc = R.ProbeDoc.model_validate({
            "query": ARTICLE_QUERY,
            "params": self.k.model_dump(),
            "settings": self.s.model_dump(),
            "target": url_without_userinfo(self.target) if self.target else "started by connbench",
            "database": public_url(self.database_url) if self.database_url else (
                self.server.conn.public() if self.server and self.server.conn else None),
            "server": {"max_connections": max_conn, "reserved_slots": reserved, "probe_sessions": 1,
                       "app_slots": app_slots,
                       "superuser_reserved_by_harness": SUPERUSER_RESERVED if not self.target else None},
            "predicted": pred.model_dump(),
            "results": results,
            "plateau": plateau_value,
            # a leak predicted (no bound) matches a leak found; else the plateau must equal the prediction
            "matches": grew if pred.bounded is False else (
                pred.at_rest is not None and plateau_value == pred.at_rest),
            "per_dyno": per_dyno,
            "limit": limit,
            "max_dynos": None if leaked else plateau.max_dynos(per_dyno, limit, self.s.preboot, self.s.one_off),
            "headroom": plateau.with_memory(
                [{"dynos": None, "connections": plateau_value, "limit": limit, "fits": False,
                  "note": "no plateau: the app leaks connections, so no number of dynos fits for long"}]
                if leaked else plateau.headroom(per_dyno, limit, preboot=self.s.preboot, one_off=self.s.one_off),
                mib, measure),
            "notes": probe.explain(results, pred.at_rest, self.k.worker_class, self.k.threads),
            "started": started,
            "ended": time.time(),
        })
        doc.dump(self.paths.probe)
        R.Manifest(kind="probe", run_id=self.paths.root.name, argv=redact_argv(sys.argv),
                   scenario_name=self.scenario_name, description="connbench probe", started=started,
                   ended=doc.ended, status="completed").dump(self.paths.manifest)
        return doc


def outgrew(results: Mapping[probe.ModeName, R.ProbeMode]) -> bool:
    """What a "no bound" prediction predicts: a leak found, or a count that never settled and ended above where
    it started (the probe stopped at the server's limit or out of steps before the leak rule could fire)."""
    return any(r.leak is not None or (not r.plateau.settled and bool(r.steps) and
                                      r.steps[-1].count > r.steps[0].count) for r in results.values())


def backend_memory(path: Path) -> tuple[float | None, Literal["pss", "rss"] | None]:
    """One app backend's server memory in MiB over the probe's own samples (backends.csv's mem rows): the median
    PSS, else the median RSS (labelled: it counts shared pages in full); (None, None) when none was read."""
    pss: list[float] = []
    rss: list[float] = []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                if row.get("event") != "mem":
                    continue
                for values, key in ((pss, "pss_bytes"), (rss, "rss_bytes")):
                    try:
                        values.append(float(row.get(key) or "nan") / 2**20)
                    except ValueError:  # a torn last line
                        pass
    except OSError:  # no sampler (--target), or it wrote nothing
        return None, None
    pss, rss = [v for v in pss if v == v], [v for v in rss if v == v]  # NaN: not read
    if pss:
        return statistics.median(pss), "pss"
    return (statistics.median(rss), "rss") if rss else (None, None)


def print_summary(doc: R.ProbeDoc, console: Console) -> None:
    console.print("counted with the Heroku article's query:", highlight=False)
    console.print("  " + doc.query + ";", highlight=False, soft_wrap=True)
    t = Table(title="connbench probe")
    for col in ("mode", "plateau", "steps", "requests to plateau", "peak during load", "settled"):
        t.add_column(col)
    for r in doc.results.values():
        p = r.plateau
        t.add_row(r.mode, str(p.plateau), str(p.steps), str(r.requests_to_plateau),
                  str(r.peak_during_load), "yes" if p.settled else f"no ({r.limited_by} limit)")
    Console(width=max(console.width, 120), markup=False).print(t)
    pred = doc.predicted
    said = "no bound" if pred.bounded is False else f"{pred.at_rest} at rest"
    if pred.bounded is False:
        verdict = "leak, as predicted" if doc.matches else "no leak seen, though one was predicted"
    else:
        verdict = "matches" if doc.matches else "does not match"
    console.print(Text(f"predicted: {said} ({pred.basis}) -> ")
                  + Text(verdict, style="green" if doc.matches else "yellow"))
    for note in doc.notes:
        console.print(f"  - {note}", highlight=False)
    leaked = doc.max_dynos is None and any(r.leak for r in doc.results.values())
    console.print(f"headroom: {'at least ' if leaked else ''}{doc.per_dyno} connections per dyno (measured"
                  f"{', and growing' if leaked else ''}), limit {limit_arithmetic(doc)}", highlight=False)
    h = Table()
    memory = any(row.memory_mib is not None for row in doc.headroom)
    for col in ("dynos", "connections", "fits", *(("server memory",) if memory else ())):
        h.add_column(col)
    for row in doc.headroom:
        mem = (f"{row.memory_mib:.0f} MiB {(row.memory_measure or '').upper()}",) if row.memory_mib is not None \
            else ("-",) if memory else ()
        h.add_row("-" if row.dynos is None else str(row.dynos), f"{row.connections} of {row.limit}",
                  "yes" if row.fits else "NO", *mem)
        if row.note:
            console.print(f"  {row.note}", highlight=False)
    Console(width=max(console.width, 120), markup=False).print(h)
    if memory:
        rss = any(row.memory_measure == "rss" for row in doc.headroom)
        console.print("  server memory: one app backend's median " + (
            "RSS (PSS not readable; RSS counts shared pages in every backend, so it overstates)" if rss else
            "PSS (its own pages and its share of shared ones)") + " over the probe's samples, x connections",
            highlight=False)
    if doc.max_dynos is not None:
        s = doc.settings
        pre, one = s.get("preboot", False), s.get("one_off", 0)
        used = plateau.need(doc.max_dynos, doc.per_dyno, pre, one)
        extra = " and ".join(x for x in ("twice during a Preboot deploy" if pre else "",
                                        f"{one} one-off dyno(s)" if one else "") if x)
        console.print(f"at most {doc.max_dynos} dynos of this shape fit in {doc.limit} connections "
                      f"({used} connections{', counting ' + extra if extra else ''})")


def limit_arithmetic(doc: R.ProbeDoc) -> str:
    """The limit, said the way it was computed: --limit as given, else the server's app slots, worked out."""
    given = doc.settings.get("limit")
    if given:
        return f"{doc.limit} (--limit {given})"
    srv = doc.server
    own = srv.probe_sessions
    return (f"{doc.limit} (max_connections {srv.max_connections} - {srv.reserved_slots} reserved - {own} "
            f"for the probe's own session = {srv.max_connections - srv.reserved_slots - own})")


def check_database(database_url: str) -> None:
    try:
        with psycopg.connect(database_url, connect_timeout=5):
            pass
    except psycopg.Error as e:
        raise probe.ProbeError(f"cannot connect with --database-url ({public_url(database_url)}): {e}") from None
