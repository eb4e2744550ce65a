"""The cache the service user reads from: made reachable when connbench makes it, never loosened when it was
there before; a read-only copy of the binaries, published whole."""

from __future__ import annotations

import os
import stat

import pytest

from connbench.services import reachable


def test_a_cache_made_here_is_0755_whatever_the_umask(tmp_path, monkeypatch):
    monkeypatch.setenv(reachable.CACHE_ENV, str(tmp_path / "made" / "cache"))
    old = os.umask(0o077)
    try:
        root = reachable.ensure_cache(None)
    finally:
        os.umask(old)
    assert stat.S_IMODE(root.stat().st_mode) == 0o755


def test_an_existing_directory_is_never_loosened(tmp_path, monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    os.chmod(mine, 0o700)
    monkeypatch.setenv(reachable.CACHE_ENV, str(mine))
    reachable.ensure_cache(None)
    assert stat.S_IMODE(mine.stat().st_mode) == 0o700


def test_an_unwritable_cache_is_one_error_naming_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv(reachable.CACHE_ENV, str(tmp_path / "file" / "cache"))
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(reachable.UnreachableError, match="CONNBENCH_CACHE"):
        reachable.ensure_cache(None)


def test_the_copy_is_read_only_and_keeps_exec_bits(tmp_path):
    tree = tmp_path / "t"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "postgres").write_text("#!/bin/sh\n")
    os.chmod(tree / "bin" / "postgres", 0o755)
    (tree / "share.txt").write_text("x")
    reachable._read_only(tree)
    assert stat.S_IMODE((tree / "bin" / "postgres").stat().st_mode) == 0o555
    assert stat.S_IMODE((tree / "share.txt").stat().st_mode) == 0o444
    assert stat.S_IMODE((tree / "bin").stat().st_mode) == 0o555
    reachable._remove(tree)
    assert not tree.exists()
