"""Read a run directory defensively: a crashed cell leaves partial files, never a crash here.

A cell is *damaged* when the files that define it cannot be used: cell.json is not a JSON object, or a
cell the harness recorded as completed has no usable requests.csv (missing, empty, header only,
unparseable) or no directory at all. The harness records a completed cell with 0 requests as failed,
so for a completed cell these are lost or corrupted files, never "0 requests". A damaged cell's
figures are left out everywhere and its reason is reported.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import AnalysisError
from connbench import results as R

# Columns that must parse as numbers; a row whose `t` does not parse (a torn last line) is dropped.
_NUMERIC = {
    R.REQUESTS_CSV: ("t_start", "latency_ms", "status"),
    R.CONNECTIONS_CSV: ("t", "count"),
    R.DB_CSV: R.DB_COLUMNS,
    R.PGBOUNCER_CSV: R.PGBOUNCER_COLUMNS,
    R.PROCESSES_CSV: ("t", "pid", "cpu_percent", "rss_bytes"),
    R.EVENTS_CSV: ("t",),
}
_COLUMNS = {
    R.REQUESTS_CSV: R.REQUESTS_COLUMNS,
    R.CONNECTIONS_CSV: R.CONNECTIONS_COLUMNS,
    R.DB_CSV: R.DB_COLUMNS,
    R.PGBOUNCER_CSV: R.PGBOUNCER_COLUMNS,
    R.PROCESSES_CSV: R.PROCESSES_COLUMNS,
    R.EVENTS_CSV: R.EVENTS_COLUMNS,
}
_TERMINAL = ("completed", "failed", "skipped", "interrupted")


def _typed(df: pd.DataFrame, name: str) -> pd.DataFrame:
    for col in _COLUMNS.get(name, ()):
        if col not in df.columns:
            df[col] = ""
    for col in _NUMERIC.get(name, ()):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    key = "t_start" if name == R.REQUESTS_CSV else "t"
    if key in df.columns:
        df = df[df[key].notna()].reset_index(drop=True)
    return df


def empty_table(name: str) -> pd.DataFrame:
    return _typed(pd.DataFrame(columns=list(_COLUMNS.get(name, ()))), name)


def clip(text: Any, limit: int = 80) -> str:
    """File content quoted in a message: one printable line, bounded."""
    s = "".join(ch if ch.isprintable() else "?" for ch in str(text))
    return s if len(s) <= limit else s[: limit - 3] + "..."


@dataclass(frozen=True)
class RequestsRead:
    """requests.csv as read: the usable rows, why the file is unusable (None if usable), what was dropped."""

    df: pd.DataFrame
    problem: str | None = None
    dropped: int = 0
    dropped_note: str = ""


# The request log writer (locustfiles/requestlog.py) always writes these as numbers (status 0 = no response).
_REQUIRED = ("t_start", "latency_ms", "status")


def _numbers(df: pd.DataFrame) -> pd.Series:
    """Convert the required columns in place; True for rows where each is a finite number.

    A blank status stays allowed (then the request counts as failed, as it always has).
    """
    ok = pd.Series(True, index=df.index)
    for col in _REQUIRED:
        raw = df[col]
        df[col] = num = pd.to_numeric(raw, errors="coerce")
        good = np.isfinite(num)
        if col == "status" and not good.all():
            good |= num.isna() & (raw.str.strip() == "")
        ok &= good
    return ok


def read_requests(path: Path) -> RequestsRead:
    """Parse requests.csv record by record so that a torn or malformed line is dropped and counted, never a request."""
    name, empty = path.name, empty_table(R.REQUESTS_CSV)
    if not path.exists():
        return RequestsRead(empty, f"{name} is missing")
    if not path.is_file():
        return RequestsRead(empty, f"{name} is not a regular file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return RequestsRead(empty, f"{name} cannot be read ({clip(exc.strerror or type(exc).__name__)})")
    if not raw.strip():
        return RequestsRead(empty, f"{name} is empty ({len(raw)} bytes)")
    # surrogateescape: stray bytes never raise here; they fail the header check or the number parse below.
    text = raw.decode("utf-8-sig", errors="surrogateescape")
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        return RequestsRead(empty, f"{name} is unparseable ({clip(exc)})")
    lines = [i for i, r in enumerate(rows) if len(r) > 1 or (r and r[0].strip())]  # blank lines are no rows
    if not lines:
        return RequestsRead(empty, f"{name} holds only blank lines")
    header = [h.strip() for h in rows[lines[0]]]
    if not set(_REQUIRED) <= set(header) or len(set(header)) != len(header):
        return RequestsRead(empty, f"{name} is unparseable: its first line is not a requests.csv header "
                                   f"(expected {','.join(R.REQUESTS_COLUMNS)}; found '{clip(','.join(header), 60)}')")
    lines = lines[1:]
    if not lines:
        return RequestsRead(empty, f"{name} has a header but no rows")
    width = len(header)
    good = [i for i in lines if len(rows[i]) == width]
    df = pd.DataFrame([rows[i] for i in good], columns=header, dtype=str)
    ok = _numbers(df).to_numpy(bool) if len(df) else np.zeros(0, bool)
    kept = set(np.asarray(good, dtype=int)[ok].tolist())
    bad = [i + 1 for i in lines if i not in kept]  # 1-based line numbers (exact unless a field spans lines)
    last = rows[lines[-1]]
    note = _dropped_note(bad, lines[-1] + 1, text.endswith(("\n", "\r")), len(last) < width)
    df = _typed(df[ok].reset_index(drop=True), R.REQUESTS_CSV)
    if not len(df):
        return RequestsRead(empty, f"{name} has no parseable row ({note})", len(bad), note)
    return RequestsRead(df, None, len(bad), note)


def _dropped_note(bad: list[int], last: int, terminated: bool, last_short: bool) -> str:
    """Say what was dropped: the writer killed mid-row (a torn last line) or malformed lines elsewhere."""
    torn = bool(bad) and bad[-1] == last and (last_short or not terminated)
    other = bad[:-1] if torn else bad
    parts = ["the truncated last line (the writer stopped mid-row)"] if torn else []
    if other:
        parts.append(f"{len(other)} malformed line(s) (wrong field count or a value that is not a number; "
                     f"first at line {other[0]})")
    return f"dropped {len(bad)} line(s) of {R.REQUESTS_CSV}: " + " and ".join(parts) if bad else ""


def read_csv(path: Path) -> pd.DataFrame:
    """A results CSV as a DataFrame with at least the schema's columns; empty when missing or unreadable."""
    if path.name == R.REQUESTS_CSV:
        return read_requests(path).df
    try:
        # Strings stay strings (dyno "0", error_class ""); numbers are coerced, torn rows dropped.
        df = pd.read_csv(path, dtype=str, keep_default_na=False, on_bad_lines="skip")
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError):
        return empty_table(path.name)
    return _typed(df, path.name)


def _as_window(value: Any) -> tuple[float, float] | None:
    try:
        a, b = float(value[0]), float(value[1])
    except (TypeError, ValueError, IndexError, KeyError):
        return None
    if math.isnan(a) or math.isnan(b) or b < a:
        return None
    return a, b


@dataclass
class CellData:
    """One cell: its cell.json (or the manifest's entry when the cell never got a directory)."""

    cell_id: str
    root: Path | None
    meta: dict[str, Any] = field(default_factory=dict)
    json_problem: str | None = None  # why cell.json is unusable (meta then comes from the manifest)

    @property
    def recorded_status(self) -> str:
        """The status the harness wrote (cell.json, else the manifest)."""
        return str(self.meta.get("status") or "unknown")

    @property
    def damage(self) -> str | None:
        """Why this cell's files cannot be used, or None (see the module docstring)."""
        if self.json_problem:
            return self.json_problem
        if self.recorded_status != "completed":
            return None  # a failed or interrupted cell may well have left no requests
        if self.root is None:
            return f"cells/{self.cell_id}/ is missing although the manifest records the cell as completed"
        return self.requests.problem

    @property
    def status(self) -> str:
        return "damaged" if self.damage else self.recorded_status

    @property
    def requests(self) -> RequestsRead:
        cache = self.__dict__.setdefault("_csv", {})
        if "_requests" not in cache:
            p = self.path(R.REQUESTS_CSV)
            cache["_requests"] = read_requests(p) if p else RequestsRead(empty_table(R.REQUESTS_CSV))
        return cache["_requests"]

    @property
    def error(self) -> str | None:
        return self.meta.get("error") or None

    @property
    def skip_reason(self) -> str | None:
        return self.meta.get("skip_reason") or None

    @property
    def group(self) -> str:
        return str(self.meta.get("group") or self.cell_id)

    @property
    def repeat(self) -> int:
        try:
            return int(self.meta.get("repeat") or 0)
        except (TypeError, ValueError):
            return 0

    @property
    def params(self) -> dict[str, Any]:
        p = self.meta.get("params")
        return p if isinstance(p, dict) else {}

    @property
    def predicted(self) -> dict[str, Any]:
        p = self.meta.get("predicted")
        return p if isinstance(p, dict) else {}

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    def phase(self, name: str) -> tuple[float, float] | None:
        phases = self.meta.get("phases")
        return _as_window(phases.get(name)) if isinstance(phases, dict) else None

    def phases(self) -> dict[str, tuple[float, float]]:
        out = {}
        for name in R.PHASES:
            w = self.phase(name)
            if w:
                out[name] = w
        return out

    @property
    def t0(self) -> float | None:
        """The cell's time origin for charts: the first phase begin, else the first sample."""
        starts = [w[0] for w in self.phases().values()]
        if starts:
            return min(starts)
        for name, col in ((R.CONNECTIONS_CSV, "t"), (R.REQUESTS_CSV, "t_start"), (R.DB_CSV, "t")):
            df = self.csv(name)
            if len(df):
                return float(df[col].min())
        return None

    def path(self, name: str) -> Path | None:
        return self.root / name if self.root else None

    def csv(self, name: str) -> pd.DataFrame:
        cache = self.__dict__.setdefault("_csv", {})
        if name == R.REQUESTS_CSV:
            return self.requests.df
        if name not in cache:
            p = self.path(name)  # None for a cell that never got a directory
            cache[name] = read_csv(p) if p else empty_table(name)
        return cache[name]

    def has(self, name: str) -> bool:
        p = self.path(name)
        return bool(p and p.is_file())


@dataclass
class RunData:
    root: Path
    manifest: dict[str, Any]
    cells: list[CellData]

    @property
    def schema_version(self) -> Any:
        return self.manifest.get("schema_version")

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id") or self.root.name)

    @cached_property
    def paths(self) -> R.RunPaths:
        return R.RunPaths(self.root)


def _manifest_cells(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifest's cell entries as dicts with cell_id, whether stored as a list or a mapping."""
    cells = manifest.get("cells")
    out: list[dict[str, Any]] = []
    if isinstance(cells, dict):
        for cid, entry in cells.items():
            entry = dict(entry) if isinstance(entry, dict) else {"status": str(entry)}
            entry.setdefault("cell_id", cid)
            out.append(entry)
    elif isinstance(cells, list):
        out = [dict(e) for e in cells if isinstance(e, dict) and e.get("cell_id")]
    return out


def load_run(run_dir: Path | str) -> RunData:
    root = Path(run_dir)
    if not root.is_dir():
        raise AnalysisError(f"{root} is not a directory; pass a run directory such as reports/<run-id>/")
    mpath = root / R.MANIFEST_JSON
    if not mpath.is_file():
        runs = sorted(p.parent.name for p in root.glob(f"*/{R.MANIFEST_JSON}"))
        hint = f" It contains runs: {', '.join(runs[:5])}; pass one of them." if runs else (
            " Pass the directory `connbench run` created (reports/<run-id>/), which holds manifest.json.")
        raise AnalysisError(f"{root} is not a connbench run directory: no {R.MANIFEST_JSON}.{hint}")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnalysisError(f"{mpath} is not valid JSON ({exc}); re-run or restore the manifest.") from exc
    if not isinstance(manifest, dict):
        raise AnalysisError(f"{mpath} must hold a JSON object, not {type(manifest).__name__}.")

    cells: dict[str, CellData] = {}
    for entry in _manifest_cells(manifest):
        cells[str(entry["cell_id"])] = CellData(str(entry["cell_id"]), None, entry)
    cells_dir = root / "cells"
    for cdir in sorted(p for p in cells_dir.glob("*") if p.is_dir()) if cells_dir.is_dir() else []:
        manifest_entry = cells[cdir.name].meta if cdir.name in cells else {}
        meta, problem = _cell_json(cdir / R.CELL_JSON)
        if problem:  # what the manifest knows (group, repeat, status) still places the cell
            meta = dict(manifest_entry)
        # A cell killed mid-run leaves "running" in cell.json; the manifest knows how it ended.
        if meta.get("status") not in _TERMINAL and manifest_entry.get("status") in _TERMINAL:
            meta["status"] = manifest_entry["status"]
        for key in ("error", "skip_reason", "group", "repeat"):
            if meta.get(key) is None and manifest_entry.get(key) is not None:
                meta[key] = manifest_entry[key]
        cells[cdir.name] = CellData(cdir.name, cdir, meta, problem)
    return RunData(root, manifest, list(cells.values()))


_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean",
               type(None): "null"}


def _cell_json(path: Path) -> tuple[dict[str, Any], str | None]:
    """cell.json as a dict, or ({}, why it is unusable). A missing one is a cell that never started writing."""
    name = R.CELL_JSON
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"status": "failed", "error": f"{name} missing"}, None
    except UnicodeDecodeError:
        return {}, f"{name} is not UTF-8 text"
    except json.JSONDecodeError as exc:
        return {}, f"{name} is not valid JSON ({clip(exc.msg, 60)} at line {exc.lineno} column {exc.colno})"
    except (OSError, RecursionError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        return {}, f"{name} cannot be read ({clip(reason, 60)})"
    if not isinstance(doc, dict):
        return {}, f"{name} holds {_JSON_KINDS.get(type(doc), 'a non-object')}, not a JSON object"
    return doc, None
