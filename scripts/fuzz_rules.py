"""The fuzzer's oracle: which scenario values are valid, written from the models and the stated policy.

Deliberately not imported from connbench: the oracle must not share the code under test. A check
returns None for a valid value, else the rule it breaks. Used by scripts/fuzz_scenarios.py.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re

INF, NAN = math.inf, math.nan

# ---- The rules: an oracle written from the models (Knobs, Mix, ScenarioMeta, Expect, Fault, ProbeSettings
# as they were before the rewrite) and the stated policy. Deliberately not imported from connbench: the oracle
# must not share the code under test. A check returns None for a valid value, else the rule it breaks.


class Num:
    """int (strict: no bool, float or "3") or float (ints accepted); finite; within bounds; `cross` for the rest."""

    def __init__(self, kind, lo=None, hi=None, open_lo=False, cross=None):
        self.kind, self.lo, self.hi, self.open_lo, self.cross = kind, lo, hi, open_lo, cross

    def __call__(self, v, raw=None):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (self.kind is int and isinstance(v, float)):
            return f"type (strict): {self.kind.__name__} required"
        if isinstance(v, float) and not math.isfinite(v):
            return "inf/nan refused"
        if (self.lo is not None and (v <= self.lo if self.open_lo else v < self.lo)) or \
                (self.hi is not None and v > self.hi):
            return f"bounds: {'>' if self.open_lo else '>='} {self.lo}, <= {self.hi}"
        return self.cross(v, raw) if self.cross and raw is not None else None


def typed(t, *values):
    check = lambda v, raw=None: None if type(v) is t else f"type (strict): {t.__name__} required"  # noqa: E731
    check.values = list(values)
    return check


def enum(*vals):
    check = lambda v, raw=None: None if type(v) is str and v in vals else "value: not an allowed value"  # noqa: E731
    check.values = list(vals)
    return check


def cma(v, raw=None):
    ok = (type(v) is str and v.strip().lower() in NONES) or Num(int, 0)(v) is None
    return None if ok else 'value: seconds (int >= 0) or "none"'


def path_id(maxlen):  # ids that become directory names: cells/<id>, reports/<time>-<name>
    def check(v, raw=None):
        if type(v) is not str:
            return "type (strict): str required"
        bad = v in ("", ".", "..") or "/" in v or "\x00" in v or len(v.encode()) > maxlen
        return "path-unsafe id (., .., /, NUL, or too long for a file name)" if bad else None
    return check


def str_list(v, raw=None):
    return None if type(v) is list and all(type(x) is str for x in v) else "type (strict): list of str required"


def table(specs):
    def check(v, raw=None):
        if type(v) is not dict:
            return "type: table required"
        return next((r for k, x in v.items() if (r := specs[k](x, raw) if k in specs else "unknown key")), None)
    return check


def mix(v, raw=None):
    if r := table(MIX)(v, raw):
        return r
    return None if sum(v.get(k, k == "read") for k in ("health", "read", "write", "slow")) > 0 else "mix: weights 0"


def _list(x):
    return x if isinstance(x, list) else []


def knob_values(raw, knob):
    """Every value a knob takes anywhere in the file: [defaults] (or the model default), axes, include."""
    d, m = raw.get("defaults"), raw.get("matrix")
    yield d.get(knob, DEFAULTS[knob]) if isinstance(d, dict) else DEFAULTS[knob]
    if isinstance(m, dict):
        yield from _list(m.get(knob))
        yield from (r[knob] for r in _list(m.get("include")) if isinstance(r, dict) and knob in r)


def _mx(raw, knob):
    return max([x for x in knob_values(raw, knob) if type(x) in (int, float)] or [DEFAULTS[knob]])


def beyond(knob, rule):  # v >= the knob's largest value anywhere: wrong for every cell the item could select
    return lambda v, raw: rule if v >= _mx(raw, knob) else None


NONES = ("none", "null", "unlimited")  # the spellings of "none" conn_max_age accepts
DEFAULTS = {"duration": 10, "dynos": 1, "max_connections": 100, "users": 8, "gevent_connections": 100}
CLASSES = ("too_many_clients", "django_pool_timeout", "dbcp_pool_timeout", "pgbouncer_wait_timeout",
           "pgbouncer_max_client_conn", "connection_lost", "db_unavailable", "gunicorn_worker_timeout",
           "connection_refused", "client_timeout", "http_5xx", "client_error")
BOOL, STR = typed(bool, True, False), typed(str)
MIX = {"health": Num(float, 0), "read": Num(float, 0), "write": Num(float, 0), "slow": Num(float, 0),
       "slow_ms": Num(int, 0, 60_000)}
KNOBS = {
    "dynos": Num(int, 1, 32), "workers": Num(int, 1, 64), "threads": Num(int, 1, 64),
    "worker_class": enum("sync", "gthread", "gevent", "asgi"), "gevent_connections": Num(int, 1, 10_000),
    "conn_max_age": cma, "health_checks": BOOL,
    "pooling": enum("direct", "django-pool", "pgbouncer-session", "pgbouncer-transaction", "dj-db-conn-pool"),
    "pool_min_size": Num(int, 0, 1000), "pool_max_size": Num(int, 1, 1000), "pool_timeout": Num(float, 0, 600, True),
    "pgbouncer_pool_size": Num(int, 1, 10_000), "pgbouncer_max_client_conn": Num(int, 1, 100_000),
    "pgbouncer_reserve_pool": Num(int, 0, 10_000), "pgbouncer_query_wait_timeout": Num(float, 0, 3600, True),
    "dbcp_pool_size": Num(int, 1, 1000), "dbcp_max_overflow": Num(int, 0, 1000), "dbcp_recycle": Num(int, -1),
    "dbcp_pre_ping": BOOL, "dbcp_timeout": Num(float, 0, 600, True), "max_connections": Num(int, 5, 10_000),
    "users": Num(int, 1, 2000), "spawn_rate": Num(float, 0, None, True), "rate": Num(float, 0, None, True),
    "duration": Num(float, 0, 3600, True), "warmup": Num(float, 0, 600), "cooldown": Num(float, 0, 600), "mix": mix,
    "arrival_rate": Num(float, 0, 100_000, True), "arrival": enum("poisson", "uniform"),
    "max_in_flight": Num(int, 1, 100_000), "server": enum("embedded", "system"),
    "auth": enum("scram-sha-256", "md5", "trust"), "tls": BOOL, "calibrate_n": Num(int, 0, 10_000)}


def selector(knob):  # matrix.exclude / expect.where / faults.where: a value, or a list of values, of the knob
    return lambda v, raw=None: next((f"{r} (in a selector)" for x in (v if type(v) is list else [v])
                                     if (r := KNOBS[knob](x, raw))), None)


SELECT = {k: selector(k) for k in KNOBS}
META = {"name": path_id(238), "description": STR, "repeats": Num(int, 1, 100), "seed": Num(int),
        "allow_gevent_persistent": BOOL}
INCLUDE = {**KNOBS, "id": path_id(240)}
ERRORS = table({c: Num(int) for c in CLASSES})
PRED = lambda v, raw=None: None if v == "predicted" and type(v) is str or type(v) is int else "type: int|predicted"  # noqa
EXPECT = {"name": STR, "where": table(SELECT), "cells": str_list, "p95_ms_max": Num(float, 0, None, True),
          "p99_ms_max": Num(float, 0, None, True), "error_rate_max": Num(float, 0, 1), "errors_max": ERRORS,
          "errors_min": ERRORS, "connections": PRED, "connections_max": PRED,
          "pgbouncer_server_max": Num(int, 0), "held_after_cooldown_max": Num(int, 0)}
FAULT = {"at": Num(float, 0, cross=beyond("duration", "fault at outside the measure window (>= every duration)")),
         "action": enum("terminate_backends", "restart_postgres", "restart_pgbouncer", "kill_worker"),
         "dyno": Num(int, 0, cross=beyond("dynos", "fault dyno >= dynos of every cell")),
         "cells": str_list, "where": table(SELECT)}
PROBE = {"mode": enum("ramp", "sequential", "both"), "stable_steps": Num(int, 1, 100), "max_steps": Num(int, 1, 1000),
         "max_seconds": Num(float, 0, 3600, True), "step_requests": Num(int, 1, 100_000),
         "step_seconds": Num(float, 0, 60, True), "ramp_start": Num(int, 1, 1000), "ramp_increment": Num(int, 1, 1000),
         "path": lambda v, raw=None: None if type(v) is str and v.startswith("/") else "value: path must start with /",
         "settle_seconds": Num(float, 0, 10), "limit": Num(int, 1)}
ALL_KEYS = {*KNOBS, *MIX, *META, *EXPECT, *FAULT, *PROBE, *CLASSES, "scenario", "defaults", "matrix", "exclude",
            "include", "id"}


def slots(raw):
    """(path, check) for every value in the file whose rule is known."""
    out = []

    def add(prefix, d, specs):
        if isinstance(d, dict):
            out.extend((prefix + (k,), specs[k]) for k in d if k in specs)
    add(("scenario",), raw.get("scenario"), META)
    add(("defaults",), raw.get("defaults"), KNOBS)
    add(("defaults", "mix"), (raw.get("defaults") or {}).get("mix"), MIX)
    add(("probe",), raw.get("probe"), PROBE)
    m = raw.get("matrix") if isinstance(raw.get("matrix"), dict) else {}
    out.extend((("matrix", k, i), KNOBS[k]) for k in m if k in KNOBS for i in range(len(_list(m[k]))))
    for kind, specs in (("exclude", SELECT), ("include", INCLUDE)):
        for i, r in enumerate(_list(m.get(kind))):
            add(("matrix", kind, i), r, specs)
    for sect, specs in (("expect", EXPECT), ("faults", FAULT)):
        for i, e in enumerate(_list(raw.get(sect))):
            add((sect, i), e, specs)
            add((sect, i, "where"), e.get("where") if isinstance(e, dict) else None, SELECT)
            for t in ("errors_max", "errors_min"):
                add((sect, i, t), e.get(t) if isinstance(e, dict) else None, {c: Num(int) for c in CLASSES})
    return out


# ---- TOML out, every table inline, so any value (inf, nan, dates, empty keys) round-trips exactly
def tv(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, (int, dt.date, dt.time)):
        return str(v) if isinstance(v, int) else v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(map(tv, v)) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{tk(k)} = {tv(x)}" for k, x in v.items()) + "}"
    return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")


def tk(k):
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else tv(k)


def dump(raw):
    lines = [f"{tk(k)} = {tv(v)}" for k, v in raw.items() if not isinstance(v, dict)]
    for k, v in raw.items():
        if isinstance(v, dict):
            lines += [f"[{tk(k)}]"] + [f"{tk(x)} = {tv(y)}" for x, y in v.items()]
    return "\n".join(lines) + "\n"


# ---- Mutators: each changes a copy of a shipped scenario in place -> (description, rule or None, slot)
POOL = ["3", "", "none", "None", "unlimited", "[/]", "[defaults]", "x" * 300, 3, 0, -1, 1.0, 1.5, -0.0, True,
        False, 10**30, 2**63 - 1, 1e9, 1e308, INF, -INF, NAN, [], [1], ["a"], {}, {"a": 1}, dt.date(2024, 1, 1),
        dt.time(7, 32), dt.datetime(2024, 1, 1, tzinfo=dt.UTC)]
IDS = ["..", ".", "a/b", "../x", "x" * 300, "", "a\x00b", "ok-1", "a b", "é", "-", 7, "[/]"]
NOMATCH = {"max_connections": 9999, "users": 1999, "gevent_connections": 9999}  # valid, in no shipped cell
ITEMS = {  # [[faults]] / [[expect]]: a minimal valid item, and targeted values per field
    "faults": ({"at": 1.0, "action": "terminate_backends"}, FAULT, {
        "at": lambda r: [_mx(r, "duration"), _mx(r, "duration") + .5, 1e9, -1, INF, NAN, "3", 0, True, 2.5],
        "dyno": lambda r: [_mx(r, "dynos"), 32, -1, "0", True, 0, 1.5],
        "action": lambda r: ["explode", "Terminate_backends", "", 1, "kill_worker"],
        "cells": lambda r: [["no-such-cell"], ["no\nsuch"], "kill-worker", [1], []]}),
    "expect": ({"connections_max": 1000}, EXPECT, {
        "p95_ms_max": lambda r: [0, -1, INF, NAN, "5", 1e9, True, 250],
        "error_rate_max": lambda r: [1.5, -0.1, NAN, 1, 0, "0"],
        "errors_max": lambda r: [{"too_many_clients": v} for v in (-1, "1", 1.5, True, 0)] + [{"nope": 1}],
        "connections": lambda r: ["predicted", "Predicted", -1, 1.5, "3", True, 0, INF],
        "held_after_cooldown_max": lambda r: [-1, 0, "0", 1.0],
        "cells": lambda r: [["no-such-cell"], ["no\nsuch"], "x", [1]]})}


def fp(path):
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def slot_of(path):
    return re.sub(r"\[\d+\]", "[]", fp(path))


def short(v):
    s = tv(v)
    return s if len(s) <= 40 else f"{s[:20]}...<{len(s)} chars>"


def keypaths(obj, prefix=()):
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in [prefix + (k,), *keypaths(v, prefix + (k,))]]
    return [p for i, v in enumerate(obj) for p in keypaths(v, prefix + (i,))] if isinstance(obj, list) else []


def parent(raw, path):
    for p in path[:-1]:
        raw = raw[p]
    return raw


def samples(check):
    """Boundary values of a number rule; the allowed values of the others."""
    if isinstance(check, Num):
        return [x for b in (check.lo, check.hi) if b is not None for x in (b, b - 1, b + 1)] + [0, -1, 1, 1e9, .5]
    return getattr(check, "values", []) + (["none", "None", " unlimited ", "NULL", 60] if check is cma else [])


def _norm(v):  # equal settings spelled differently: "none"/"None", 8/8.0, {read = 1}/{read = 1, write = 0}
    if isinstance(v, dict):
        v = {"health": 0, "read": 1, "write": 0, "slow": 0, "slow_ms": 50, **v}
    if type(v) is str:
        return "none" if v.strip().lower() in NONES else v
    return ("b", v) if isinstance(v, bool) else float(v) if isinstance(v, (int, float)) else json.dumps(
        {k: _norm(x) for k, x in v.items()} if isinstance(v, dict) else v, default=str, sort_keys=True)
