"""Read a run directory defensively: a crashed cell leaves partial files, never a crash here."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

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


def read_csv(path: Path) -> pd.DataFrame:
    """A results CSV as a DataFrame with at least the schema's columns; empty when missing or unreadable."""
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

    @property
    def status(self) -> str:
        return str(self.meta.get("status") or "unknown")

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
        meta: dict[str, Any]
        try:
            meta = json.loads((cdir / R.CELL_JSON).read_text(encoding="utf-8"))
            meta = meta if isinstance(meta, dict) else {}
        except FileNotFoundError:
            meta = {"status": "failed", "error": f"{R.CELL_JSON} missing"}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            meta = {"status": "failed", "error": f"{R.CELL_JSON} unreadable: {exc}"}
        # A cell killed mid-run leaves "running" in cell.json; the manifest knows how it ended.
        if meta.get("status") not in _TERMINAL and manifest_entry.get("status") in _TERMINAL:
            meta["status"] = manifest_entry["status"]
        for key in ("error", "skip_reason", "group", "repeat"):
            if meta.get(key) is None and manifest_entry.get(key) is not None:
                meta[key] = manifest_entry[key]
        cells[cdir.name] = CellData(cdir.name, cdir, meta)
    return RunData(root, manifest, list(cells.values()))
