"""User text in a message: printable, one line, bounded, whatever a file or a value holds."""
from __future__ import annotations

from typing import Any


def printable(text: str, limit: int | None = None) -> str:
    """Control characters escaped (a newline or an escape sequence cannot forge output), cut at limit."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if limit is None or len(text) <= limit else text[:limit] + "..."


def clip(value: Any, limit: int = 200) -> str:
    """repr of a user value, cut so that a 10 MB value never floods a message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def clip_list(items: list[Any], limit: int = 20) -> str:
    shown = [i if isinstance(i, str) and i.isprintable() and len(i) <= 100 else clip(i, 100) for i in items]
    head = ", ".join(shown[:limit])
    return head + (f", ... and {len(shown) - limit} more" if len(shown) > limit else "")


def quoted(text: Any, limit: int = 80) -> str:
    """File content quoted in a message: one printable line, bounded."""
    s = "".join(ch if ch.isprintable() else "?" for ch in str(text))
    return s if len(s) <= limit else s[: limit - 3] + "..."
