"""Reading a scenario file that may be anything: refused before it is read when it is no regular
file or too large (a FIFO or a device cannot hang the harness, a huge file cannot exhaust it); one
clean error for bad bytes, bad TOML or nesting too deep."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path
from typing import Any

from connbench.errors import ScenarioError
from connbench.text import clip, printable

MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 16
BOM = b"\xef\xbb\xbf"


def file_label(path: Path | str) -> str:
    """The file's name for a message: one line, bounded, control characters escaped."""
    return printable(str(path), 200)


def read_toml(path: Path | str) -> dict[str, Any]:
    """The file's TOML, or one ScenarioError saying why it cannot be a scenario."""
    where_ = file_label(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ScenarioError(f"{where_}: no such scenario file") from None
    except (OSError, ValueError) as e:  # name too long, embedded NUL, permission, loop
        raise ScenarioError(f"{where_}: cannot open the scenario file ({getattr(e, 'strerror', None) or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ScenarioError(f"{where_}: is a directory; give a scenario .toml file, e.g. scenarios/quick.toml")
    if not stat.S_ISREG(st.st_mode):
        raise ScenarioError(f"{where_}: is not a regular file (a FIFO, device or socket); give a .toml file")
    if st.st_size > MAX_FILE_BYTES:
        raise ScenarioError(f"{where_}: is {st.st_size:,} bytes; a scenario file may have at most 1 MiB")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # never blocks, even if swapped for a FIFO
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ScenarioError(f"{where_}: cannot read the scenario file ({e.strerror or e})") from None
    if len(data) > MAX_FILE_BYTES:
        raise ScenarioError(f"{where_}: is over 1 MiB; a scenario file may have at most 1 MiB")
    if data.startswith(BOM):
        data = data[len(BOM):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ScenarioError(f"{where_}: line {line}: byte 0x{data[e.start]:02x} is not UTF-8; TOML files must be "
                            "UTF-8 (re-save the file as UTF-8)") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{where_}: not valid TOML: {clip(str(e))[1:-1]}") from None
    except RecursionError:
        raise ScenarioError(f"{where_}: nested too deeply; scenarios nest at most {MAX_DEPTH} levels") from None
    return raw


def depth(raw: Any) -> int:
    """Deepest nesting of tables and arrays, found without recursion."""
    deepest, stack = 0, [(raw, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        if d > MAX_DEPTH:
            return d
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((c, d + 1) for c in children if isinstance(c, (dict, list)))
    return deepest
