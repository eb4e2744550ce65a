"""Read a run directory defensively: a crashed cell leaves partial files, never a crash here.

Documents are read through connbench.results' models, and a run written by an older schema through
its migration (results.upgrade), so everything below sees the current schema and nothing else.

A cell is *damaged* when the files that define it cannot be used: cell.json is not a cell document, or
a cell the harness recorded as completed has no usable requests.csv (missing, empty, header only,
unparseable), no cell.json or no directory at all. The harness records a completed cell with 0 requests
as failed, so for a completed cell these are lost or corrupted files, never "0 requests". A damaged
cell's figures are left out everywhere and its reason is reported.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from connbench import results as R
from connbench.analysis import AnalysisError, SchemaMismatchError
from connbench.contract import DROPPED, HAZARD_COLUMNS, REQUESTS_COLUMNS, TIMING_COLUMNS
from connbench.text import quoted

# Columns that must parse as numbers; a row whose `t` does not parse (a torn last line) is dropped.
_NUMERIC = {
    R.REQUESTS_CSV: ("t_intended", "t_start", "latency_ms", "service_ms", "status",
                     *(c for c in TIMING_COLUMNS if c not in HAZARD_COLUMNS)),
    R.CONNECTIONS_CSV: ("t", "count"),
    R.DB_CSV: R.DB_COLUMNS,
    R.PGBOUNCER_CSV: R.PGBOUNCER_COLUMNS,
    R.PROCESSES_CSV: ("t", "pid", "cpu_seconds", "rss_bytes"),
    R.EVENTS_CSV: ("t",),
    R.SERVER_SETUP_CSV: R.SERVER_SETUP_COLUMNS,
}
_COLUMNS = {
    R.REQUESTS_CSV: REQUESTS_COLUMNS,
    R.CONNECTIONS_CSV: R.CONNECTIONS_COLUMNS,
    R.DB_CSV: R.DB_COLUMNS,
    R.PGBOUNCER_CSV: R.PGBOUNCER_COLUMNS,
    R.PROCESSES_CSV: R.PROCESSES_COLUMNS,
    R.EVENTS_CSV: R.EVENTS_COLUMNS,
    R.SERVER_SETUP_CSV: R.SERVER_SETUP_COLUMNS,
}


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


@dataclass(frozen=True)
class RequestsRead:
    """requests.csv as read: the usable rows, why the file is unusable (None if usable), what was dropped."""

    df: pd.DataFrame
    problem: str | None = None
    dropped: int = 0
    dropped_note: str = ""


# The request log writer (locustfiles/requestlog.py) always writes these as numbers (status 0 = no response),
# except latency_ms and service_ms of a request the open model dropped (never sent): blank.
_REQUIRED = ("t_intended", "t_start", "latency_ms", "service_ms", "status")
_BLANK_WHEN_DROPPED = ("latency_ms", "service_ms")
# Schema 1 had no t_intended or service_ms (results.update_to_2 derives them): its header needs only these.
_REQUIRED_V1 = ("t_start", "latency_ms", "status")


def _numbers(df: pd.DataFrame) -> pd.Series:
    """Convert the required columns in place; True for rows where each is a finite number.

    A blank status stays allowed (then the request counts as failed, as it always has); blank latency_ms and
    service_ms are allowed on a row whose error_class is "dropped", and on no other.
    """
    ok = pd.Series(True, index=df.index)
    dropped = df["error_class"].str.strip() == DROPPED if "error_class" in df else pd.Series(False, index=df.index)
    for col in _REQUIRED:
        raw = df[col]
        df[col] = num = pd.to_numeric(raw, errors="coerce")
        good = np.isfinite(num)
        if not good.all() and (col == "status" or col in _BLANK_WHEN_DROPPED):
            blank = num.isna() & (raw.str.strip() == "")
            good |= blank if col == "status" else blank & dropped
        ok &= good
    return ok


def read_requests(path: Path, version: int = R.SCHEMA_VERSION) -> RequestsRead:
    """Parse requests.csv record by record so that a torn or malformed line is dropped and counted, never a request.

    `version` is the schema the file was written with: schema 1's rows are read through results.upgrade()."""
    name, empty = path.name, empty_table(R.REQUESTS_CSV)
    if not path.exists():
        return RequestsRead(empty, f"{name} is missing")
    if not path.is_file():
        return RequestsRead(empty, f"{name} is not a regular file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return RequestsRead(empty, f"{name} cannot be read ({quoted(exc.strerror or type(exc).__name__)})")
    if not raw.strip():
        return RequestsRead(empty, f"{name} is empty ({len(raw)} bytes)")
    # surrogateescape: stray bytes never raise here; they fail the header check or the number parse below.
    text = raw.decode("utf-8-sig", errors="surrogateescape")
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        return RequestsRead(empty, f"{name} is unparseable ({quoted(exc)})")
    lines = [i for i, r in enumerate(rows) if len(r) > 1 or (r and r[0].strip())]  # blank lines are no rows
    if not lines:
        return RequestsRead(empty, f"{name} holds only blank lines")
    header = [h.strip() for h in rows[lines[0]]]
    required, expected = (_REQUIRED, REQUESTS_COLUMNS) if version >= 2 else (_REQUIRED_V1, _REQUIRED_V1)
    if not set(required) <= set(header) or len(set(header)) != len(header):
        return RequestsRead(empty, f"{name} is unparseable: its first line is not a requests.csv header "
                                   f"(expected {','.join(expected)}; found '{quoted(','.join(header), 60)}')")
    lines = lines[1:]
    if not lines:
        return RequestsRead(empty, f"{name} has a header but no rows")
    width = len(header)
    good = [i for i in lines if len(rows[i]) == width]
    df = pd.DataFrame([rows[i] for i in good], columns=header, dtype=str)
    if version < R.SCHEMA_VERSION and len(df):  # in memory: the file stays as it was recorded
        df = pd.DataFrame(R.upgrade(name, df.to_dict("records"), version), dtype=str)
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


def read_csv(path: Path, version: int = R.SCHEMA_VERSION) -> pd.DataFrame:
    """A results CSV as a DataFrame with at least the schema's columns; empty when missing or unreadable.

    `version` is the schema the file was written with: an older one is read through results.upgrade().
    (requests.csv is parsed line by line, by read_requests.)
    """
    if path.name == R.REQUESTS_CSV:
        return read_requests(path, version).df
    try:
        # Strings stay strings (dyno "0", error_class ""); numbers are coerced, torn rows dropped.
        df = pd.read_csv(path, dtype=str, keep_default_na=False, on_bad_lines="skip")
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError):
        return empty_table(path.name)
    if version < R.SCHEMA_VERSION:
        df = pd.DataFrame(R.upgrade(path.name, df.to_dict("records"), version))
    return _typed(df, path.name)


@dataclass
class CellData:
    """One cell: its cell.json and the manifest's entry for it (either may be missing)."""

    cell_id: str
    root: Path | None  # cells/<id>/, None when the cell never got a directory
    doc: R.CellDoc | None = None  # cell.json, validated (and upgraded); None when missing or unusable
    entry: R.ManifestCell | None = None
    json_problem: str | None = None  # why cell.json is unusable
    version: int = R.SCHEMA_VERSION  # the schema the cell's files were written with

    @property
    def json_missing(self) -> bool:
        return self.root is not None and self.doc is None and self.json_problem is None

    @property
    def recorded_status(self) -> R.CellVerdict:
        """The status the harness wrote: cell.json's, unless the manifest knows how a killed cell ended."""
        own = self.doc.status if self.doc else "failed" if self.json_missing else None
        listed = self.entry.status if self.entry else None
        if own not in R.TERMINAL_STATUSES and listed in R.TERMINAL_STATUSES:
            return listed
        return own or listed or "unknown"

    @property
    def damage(self) -> str | None:
        """Why this cell's files cannot be used, or None (see the module docstring)."""
        if self.json_problem:
            return self.json_problem
        listed = self.entry.status if self.entry else None
        if listed == "completed" and self.root is None:
            return f"cells/{self.cell_id}/ is missing although the manifest records the cell as completed"
        if listed == "completed" and self.json_missing:
            return f"{R.CELL_JSON} is missing although the manifest records the cell as completed"
        if self.recorded_status != "completed":
            return None  # a failed or interrupted cell may well have left no requests
        return self.requests.problem

    @property
    def status(self) -> R.CellVerdict:
        return "damaged" if self.damage else self.recorded_status

    @property
    def requests(self) -> RequestsRead:
        cache: dict[str, RequestsRead | pd.DataFrame] = self.__dict__.setdefault("_csv", {})
        if "_requests" not in cache:
            p = self.path(R.REQUESTS_CSV)
            cache["_requests"] = read_requests(p, self.version) if p else RequestsRead(empty_table(R.REQUESTS_CSV))
        return cache["_requests"]

    @property
    def error(self) -> str | None:
        if self.json_missing:
            return f"{R.CELL_JSON} missing"
        return (self.doc and self.doc.error) or (self.entry and self.entry.error) or None

    @property
    def skip_reason(self) -> str | None:
        return (self.doc and self.doc.skip_reason) or (self.entry and self.entry.skip_reason) or None

    @property
    def group(self) -> str:
        return self.doc.group if self.doc else self.entry.group if self.entry else self.cell_id

    @property
    def repeat(self) -> int:
        return self.doc.repeat if self.doc else self.entry.repeat if self.entry else 0

    @property
    def params(self) -> dict[str, Any]:
        """The knobs as the cell stored them (never re-validated against today's Knobs)."""
        return self.doc.params if self.doc else {}

    @property
    def axes(self) -> dict[str, Any]:
        return self.doc.axes if self.doc else self.entry.axes if self.entry else {}

    @property
    def predicted(self) -> R.Predicted:
        return self.doc.predicted if self.doc else R.Predicted()

    @property
    def locust_processes(self) -> int | None:
        return self.doc.locust_processes if self.doc else None

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    def phase(self, name: R.Phase) -> tuple[float, float] | None:
        w = self.doc.phases.get(name) if self.doc else None
        return (w[0], w[1]) if w else None

    def phases(self) -> dict[str, tuple[float, float]]:
        return {name: w for name in R.PHASES if (w := self.phase(name))}

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
        return R.CellPaths(self.root).file(name) if self.root else None

    def csv(self, name: str) -> pd.DataFrame:
        cache = self.__dict__.setdefault("_csv", {})
        if name == R.REQUESTS_CSV:
            return self.requests.df
        if name not in cache:
            p = self.path(name)  # None for a cell that never got a directory
            cache[name] = read_csv(p, self.version) if p else empty_table(name)
        return cache[name]

    def has(self, name: str) -> bool:
        p = self.path(name)
        return bool(p and p.is_file())


@dataclass
class RunData:
    root: Path
    manifest: R.Manifest  # upgraded to the current schema
    cells: list[CellData]
    probe: R.ProbeDoc | None = None  # probe.json of a `connbench probe` run
    probe_problem: str | None = None  # why probe.json is unusable

    @property
    def schema_version(self) -> int:
        return self.manifest.schema_version

    @property
    def written_version(self) -> int:
        """The schema the run's manifest was written with (older runs are read through the migration)."""
        return self.manifest.written_version

    @property
    def run_id(self) -> str:
        return self.manifest.run_id or self.root.name

    @property
    def paths(self) -> R.RunPaths:
        return R.RunPaths(self.root)


def _manifest(root: Path) -> R.Manifest:
    paths = R.RunPaths(root)
    if not paths.manifest.is_file():
        runs = sorted(p.parent.name for p in root.glob(f"*/{R.MANIFEST_JSON}"))
        hint = f" It contains runs: {', '.join(runs[:5])}; pass one of them." if runs else (
            " Pass the directory `connbench run` created (reports/<run-id>/), which holds manifest.json.")
        raise AnalysisError(f"{root} is not a connbench run directory: no {R.MANIFEST_JSON}.{hint}")
    try:
        return R.Manifest.load(paths.manifest)
    except R.SchemaVersionError as exc:
        raise SchemaMismatchError(f"{root}: {exc}") from None
    except R.ResultsError as exc:
        raise AnalysisError(f"{root}: {exc}; re-run or restore the manifest.") from None


def _cell(cdir: Path, entry: R.ManifestCell | None, run_version: int) -> CellData:
    try:
        doc = R.CellDoc.load(R.CellPaths(cdir).json)
    except FileNotFoundError:
        return CellData(cdir.name, cdir, None, entry, None, run_version)
    except R.ResultsError as exc:  # what the manifest knows (group, repeat, status) still places the cell
        return CellData(cdir.name, cdir, None, entry, str(exc), run_version)
    return CellData(cdir.name, cdir, doc, entry, None, doc.written_version)


def load_run(run_dir: Path | str) -> RunData:
    root = Path(run_dir)
    if not root.is_dir():
        raise AnalysisError(f"{root} is not a directory; pass a run directory such as reports/<run-id>/")
    manifest = _manifest(root)
    paths = R.RunPaths(root)
    version = manifest.written_version
    cells = {e.cell_id: CellData(e.cell_id, None, None, e, None, version) for e in manifest.cells}
    for cdir in sorted(p for p in paths.cells.glob("*") if p.is_dir()) if paths.cells.is_dir() else []:
        listed = cells.get(cdir.name)
        cells[cdir.name] = _cell(cdir, listed.entry if listed else None, version)
    probe, problem = None, None
    if paths.probe.exists():
        try:
            probe = R.ProbeDoc.load(paths.probe)
        except R.ResultsError as exc:
            problem = str(exc)
    return RunData(root, manifest, list(cells.values()), probe, problem)
