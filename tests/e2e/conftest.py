"""The e2e session: one watched private root for every run, one run factory, and the leftover check."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support import PRIVATE_ENV, RunFactory, assert_no_leftovers, watched_private_root


@pytest.fixture(scope="session", autouse=True)
def _watched_private_root():
    """Every run of the session makes its private directory here, so a leftover one is seen."""
    root = watched_private_root()
    before = os.environ.get(PRIVATE_ENV)
    os.environ[PRIVATE_ENV] = str(root)
    yield root
    if before is None:
        os.environ.pop(PRIVATE_ENV, None)
    else:
        os.environ[PRIVATE_ENV] = before
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def run_factory(tmp_path_factory) -> RunFactory:
    return RunFactory(tmp_path_factory.mktemp("runs"))


@pytest.fixture
def run_dir(tmp_path: Path):
    """For tests that drive the CLI themselves (a kill, a Ctrl-C): the same leftover check afterwards."""
    d = tmp_path / "run"
    yield d
    assert_no_leftovers(d)
