"""Reading a run written by an older schema: one step per version, applied in memory.

Like asv's update_to_2: each step takes one file of a run as the old schema wrote it and returns it as
the next schema reads it. A reader never rewrites a run's raw files: the user's data stays as recorded.
"""

from __future__ import annotations

import math
from typing import Any

from connbench.results.schema import (
    CELL_JSON,
    DB_CSV,
    MANIFEST_JSON,
    PROBE_JSON,
    PROCESSES_CSV,
    REQUESTS_CSV,
    SCHEMA_VERSION,
    SchemaVersionError,
)


def _number(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _cpu_percent_to_seconds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Schema 1's cpu_percent, the rate over the interval that ended at t (NaN at a pid's first sample),
    integrated back per (component, dyno, pid), in time order, into cumulative cpu_seconds from 0."""
    timed = sorted((t, i) for i, row in enumerate(rows) if not math.isnan(t := _number(row.get("t"))))
    last: dict[tuple[object, ...], tuple[float, float]] = {}  # series -> (t, cpu_seconds) at its previous sample
    out: dict[int, dict[str, Any]] = {}
    for t, i in timed:  # a row without a time (a torn line) has no place in a series: dropped
        row = rows[i]
        key = (row.get("component"), row.get("dyno"), row.get("pid"))
        t_prev, seconds = last.get(key, (t, 0.0))
        pct = _number(row.get("cpu_percent"))
        seconds += pct / 100.0 * (t - t_prev) if math.isfinite(pct) else 0.0
        last[key] = (t, seconds)
        out[i] = {("cpu_seconds" if k == "cpu_percent" else k): (seconds if k == "cpu_percent" else v)
                  for k, v in row.items()}
    return [out[i] for i in sorted(out)]


def _requests_from_t_start(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Schema 1's requests.csv rows (t_start, endpoint, latency_ms, status, error_class, dyno) in schema 2's
    shape: a closed loop sends when it means to, so t_intended = t_start, and the latency it measured from
    t_start is the service time too (service_ms = latency_ms). Values are copied as written (text stays text)."""
    out = []
    for row in rows:
        new = {"t_intended": row.get("t_start"), "t_start": row.get("t_start"), "endpoint": row.get("endpoint"),
               "latency_ms": row.get("latency_ms"), "service_ms": row.get("latency_ms")}
        out.append({**new, **{k: v for k, v in row.items() if k not in new}})
    return out


def update_to_2(name: str, data: Any) -> Any:
    """One file of a schema-1 run as schema 2 reads it, in memory (a reader never rewrites raw files).

    name is the file's name; data its JSON document, or for a CSV its rows as dicts.
    """
    if name == PROCESSES_CSV:
        return _cpu_percent_to_seconds(data)
    if name == REQUESTS_CSV:
        return _requests_from_t_start(data)
    if name in (MANIFEST_JSON, CELL_JSON, PROBE_JSON):
        doc = {**data, "schema_version": 2}
        if name == MANIFEST_JSON:
            doc.setdefault("kind", "matrix")  # schema 1 wrote kind for probe runs only
        return doc
    return data


# Schema 3's Server-Timing columns (the contract's TIMING_COLUMNS grew in schema 5: update_to_5 adds those)
SCHEMA_3_TIMING = ("connect_ms", "pool_ms", "db_ms", "app_ms", "new_conn")
SCHEMA_5_CONNECTION = ("backend_pid", "worker_pid", "thread", "conn_close")


def update_to_3(name: str, data: Any) -> Any:
    """One file of a schema-2 run as schema 3 reads it: requests.csv rows get blank Server-Timing columns
    and db.csv rows a blank ssl_backends (schema 2 did not measure them: blank is "not measured", never 0)."""
    if name == REQUESTS_CSV:
        return [{**row, **{c: row.get(c, "") for c in SCHEMA_3_TIMING}} for row in data]
    if name == DB_CSV:
        return [{**row, "ssl_backends": row.get("ssl_backends", "")} for row in data]
    if name in (MANIFEST_JSON, CELL_JSON, PROBE_JSON):
        return {**data, "schema_version": 3}
    return data


def update_to_4(name: str, data: Any) -> Any:
    """One file of a schema-3 run as schema 4 reads it: its requests came from Locust on this machine, not told
    apart by process ("local"); its processes rows name no generator."""
    if name == REQUESTS_CSV:
        return [{**row, "generator": row.get("generator") or "local"} for row in data]
    if name == PROCESSES_CSV:
        return [{**row, "generator": row.get("generator", "")} for row in data]
    if name in (MANIFEST_JSON, CELL_JSON, PROBE_JSON):
        return {**data, "schema_version": 4}
    return data


def update_to_5(name: str, data: Any) -> Any:
    """One file of a schema-4 run as schema 5 reads it: its requests name no backend, worker, thread or close
    (blank: not measured, never 0); it has no backends.csv, which readers take as absent."""
    if name == REQUESTS_CSV:
        return [{**row, **{c: row.get(c, "") for c in SCHEMA_5_CONNECTION}} for row in data]
    if name in (MANIFEST_JSON, CELL_JSON, PROBE_JSON):
        return {**data, "schema_version": 5}
    return data


SCHEMA_6_HAZARDS = ("hazards", "hazard_examples")


def update_to_6(name: str, data: Any) -> Any:
    """One file of a schema-5 run as schema 6 reads it: its requests carry no hazards (blank: not looked for)."""
    if name == REQUESTS_CSV:
        return [{**row, **{c: row.get(c, "") for c in SCHEMA_6_HAZARDS}} for row in data]
    if name in (MANIFEST_JSON, CELL_JSON, PROBE_JSON):
        return {**data, "schema_version": 6}
    return data


def update_to_7(name: str, data: Any) -> Any:
    """One file of a schema-6 run as schema 7 reads it: its requests carry no health-check time (blank: not
    measured); its events name no pause (schema 6 had none)."""
    if name == REQUESTS_CSV:
        return [{**row, "check_ms": row.get("check_ms", "")} for row in data]
    if name in (MANIFEST_JSON, CELL_JSON, PROBE_JSON):
        return {**data, "schema_version": 7}
    return data


# version N -> N + 1
UPDATES = {1: update_to_2, 2: update_to_3, 3: update_to_4, 4: update_to_5, 5: update_to_6, 6: update_to_7}


def upgrade(name: str, data: Any, version: int) -> Any:
    """A file written with schema `version` as this version reads it."""
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(f"{name} was written with results schema {version}; this connbench reads "
                                 f"schema {SCHEMA_VERSION} and older: use a newer connbench")
    for v in range(version, SCHEMA_VERSION):
        data = UPDATES[v](name, data)
    return data


