"""Which statements rely on session state, and so break under transaction pooling.

Standard library only: the app's database wrapper (target_app/timing.py) classifies every statement it runs,
the analysis names and explains what it found. Under PgBouncer's transaction mode (and Supavisor's, and RDS
Proxy, which pins instead), each transaction may run on another server connection: what a statement leaves
on the session (a setting, a lock, a cursor, a prepared statement, a temporary table, a LISTEN) is then
found by another client, or missing for this one.

The classifier reads the statement's leading keywords and a few known functions; comments, string
literals (standard, E'', dollar-quoted) and quoted identifiers are blanked first, so a keyword inside them
never matches. Server-side cursors are not read from SQL: the app reads them from Django's cursor.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Hazard:
    kind: str
    title: str
    why: str  # what goes wrong under transaction pooling
    fix: str


_H = (
    Hazard("set_session", "SET without LOCAL",
           "the setting stays on the server connection: the next client that gets it inherits it, and this "
           "client's next transaction may run without it",
           "SET LOCAL inside a transaction (transaction.atomic), or the setting in the role's or database's "
           "defaults (ALTER ROLE ... SET)"),
    Hazard("set_config_session", "set_config(..., false)",
           "is_local = false sets the value for the session: it leaks to other clients (RDS Proxy pins the "
           "connection instead)",
           "set_config(name, value, true) inside a transaction"),
    Hazard("advisory_lock_session", "session advisory lock",
           "pg_advisory_lock is held by the server connection, not the client: another client may hold it, "
           "and the unlock may run on a connection that does not",
           "pg_advisory_xact_lock inside a transaction (released at its end)"),
    Hazard("listen", "LISTEN",
           "notifications go to the server connection that listened, which other clients use between this "
           "client's transactions",
           "a dedicated direct connection (not through the transaction pooler) for LISTEN"),
    Hazard("temp_table", "temporary table",
           "the table lives on one server connection: the next transaction may not see it, another client may",
           "CREATE TEMP TABLE ... ON COMMIT DROP inside a transaction, or a regular table"),
    Hazard("cursor_with_hold", "DECLARE ... WITH HOLD",
           "the cursor outlives its transaction on one server connection: the next FETCH may run on another "
           "(cursor does not exist)",
           "a cursor without HOLD inside a transaction, or fetch the rows at once"),
    Hazard("prepare", "PREPARE",
           "the prepared statement exists on one server connection: EXECUTE on another fails (prepared "
           "statement does not exist); PgBouncer tracks protocol-level ones only from 1.21 (max_prepared_statements)",
           "unprepared statements, or PgBouncer 1.21+ with max_prepared_statements for protocol-level ones"),
    Hazard("server_side_cursor", "server-side cursor (QuerySet.iterator())",
           "Django's named cursors are declared WITH HOLD outside a transaction: the FETCH that follows may "
           "run on another server connection (InvalidCursorName)",
           "DISABLE_SERVER_SIDE_CURSORS = True in the database's settings"),
)
KINDS: dict[str, Hazard] = {h.kind: h for h in _H}

_BLANK = re.compile(r"""
    --[^\n]*                          # line comment
  | /\*(?:[^*]|\*(?!/))*\*/           # block comment (PostgreSQL nests them: rare in what an app sends)
  | [eE]'(?:[^'\\]|\\.|'')*'          # E'...' with backslash escapes
  | '(?:[^']|'')*'                    # standard string
  | "(?:[^"]|"")*"                    # quoted identifier
  | (\$[A-Za-z_]?\w*\$)[\s\S]*?\1     # dollar-quoted string
  | /\*[\s\S]*$ | [eE]?'[\s\S]*$ | "[\s\S]*$ | \$\$[\s\S]*$   # unclosed: blanked to the end
""", re.VERBOSE)
_WORD = re.compile(r"[a-z_][a-z0-9_$]*|\S")
# Cheap first look: a string that contains none of these (anywhere, even in a literal) holds no hazard.
_ANY = ("set", "listen", "prepare", "deallocate", "declare", "temp", "advisory")
_SESSION_LOCKS = frozenset(f"pg_{t}advisory_{u}{s}" for t in ("", "try_") for u in ("lock", "unlock")
                           for s in ("", "_shared")) | {"pg_advisory_unlock_all"}
_SAFE_SET = ("local", "transaction", "constraints")  # SET LOCAL x, SET TRANSACTION ..., SET CONSTRAINTS ...
_TRUE = ("true", "on")  # a string literal ('t') is read as a possible false: the classifier errs toward telling


def blank(sql: str) -> str:
    """The statement lowercased, with comments removed and each literal or quoted name reduced to one
    placeholder (? for a string, "" for a name)."""
    def sub(m: re.Match[str]) -> str:
        s = m.group(0)
        return " " if s.startswith(("--", "/*")) else (' "" ' if s.startswith('"') else " ? ")
    return _BLANK.sub(sub, sql).lower()


def _statements(sql: str) -> list[list[str]]:
    return [words for part in blank(sql).split(";") if (words := _WORD.findall(part))]


def _set_config_hazard(words: list[str], i: int) -> bool:
    """set_config( a , b , c ): a hazard unless c is literally true (a placeholder may be false)."""
    depth = 0
    args: list[list[str]] = []
    cur: list[str] = []
    for w in words[i + 1:]:
        if w == "(":
            depth += 1
            if depth == 1:
                continue
        elif w == ")":
            depth -= 1
            if depth == 0:
                args.append(cur)
                break
        if depth == 1 and w == ",":
            args.append(cur)
            cur = []
        elif depth >= 1:
            cur.append(w)
    third = "".join(args[2]) if len(args) == 3 else ""
    return third not in _TRUE


def _classify_one(words: list[str]) -> set[str]:
    out: set[str] = set()
    first = words[0]
    second = words[1] if len(words) > 1 else ""
    if first in ("set", "reset"):
        if first == "reset" or second not in _SAFE_SET:
            # SET SESSION CHARACTERISTICS AS TRANSACTION ... is session-wide too
            out.add("set_session")
    elif first in ("listen", "unlisten"):
        out.add("listen")
    elif first in ("prepare", "deallocate") and second != "transaction":  # PREPARE TRANSACTION: two-phase commit
        out.add("prepare")
    elif first == "declare" and _has_seq(words, ("with", "hold")):
        out.add("cursor_with_hold")
    elif first == "create" and ("temp" in words[1:4] or "temporary" in words[1:4]) \
            and not _has_seq(words, ("on", "commit", "drop")):
        out.add("temp_table")
    if first in ("select", "with") and "into" in words and ("temp" in words or "temporary" in words):
        out.add("temp_table")  # SELECT ... INTO TEMP t
    for i, w in enumerate(words):
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if nxt != "(":
            continue
        if w in _SESSION_LOCKS:
            out.add("advisory_lock_session")
        elif w == "set_config" and _set_config_hazard(words, i):
            out.add("set_config_session")
    return out


def _has_seq(words: list[str], seq: tuple[str, ...]) -> bool:
    n = len(seq)
    return any(tuple(words[i:i + n]) == seq for i in range(len(words) - n + 1))


@functools.lru_cache(maxsize=4096)  # an ORM sends the same texts (parameters apart) over and over
def classify(sql: str) -> frozenset[str]:
    """The hazard kinds (KINDS' keys, server_side_cursor apart) in one SQL string, which may hold several
    statements."""
    low = sql.lower()
    if not any(k in low for k in _ANY):
        return frozenset()
    found: set[str] = set()
    for words in _statements(sql):
        found |= _classify_one(words)
    return frozenset(found)


_NUMBER = re.compile(r"(?<![\w$])\d+(?:\.\d+)?(?![\w$])")


def example(sql: str, limit: int = 200) -> str:
    """The statement as a report may show it: comments dropped, literals as ?, whitespace collapsed, at most
    `limit` characters. Nothing a literal held (a password in a SET, a token) survives."""
    def sub(m: re.Match[str]) -> str:
        s = m.group(0)
        closed_name = len(s) > 1 and s[0] == s[-1] == '"'
        return " " if s.startswith(("--", "/*")) else (s if closed_name else "?")
    text = " ".join(_NUMBER.sub("?", _BLANK.sub(sub, sql)).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
