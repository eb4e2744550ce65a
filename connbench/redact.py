"""Passwords never reach an output: messages, the manifest, logs and run directories are meant to be shared."""
from __future__ import annotations

import re
from urllib.parse import urlsplit

MASK = "***"


def redact_password(text: str) -> str:
    """A password in a URL's userinfo, in a conninfo string's password=... or a URL's ?password=..., as ***."""
    text = re.sub(r"(://[^:/@\s]*:)[^@\s]*@", rf"\1{MASK}@", text)
    return re.sub(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]*)", rf"\1{MASK}", text, flags=re.IGNORECASE)


def redact_argv(argv: list[str]) -> list[str]:
    """A password on the command line never reaches the manifest."""
    return [redact_password(a) for a in argv]


def url_without_userinfo(url: str) -> str:
    """An http(s) URL without its user and password, for messages and files."""
    u = urlsplit(url)
    return u._replace(netloc=u.hostname + (f":{u.port}" if u.port else "")).geturl() if u.hostname else url


PUBLIC_CONNINFO_KEYS = ("host", "port", "dbname", "user", "sslmode")


def public_conninfo(parts: dict[str, str]) -> dict[str, str]:
    """A parsed conninfo's parts that may be shown: never its password (nor anything else not listed)."""
    return {k: v for k, v in parts.items() if k in PUBLIC_CONNINFO_KEYS}
