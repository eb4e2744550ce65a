"""The static HTML report of a run: index.html next to manifest.json, opened straight from disk.

Every link is relative and nothing is loaded from the network, so the run directory can be zipped,
mailed or served by any static server.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict
from urllib.parse import quote

import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape

from connbench import results as R
from connbench.analysis import aftermath, expectations
from connbench.analysis.charts import draw_charts
from connbench.analysis.charts.common import Chart
from connbench.analysis.charts.growth import draw_growth
from connbench.analysis.charts.hockey import draw_hockey
from connbench.analysis.charts.probe import draw_probe
from connbench.analysis.charts.timing import draw_timing
from connbench.analysis.findings import findings, labels
from connbench.analysis.forks import fork_warning
from connbench.analysis.hazards import hazards_frame, verdict
from connbench.analysis.load import CellData, RunData, load_run
from connbench.analysis.settings import Settings, groups_frame, with_intervals
from connbench.analysis.summarize import summary_frame, summary_paths, write_summaries
from connbench.analysis.values import missing
from connbench.analysis.windows import LAG_LIMIT_MS, SATURATION_PCT
from connbench.analysis.write_guard import check_outputs, writing

TEMPLATES = Path(__file__).resolve().parent / "templates"
# The summary columns worth a glance; the full table is summary.csv.
# Response time (from when a request should have been sent) beside service time (from when it was).
TABLE_COLUMNS = (
    ("cell_id", "cell"), ("status", "status"), ("pooling", "pooling"), ("conn_max_age", "CONN_MAX_AGE"),
    ("health_checks", "health checks"), ("dynos", "dynos"), ("workers", "workers"), ("threads", "threads"),
    ("users", "users"), ("requests", "requests"), ("offered_rps", "offered req/s"), ("rps", "req/s"),
    ("achieved_rps", "answered req/s"), ("dropped", "dropped"), ("failure_rate", "failure rate"),
    ("lat_p50", "resp p50 ms"), ("svc_p50", "svc p50 ms"), ("lat_p95", "resp p95 ms"), ("svc_p95", "svc p95 ms"),
    ("lat_p99", "resp p99 ms"), ("svc_p99", "svc p99 ms"), ("lag_p99_ms", "schedule lag p99 ms"),
    ("conn_peak", "conn peak"), ("conn_plateau", "conn plateau"), ("predicted_connections", "predicted"),
    ("conn_held", "held after"), ("churn_per_s", "new sessions/s"), ("new_conn_per_s", "app new conns/s"),
    ("connect_ms_mean", "connect ms mean"), ("connect_cost_ms", "calibrated connect ms"),
    ("connect_s_per_s", "s connecting per s"), ("pool_ms_p95", "pool wait p95 ms"), ("db_ms_p50", "db p50 ms"),
    ("outside_ms_p50", "outside app p50 ms"), ("pgb_clients_peak", "PgB clients"),
    ("pgb_servers_peak", "PgB servers"), ("cpu_locust", "Locust CPU %"), ("generator_saturated", "generator saturated"),
    ("generator_lagged", "generator lagged"), ("requests_per_connection_p50", "req per conn p50"),
    ("threads_seen", "threads seen"), ("pss_backend_mib_p50", "PSS/backend MiB"),
    ("rss_backend_mib_p50", "RSS/backend MiB"), ("pss_total_mib", "backends PSS MiB"),
)
# Open-model columns, shown when some cell is open-model (in a closed loop they say nothing).
OPEN_COLUMNS = ("offered_rps", "achieved_rps", "dropped", "lag_p99_ms", "generator_lagged")
# Each connection's life story (analysis/lifecycle.py), shown when some cell recorded it (schema 5's backends.csv).
LIFE_COLUMNS = ("requests_per_connection_p50", "threads_seen", "pss_backend_mib_p50", "rss_backend_mib_p50",
                "pss_total_mib")
GROUP_COLUMNS = ("group", "completed", "rank", "rps", "rps_lo", "rps_hi", "lat_p50", "lat_p50_lo", "lat_p50_hi",
                 "lat_p95", "lat_p95_lo", "lat_p95_hi", "lat_p99", "lat_p99_lo", "lat_p99_hi", "churn_per_s",
                 "churn_per_s_lo", "churn_per_s_hi", "conn_peak", "conn_peak_lo", "conn_peak_hi", "interval_method")


def fmt(v: Any) -> str:
    """Short human form: 3 significant digits for floats, yes/no for booleans, blank for missing."""
    if missing(v):
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e15:
            return str(int(v))
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
    return str(v)


def fmt_time(v: Any) -> str:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return datetime.fromtimestamp(float(v), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return "" if v is None else str(v)


class TableCell(TypedDict):
    text: str
    sort: str
    num: bool


def _cell(v: Any) -> TableCell:
    """A table cell: display text plus the raw value used to sort (numbers sort as numbers)."""
    if missing(v):
        return {"text": "", "sort": "", "num": False}
    if isinstance(v, bool):
        return {"text": fmt(v), "sort": str(int(v)), "num": False}
    if isinstance(v, int | float):
        return {"text": fmt(v), "sort": repr(float(v)), "num": True}
    return {"text": fmt(v), "sort": str(v), "num": False}


def _table(df: pd.DataFrame, columns: Iterable[tuple[str, str]]) -> dict[str, Any]:
    cols = [(c, label) for c, label in columns if c in df.columns]
    rows = [[_cell(r[c]) for c, _ in cols] for r in df.to_dict("records")]
    return {"headers": [label for _, label in cols], "rows": rows}


def _generic_table(items: Any) -> dict[str, Any] | None:
    """A list of dicts (from a JSON hook file) as a table with the union of their keys."""
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
        return None
    headers = list(dict.fromkeys(k for i in items for k in i))
    return {"headers": headers, "rows": [[_cell(i.get(h)) for h in headers] for i in items]}


def _href(*parts: str) -> str:
    return "/".join(quote(p) for p in parts)


def _scenario(m: R.Manifest) -> dict[str, Any]:
    return {"name": m.scenario_name or "(unnamed scenario)", "description": m.description,
            "path": m.scenario_file or ""}


def _schema(run: RunData) -> str:
    if run.written_version == run.schema_version:
        return str(run.schema_version)
    return f"{run.written_version} (read as {run.schema_version} through the migration in connbench.results)"


def environment(run: RunData) -> list[tuple[str, str]]:
    m = run.manifest
    commit = (m.git.commit or "unknown") + (" (uncommitted changes)" if m.git.dirty else "")
    rows = [("run id", run.run_id), ("run kind", m.kind), ("run status", m.status), ("command", " ".join(m.argv)),
            ("scenario file", m.scenario_file or ""), ("scenario hash", m.scenario_hash or ""),
            ("git commit", commit), ("started", fmt_time(m.started)), ("ended", fmt_time(m.ended))]
    if m.ended is not None:
        rows.append(("wall time", f"{m.ended - m.started:.0f} s"))
    rows += [(f"host {k.removesuffix('_bytes')}", f"{v / 2**30:.1f} GiB" if k.endswith("_bytes") and
              isinstance(v, int | float) else fmt(v)) for k, v in m.host.items()]
    rows.append(("versions", ", ".join(f"{k} {v}" for k, v in m.versions.items() if v)))
    if m.sample_interval_s is not None:
        rows.append(("sample interval", f"{fmt(m.sample_interval_s)} s"))
    if m.overhead.per_cell_mean_s is not None:
        rows.append(("overhead per cell", f"mean {fmt(m.overhead.per_cell_mean_s)} s, "
                                          f"max {fmt(m.overhead.per_cell_max_s)} s"))
    rows.append(("schema version", _schema(run)))
    return [(k, v) for k, v in rows if v]


def damaged(run: RunData) -> list[dict[str, str]]:
    """Damaged cells with their reason, for the banner at the top of the report."""
    return [{"cell": c.cell_id, "text": f"{c.damage} (recorded status: {c.recorded_status})"}
            for c in run.cells if c.damage]


def _pool_wait_measured(row: dict[str, Any]) -> str:
    """What the cell showed of the wait its pool predicted: Server-Timing's pool wait and the pool's timeouts."""
    timeouts = sum(int(v) for k, v in row.items() if k in ("err_django_pool_timeout", "err_dbcp_pool_timeout")
                   and not missing(v))
    p95 = row.get("pool_ms_p95")
    waited = "no pool wait recorded" if missing(p95) else f"pool wait p95 {fmt(p95)} ms (Server-Timing)"
    return f"{waited}; {timeouts:,} requests failed with the pool's timeout"


def warnings(run: RunData, summary: pd.DataFrame) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    cells = {c.cell_id: c for c in run.cells}

    def add(level: str, cell: str, text: str) -> None:
        out.append({"level": level, "cell": cell, "text": text})

    for row in summary.to_dict("records"):
        cid, status = row["cell_id"], row["status"]
        cell = cells.get(cid)
        if status == "damaged":
            add("error", cid, f"cell damaged: {row.get('damage')}; its figures are left out of this report")
        elif cell is not None and cell.completed and cell.requests.dropped:
            add("warn", cid, f"{cell.requests.dropped_note}; they are not counted as requests")
        if status in ("failed", "interrupted"):
            add("error", cid, f"cell {status}: {row.get('error') or 'no error recorded'}")
        elif status == "skipped":
            add("info", cid, f"cell skipped: {row.get('skip_reason') or 'no reason recorded'}")
        elif status in ("pending", "running"):
            add("info", cid, f"cell not finished yet (status {status}): the run may still be going")
        elif status not in ("completed", "damaged"):
            add("error", cid, f"cell did not finish (status {status})")
        if row.get("generator_lagged") is True:
            add("warn", cid, f"the generator, not the app, limited this test: schedule lag p99 = "
                f"{fmt(row.get('lag_p99_ms'))} ms (requests were sent later than the schedule said, so the offered "
                "load was not delivered on time; response times include the wait)")
        if not missing(row.get("dropped")) and row["dropped"] > 0:
            add("warn", cid, f"{fmt(row['dropped'])} scheduled requests dropped in the measure window: "
                f"max_in_flight ({fmt(row.get('max_in_flight'))} per Locust process) requests were already out; "
                "never sent, so not "
                "counted as requests, failures or response times")
        busiest, top = row.get("generator_busiest"), row.get("generator_cpu_max")
        if not missing(busiest) and not missing(top) and top >= SATURATION_PCT:
            add("warn", cid, f"Locust worker {busiest} saturated: it used {fmt(row['generator_cpu_max'])} % of a "
                "core during measure (summary_generators.csv has every worker), so its share of the load was its "
                "limit, not the app's: add workers ([generator] workers) or machines")
        elif row.get("generator_saturated") is True:
            add("warn", cid, f"load generator saturated: Locust averaged {fmt(row.get('locust_cpu_per_proc'))} % "
                f"of a core per process ({fmt(row.get('locust_procs'))} process(es)) during measure, so req/s may "
                "be the generator's limit, not the app's: add Locust processes ([generator] workers, or "
                "--generator-workers N)")
        if not missing(row.get("generator_lag_p99_max")) and row["generator_lag_p99_max"] > LAG_LIMIT_MS:
            add("warn", cid, f"Locust worker {row.get('generator_laggiest')} fell behind the schedule: its lag p99 "
                f"was {fmt(row['generator_lag_p99_max'])} ms")
        if not missing(row.get("generators_lost")) and row["generators_lost"]:
            add("warn", cid, f"Locust worker(s) lost mid-test: {row.get('generators_lost_names')}; the load they "
                "carried stopped then (events.csv has when), so the offered load fell short")
        if row.get("machine_saturated") is True:
            add("warn", cid, f"machine saturated: the harness's components used {fmt(row.get('machine_cpu_pct'))} % of "
                f"the machine's {fmt(row.get('machine_cpus'))} cores during measure, so its req/s and response times "
                "describe this machine, not the setting")
        forked = fork_warning(cell) if cell is not None and cell.completed else None
        if forked:
            add("error", cid, forked)
        wait = cell.doc.predicted.pool_wait if cell is not None and cell.doc is not None else None
        if wait and status == "completed":
            add("warn", cid, f"pool smaller than concurrency: {wait}. Measured: {_pool_wait_measured(row)}")
        tmc = sum(int(v) for k, v in row.items()
                  if k.startswith("err_") and "too_many_clients" in k and not missing(v))
        if tmc:
            add("warn", cid, f"{tmc} requests failed with 'too many clients': PostgreSQL max_connections "
                f"({fmt(row.get('max_connections_observed'))}) was reached")
        errs = {k[4:]: int(v) for k, v in row.items() if k.startswith("err_") and not missing(v) and v}
        if errs:
            add("info", cid, f"{sum(errs.values())} of {fmt(row.get('requests'))} measured requests failed "
                f"({fmt(100 * row['failure_rate'])} %): " + ", ".join(f"{k} {n}" for k, n in sorted(errs.items())))
    return out


def _probe(run: RunData) -> dict[str, Any] | None:
    """probe.json as a summary, a table per mode, the headroom table and the probe's notes."""
    if run.probe_problem:
        return {"error": run.probe_problem, "scalars": [], "tables": [], "notes": []}
    p = run.probe
    if p is None:
        return None
    scalars = [("query", p.query + ";"), ("target", p.target),
               ("plateau", fmt(p.plateau)),
               ("predicted", f"no bound ({p.predicted.basis})") if p.predicted.bounded is False else
               ("predicted at rest", f"{fmt(p.predicted.at_rest)} ({p.predicted.basis})"),
               ("matches the prediction", fmt(p.matches)), ("connections per dyno (measured)", fmt(p.per_dyno)),
               ("limit", f"{p.limit} (max_connections {p.server.max_connections} - {p.server.reserved_slots} "
                         f"reserved - {p.server.probe_sessions} for the probe's own session)"),
               ("dynos that fit", fmt(p.max_dynos))]
    modes = [{"mode": r.mode, "plateau": r.plateau.plateau, "steps": r.plateau.steps,
              "requests to plateau": r.requests_to_plateau, "peak during load": r.peak_during_load,
              "settled": r.plateau.settled, "limited by": r.limited_by,
              "leak": f"{r.leak.kind}: one per {r.leak.per_requests:.3g} requests" if r.leak else "no"}
             for r in p.results.values()]
    headroom = [h.model_dump(exclude_none=True) for h in p.headroom]
    tables = [(name, t) for name, rows in (("modes", modes), ("headroom", headroom)) if (t := _generic_table(rows))]
    return {"error": None, "scalars": [(k, v) for k, v in scalars if v], "tables": tables, "notes": p.notes}


def _cell_section(cell: CellData, row: dict[str, Any], charts: list[Chart]) -> dict[str, Any]:
    links = []
    if cell.root is not None:
        paths = R.CellPaths(cell.root)
        for label, path in [("Locust report", paths.locust_report), *[(p.name, p) for p in (
                paths.json, paths.requests, paths.connections, paths.db, paths.pgbouncer, paths.processes,
                paths.events, paths.backends, paths.connections_life)]]:
            if path.is_file():
                links.append((label, _href(*path.relative_to(cell.root.parent.parent).parts)))
    params = ", ".join(f"{k}={fmt(v)}" for k, v in cell.params.items() if not isinstance(v, dict))
    return {"id": cell.cell_id, "status": cell.status, "error": cell.damage or cell.error or cell.skip_reason,
            "axes": ", ".join(f"{k}={fmt(v)}" for k, v in cell.axes.items()), "params": params, "links": links,
            "charts": [c for c in charts if c.cell_id == cell.cell_id]}


def _chart_ctx(chart: Chart, root: Path) -> dict[str, str]:
    return {"title": chart.title, "png": _href(*chart.png.relative_to(root).parts),
            "svg": _href(*chart.svg.relative_to(root).parts), "kind": chart.kind}


def _summary_columns(summary: pd.DataFrame) -> tuple[tuple[str, str], ...]:
    def shown(cols: tuple[str, ...]) -> bool:
        return any(c in summary and summary[c].notna().any() for c in cols)
    open_model, life = shown(("offered_rps",)), shown(LIFE_COLUMNS)
    return tuple((c, label) for c, label in TABLE_COLUMNS
                 if (open_model or c not in OPEN_COLUMNS) and (life or c not in LIFE_COLUMNS))


def context(run: RunData, summary: pd.DataFrame, groups: pd.DataFrame, charts: list[Chart],
            results: list[expectations.ExpectationResult], found: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the template shows; `results` are the evaluated expectations (expectations.evaluate)."""
    m = run.manifest
    rows = {r["cell_id"]: r for r in summary.to_dict("records")}
    cells = []
    for cell in run.cells:
        sec = _cell_section(cell, rows.get(cell.cell_id, {}), charts)
        sec["charts"] = [_chart_ctx(c, run.root) for c in sec["charts"]]
        cells.append(sec)
    pruned = [{"axes": ", ".join(f"{k}={v}" for k, v in p.axes.items()), "reason": p.reason} for p in m.pruned]
    repeated = groups[groups["cells"] > 1] if len(groups) else groups
    return {
        "scenario": _scenario(m),
        "findings": found,
        "pooling": verdict(run, hazards_frame(run)),
        "hazards_csv": R.HAZARDS_CSV,
        "environment": environment(run),
        "statuses": sorted(Counter(c.status for c in run.cells).items()),
        "warnings": warnings(run, summary),
        "damaged": damaged(run),
        "expectations": _generic_table(results),
        "expectation_rows": results,
        "probe": _probe(run),
        "table": _table(summary, _summary_columns(summary)),
        "groups": _table(repeated, [(c, c) for c in GROUP_COLUMNS]) if len(repeated) else None,
        "overview": [_chart_ctx(c, run.root) for c in charts if c.cell_id is None],
        "cells": cells,
        "pruned": pruned,
        "summary_csv": R.SUMMARY_CSV,
        "groups_csv": R.SUMMARY_GROUPS_CSV,
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }


def render(ctx: dict[str, Any]) -> str:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]),
                      trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html.j2").render(**ctx)


def build_report(run_dir: Path | str, charts: bool = True) -> Path:
    """Regenerate summary.csv, summary_groups.csv, charts/ and index.html of a run; returns index.html.
    charts False (--no-charts): everything but the charts, in a fraction of the time; charts/ is left alone."""
    run = load_run(run_dir)
    # every output's kind first: a wrong one must stop the rebuild before anything is replaced
    check_outputs([*summary_paths(run), run.paths.report, run.paths.expectations], [run.paths.charts])
    cells = summary_frame(run)
    settings = Settings(run, cells)
    groups = groups_frame(run, cells, settings)
    summary = with_intervals(cells, groups)
    with writing(run.root):
        write_summaries(run, summary, groups)
        drawn = []
        if charts:
            drawn = draw_charts(run, summary, groups)  # it clears charts/ first
            names = labels(groups, settings.axes) if len(groups) else {}
            timing = draw_timing(run, names) if len(groups) else []
            # overview charts first, the hockey stick on top, connections left behind next
            drawn = draw_hockey(run, summary) + draw_growth(run, summary, names) + draw_probe(run) + drawn[:1] \
                + timing + drawn[1:]
        results = expectations.evaluate(run, summary)
        if results or run.paths.expectations.exists():
            expectations.write(run.root, results)
        found = findings(groups, settings, run.manifest.versions)
        if found is not None:  # the faults' aftermath and the health checks' cost, from the raw requests
            found["claims"] = [*found["claims"], *aftermath.sentences(run)]
        html = render(context(run, summary, groups, drawn, results, found))
        R.write_text_atomic(run.paths.report, html)
    return run.paths.report
