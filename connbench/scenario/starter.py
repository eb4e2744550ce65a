"""`connbench init` outside a Django project: the commented starter scenario (starter.toml), valid as written
(tests check it loads)."""

from __future__ import annotations

import os
from pathlib import Path

STARTER_NAME = "connbench.toml"

STARTER_FILE = Path(__file__).with_name("starter.toml")  # package data: the wheel ships it
STARTER = STARTER_FILE.read_text(encoding="utf-8")


def write_starter(directory: Path, text: str = STARTER) -> Path:
    """Write DIR/connbench.toml; never over an existing file (FileExistsError), never through a symlink."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / STARTER_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return path
