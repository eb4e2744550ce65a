"""The paths analysis writes into a run directory, checked before anything is written.

A path of the wrong kind (charts a file, index.html a directory) would otherwise surface as a traceback
halfway through a rebuild, after summary.csv had already been replaced.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from connbench.analysis import AnalysisError

CHART_SUFFIXES = (".png", ".svg")


def _wrong(path: Path, is_kind: str, wants: str) -> AnalysisError:
    return AnalysisError(f"{path} is {is_kind}, but analysis writes {wants} there; move or remove it and "
                         "run again (nothing was written)")


def check_outputs(files: Iterable[Path], dirs: Iterable[Path] = ()) -> None:
    """Raise AnalysisError naming the first output path of the wrong kind; absent paths are fine."""
    for path in files:
        if path.is_dir():
            raise _wrong(path, "a directory", "a file")
        if path.exists() and not path.is_file():
            raise _wrong(path, "not a regular file", "a file")
    for path in dirs:
        if path.exists() and not path.is_dir():
            raise _wrong(path, "a file" if path.is_file() else "not a directory", "a directory")
        if path.is_dir():  # charts/<name>.png is replaced, and stale ones are deleted: each must be a file
            try:
                entries = sorted(p for p in path.iterdir() if p.suffix in CHART_SUFFIXES)
            except OSError as exc:
                raise AnalysisError(f"{path} cannot be listed ({exc.strerror or type(exc).__name__})") from exc
            check_outputs(entries)


@contextmanager
def writing(root: Path) -> Iterator[None]:
    """Turn an OS refusal (read-only directory, full disk) while writing into one clean AnalysisError."""
    try:
        yield
    except OSError as exc:
        where = exc.filename or root
        raise AnalysisError(f"cannot write the analysis of {root}: {where}: "
                            f"{exc.strerror or type(exc).__name__}") from exc
