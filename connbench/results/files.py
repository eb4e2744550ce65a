"""Writing and reading a run's files: atomic writes (a temporary file, then rename, so a crash leaves
the old file or the new one, never half of one), the sampler's append-only CSVs, JSON reading that
says why a file is unusable.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from connbench.results.schema import EVENTS_COLUMNS, ResultsError


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(Path(path), text)


def write_private(path: Path, text: str) -> None:
    """A file only its owner may read (credentials), created 0600 before anything is written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def write_csv_atomic(path: Path, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(columns)
    writer.writerows(rows)
    write_atomic(Path(path), buf.getvalue())


class CsvAppender:
    """An append-only CSV with a header, flushed in batches (the sampler's hot path)."""

    def __init__(self, path: Path, columns: Sequence[str]):
        self.path = Path(path)
        self.columns = tuple(columns)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._fh)
        if new:
            self._writer.writerow(self.columns)
            self._fh.flush()

    def write(self, row: Sequence[Any]) -> None:
        self._writer.writerow(row)

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            self._fh.close()


def append_event(path: Path, t: float, kind: str, detail: str = "") -> None:
    app = CsvAppender(path, EVENTS_COLUMNS)
    app.write((repr(t), kind, detail))
    app.close()


_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean",
          type(None): "null"}


def json_kind(value: Any) -> str:
    return _KINDS.get(type(value), "a non-object")


def read_json_doc(path: Path | str) -> Any:
    """A file's JSON, or ResultsError saying why not (FileNotFoundError passes: missing is not malformed)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except UnicodeDecodeError:
        raise ResultsError(f"{path.name} is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path.name} is not valid JSON ({e.msg[:60]} at line {e.lineno} column {e.colno})") \
            from None
    except (OSError, RecursionError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        raise ResultsError(f"{path.name} cannot be read ({why})") from None
