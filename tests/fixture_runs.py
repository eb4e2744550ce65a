"""Helpers for the analysis tests: the checked-in run fixtures, always copied before use."""

from __future__ import annotations

import shutil
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "runs"


def copy_run(name: str, dest: Path) -> Path:
    """A private copy of tests/fixtures/runs/<name> (analysis writes summary.csv, charts, index.html)."""
    target = dest / name
    shutil.copytree(FIXTURES / name, target)
    return target
