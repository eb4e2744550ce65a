"""The fuzzer's mutators: each changes a copy of a shipped scenario -> (description, rule or None, slot).

The rule is the one the mutation breaks (from fuzz_rules), or None when the result may be valid.
"""

from __future__ import annotations

import copy

from fuzz_rules import (
    ALL_KEYS,
    IDS,
    INCLUDE,
    ITEMS,
    KNOBS,
    META,
    NOMATCH,
    POOL,
    PROBE,
    SELECT,
    Num,
    _norm,
    fp,
    keypaths,
    knob_values,
    parent,
    samples,
    short,
    slot_of,
    slots,
)


def m_delete(rng, raw):
    path = rng.choice(keypaths(raw))
    del parent(raw, path)[path[-1]]
    return f"delete {fp(path)}", None, slot_of(path)


def m_rename(rng, raw):  # a typo; never another valid name
    path = rng.choice(keypaths(raw))
    k = path[-1]
    for _ in range(30):
        i = rng.randrange(len(k))
        new = rng.choice([k[:i] + rng.choice("aesxz_") + k[i:], k[:i] + k[i + 1:], k.upper(), k + "s",
                          k[:i] + k[i + 1:i + 2] + k[i] + k[i + 2:], k[:i] + "\n" + k[i:]])  # \n: still one line?
        if new and new != k and new not in ALL_KEYS:
            break
    else:  # 30 unlucky draws (a swap of two equal letters gives the name back): a typo that cannot be valid
        new = k + "_typo"
    d = parent(raw, path)
    d[new] = d.pop(k)
    return f"rename {fp(path)} -> {new!r}", "unknown key", slot_of(path)


def m_value(rng, raw):
    """A value another type, a boundary, inf/nan, huge, negative or empty."""
    path, check = rng.choice(slots(raw))
    v = rng.choice(samples(check) if isinstance(check, Num) and rng.random() < .4 else POOL + samples(check))
    parent(raw, path)[path[-1]] = v
    return f"set {fp(path)} = {short(v)}", check(v, raw), slot_of(path)


def m_axis(rng, raw):
    """An axis value replaced or added, duplicated, or spelled twice ("none"/"None", 8/8.0)."""
    m = raw.setdefault("matrix", {})
    axes = [k for k in m if k in KNOBS]
    knob = rng.choice(axes) if axes and rng.random() < .7 else rng.choice(list(KNOBS))
    vals = list(m.get(knob) or [rng.choice(samples(KNOBS[knob]) or [{"read": 1}])])
    x, op = rng.choice(vals), rng.choice(["dup", "equiv", "add", "replace"])
    new = rng.choice(POOL + samples(KNOBS[knob])) if op in ("add", "replace") else x if op == "dup" else \
        rng.choice(["None", "unlimited", " none", "NULL"]) if _norm(x) == "none" else \
        {**x, "write": 0} if isinstance(x, dict) and "write" not in x else float(x) if type(x) is int else \
        int(x) if type(x) is float and x.is_integer() else x
    if op == "replace":
        vals[rng.randrange(len(vals))] = new
    else:
        vals.append(new)
    m[knob] = vals
    bad = next((r for r in (KNOBS[knob](v, raw) for v in vals) if r), None)
    dup = len({_norm(v) for v in vals}) < len(vals)
    return f"matrix.{knob} = {short(vals)}", bad or (dup and "duplicate axis values (the same cell twice)") or None, \
        f"matrix.{knob}"


def _ensure(rng, raw, sect, item):
    if not raw.setdefault(sect, []):
        raw[sect].append(copy.deepcopy(item))
    return rng.choice(raw[sect])


def m_selector(rng, raw):
    """A value in matrix.exclude / expect.where / faults.where: allowed or not, one or a list."""
    target, knob = rng.choice(["exclude", "expect", "faults"]), rng.choice(list(KNOBS))
    v = rng.choice(POOL + samples(KNOBS[knob]))
    v = [v, rng.choice(samples(KNOBS[knob]) or [1])] if rng.random() < .3 else v
    if target == "exclude":
        rules = raw.setdefault("matrix", {}).setdefault("exclude", [])
        if not rules or rng.random() < .3:
            rules.append({})
        rng.choice(rules)[knob] = v
    else:
        _ensure(rng, raw, target, ITEMS[target][0]).setdefault("where", {})[knob] = v
    slot = "matrix.exclude[]" if target == "exclude" else f"{target}[].where"
    return f"{slot}.{knob} = {short(v)}", SELECT[knob](v, raw), f"{slot}.{knob}"


def m_id(rng, raw):
    v = rng.choice(IDS)
    if rng.random() < .5:
        raw["scenario"]["name"] = v
        return f"scenario.name = {short(v)}", META["name"](v), "scenario.name"
    inc = raw.setdefault("matrix", {}).setdefault("include", [])
    if not inc:
        inc.append({"workers": 3})
    rng.choice(inc)["id"] = v
    return f"matrix.include[].id = {short(v)}", INCLUDE["id"](v), "matrix.include[].id"


def m_item(rng, raw):
    """A field of a fault / an expectation: out of its window or range, a bad action, or selecting no cell."""
    sect = rng.choice(list(ITEMS))
    item, specs, pools = ITEMS[sect]
    e, key = _ensure(rng, raw, sect, item), rng.choice([*pools, "where"])
    if key == "where":  # a valid value no cell has: selects nothing
        knob = rng.choice(list(NOMATCH))
        e["where"] = {knob: NOMATCH[knob]}
        hit = any(_norm(x) == _norm(NOMATCH[knob]) for x in knob_values(raw, knob))
        return f"{sect}[].where = {{{knob} = {NOMATCH[knob]}}}", None if hit else f"{sect} selects no cell", \
            f"{sect}[].where (no cell)"
    e[key] = v = rng.choice(pools[key](raw))
    rule = f"{sect} selects no cell" if v in (["no-such-cell"], ["no\nsuch"]) else specs[key](v, raw)
    return f"{sect}[].{key} = {short(v)}", rule, f"{sect}[].{key}"


def m_probe(rng, raw):
    p = raw["probe"] = raw.get("probe") or {}
    key = rng.choice(list(PROBE))
    p[key] = v = rng.choice(POOL[:14] + samples(PROBE[key]) + (["db/read", "/x"] if key == "path" else []))
    return f"probe.{key} = {short(v)}", PROBE[key](v, raw), f"probe.{key}"


WEIGHTED = [m_delete, m_rename, *[m_value] * 4, m_axis, m_axis, m_selector, m_selector, m_id, m_item, m_item,
            m_probe]
MUTATORS = {f.__name__: f for f in dict.fromkeys(WEIGHTED)}


def m_text(rng, text):
    """Bytes: encodings, NUL, line ends, truncation, stray TOML syntax -> (desc, bytes, rule, known valid)."""
    lines = [x.encode() for x in text.splitlines(keepends=True)]
    i, j = rng.randrange(len(lines) + 1), rng.randrange(len(text))
    junk = rng.choice(["[", "]", '"', "=", "{", "\\", "\t", "\r", "'''", "[["])
    ins = lambda b: b"".join(lines[:i]) + b + b"".join(lines[i:])  # noqa: E731
    return rng.choice([
        ("latin-1 byte in a comment", lambda: ins(b"# caf\xe9\n"), "not UTF-8", False),
        ("UTF-16", lambda: text.encode("utf-16"), "not UTF-8", False),
        ("NUL byte in a comment", lambda: ins(b"# a\x00b\n"), "NUL byte (not valid TOML)", False),
        ("UTF-8 BOM", lambda: b"\xef\xbb\xbf" + text.encode(), None, True),
        ("CRLF line endings", lambda: text.replace("\n", "\r\n").encode(), None, True),
        (f"truncated at byte {j}", lambda: text.encode()[:j], None, False),
        (f"line {i} duplicated", lambda: ins(lines[min(i, len(lines) - 1)]), None, False),
        (f"{junk!r} inserted at {j}", lambda: (text[:j] + junk + text[j:]).encode(), None, False)])
