#!/usr/bin/env python3
"""Fuzz `connbench validate` with mutated copies of the shipped scenarios (scenarios/*.toml).

Every case runs connbench.cli.main(["validate", path]) in-process under a SIGALRM timeout; the hostile
inputs and a sample also run as `python -m connbench.cli validate FILE` (exit code, stderr, hard timeout).
  valid          exit 0                     clean_error   exit 2, one line naming the file, no traceback
  traceback      an exception escaped main, or "Traceback" on stderr
  hang           no answer within --timeout slow          answered after > 2 s
  silent_accept  exit 0 although the mutation broke a rule below (the rule is printed)
  unclean_error  exit 2 but several lines, > 2,000 characters or the file not named; or another exit code
  false_reject   exit 2 for a file known to be valid (a UTF-8 BOM, CRLF line ends, a re-serialised scenario)
Exits 1 if any case is a traceback or a hang.   Usage: fuzz_scenarios.py [--cases 2000] [--seed 0] [--out F]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import traceback
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SLOW_S, MAX_MSG, MIB = 2.0, 2000, 1 << 20

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzz_mutations import MUTATORS, WEIGHTED, m_text  # noqa: E402
from fuzz_rules import (  # noqa: E402 - the oracle's tables and helpers
    KNOBS,
    dump,
    tv,
)


def load_bases():
    return {p.stem: (p.read_text(encoding="utf-8"), tomllib.loads(p.read_text(encoding="utf-8")))
            for p in sorted((ROOT / "scenarios").glob("*.toml"))}


def random_case(rng, bases, mutator=None):
    """One mutated scenario: {desc, data, rule, expect_valid, slot}. mutator: a MUTATORS name or "m_text"."""
    base = rng.choice(sorted(bases))
    text, raw0 = bases[base]
    if mutator == "m_text" or (mutator is None and rng.random() < .08):
        desc, make, rule, ok = m_text(rng, text)
        return {"desc": f"{base}: {desc}", "data": make(), "rule": rule, "expect_valid": ok,
                "slot": re.sub(r"\d+", "N", desc)}
    while True:
        raw = copy.deepcopy(raw0)
        with contextlib.suppress(IndexError):  # nothing for this mutator in this scenario: draw again
            desc, rule, slot = (MUTATORS[mutator] if mutator else rng.choice(WEIGHTED))(rng, raw)
            return {"desc": f"{base}: {desc}", "data": dump(raw).encode(), "rule": rule, "expect_valid": False,
                    "slot": slot}


def special_cases(tmp, bases):
    """One of each hostile input. Files over 1 MiB must be refused; deep nesting must not recurse."""
    smoke, quick = bases["smoke"][0], bases["quick"][1]
    nest = lambda o, c, n: f"a = {o * n}1{c * n}\n{smoke}".encode()  # noqa: E731
    big = lambda v: dump({**quick, "defaults": {**quick["defaults"], **v}}).encode()  # noqa: E731
    bad = smoke.encode() + b"\n[bogus]\n"

    def fill(sect, item):  # as many items as fit under 1 MiB, each matched against each of 500 cells
        raw = {"scenario": {"name": "many"}, "matrix": {"users": list(range(1, 501))}}
        (raw["matrix"] if sect == "exclude" else raw)[sect] = [item] * ((MIB - 8192) // (len(tv(item)) + 2))
        return dump(raw).encode()
    axes = {k: list(range(KNOBS[k].lo or 1, (KNOBS[k].lo or 1) + 20)) for k in ("users", "workers", "threads",
            "dynos", "max_connections", "pool_max_size", "dbcp_pool_size", "pgbouncer_pool_size")}
    out = [(f"identity: {n} re-serialised", dump(raw).encode(), None, True) for n, (_, raw) in bases.items()] + [
        ("latin-1 byte in a comment", b"# caf\xe9\n" + smoke.encode(), "not UTF-8"),
        ("UTF-8 BOM", b"\xef\xbb\xbf" + smoke.encode(), None, True),
        ("UTF-16 with BOM", smoke.encode("utf-16"), "not UTF-8"),
        ("UTF-16-LE without BOM", smoke.encode("utf-16-le"), "not UTF-8"),
        ("NUL byte in a comment", b"# a\x00b\n" + smoke.encode(), "NUL byte (not valid TOML)"),
        ("NUL (\\u0000) in scenario.name", smoke.replace('"smoke"', '"a\\u0000b"').encode(), "path-unsafe id"),
        ("arrays nested 10,000 deep", nest("[", "]", 10_000), "unknown key"),
        ("inline tables nested 10,000 deep", nest("{b = ", "}", 10_000), "unknown key"),
        ("arrays nested 900 deep", nest("[", "]", 900), "unknown key"),
        ("1.1 MiB of comments", smoke.encode() + b"# " + b"x" * (MIB + MIB // 10) + b"\n", "file > 1 MiB"),
        ("1.1 MiB description", big({}).replace(b'description = "', b'description = "' + b"x" * (MIB + MIB // 10)),
         "file > 1 MiB"),
        ("10 MB string as defaults.pooling", big({"pooling": "x" * 10_000_000}), "file > 1 MiB"),
        ("900 kB string as defaults.pooling", big({"pooling": "x" * 900_000}), "value: not an allowed value"),
        ("900 kB key in [defaults]", big({"k" * 900_000: 1}), "unknown key"),
        ("20,000 unknown keys in [defaults]", big({f"k{i}": 1 for i in range(20_000)}), "unknown key"),
        ("'[/]' as defaults.pooling", big({"pooling": "[/]"}), "value: not an allowed value"),
        ("'[defaults]' as defaults.pooling", big({"pooling": "[defaults]"}), "value: not an allowed value"),
        ("'[/]' as a key in [defaults]", big({"[/]": 1}), "unknown key"),
        ("file named case-[/].toml", bad, "unknown key", False, "case-[/].toml"),
        ("file named case-[defaults].toml", bad, "unknown key", False, "case-[defaults].toml"),
        ("file named case-[bold red]x.toml", bad, "unknown key", False, "case-[bold red]x.toml"),
        ("file named case-\\n.toml (a newline)", bad, "unknown key", False, "case-\n.toml"),
        ("a newline in an expect.where key", dump({**bases["heroku"][1], "expect": [
            {"where": {"dy\nnos": 1}, "connections_max": 9}]}).encode(), "unknown key"),
        ("empty file", b"", "missing [scenario]"),
        ("8 axes x 20 values (2.6e10 cells)", dump({"scenario": {"name": "huge"}, "matrix": axes}).encode(), None)]
    cases = [{"desc": d, "data": data, "rule": rule, "expect_valid": bool(rest and rest[0]),
              "name": rest[1] if len(rest) > 1 else None, "slot": d} for d, data, rule, *rest in out]
    # files < 1 MiB whose validation would be O(items x cells): refused by the entry limits, quickly
    for d, data in [("500 cells x ~30,000 matrix.exclude rules", fill("exclude", {"pooling": "pgbouncer-session"})),
                    ("500 cells x ~18,000 [[expect]]", fill("expect", {"where": {"pooling": "direct"},
                                                                          "connections_max": 1000})),
                    ("500 cells x ~17,000 [[faults]]", fill("faults", {"at": 1.0, "action": "terminate_backends",
                                                                         "where": {"pooling": "direct"}}))]:
        cases.append({"desc": d, "data": data, "rule": "over an entry limit (exclude/include/expect 1,000, faults 100)",
                      "expect_valid": False, "slot": d, "modes": ("in",)})
    (tmp / "a-directory.toml").mkdir()
    os.mkfifo(tmp / "a-fifo.toml")
    (tmp / "loop.toml").symlink_to(tmp / "loop.toml")
    for d, path, modes in [("a directory", tmp / "a-directory.toml", "in sub"),
                           ("a FIFO (open blocks until a writer comes)", tmp / "a-fifo.toml", "in sub"),
                           ("/dev/null", "/dev/null", "in sub"), ("a missing path", tmp / "missing.toml", "in sub"),
                           ("a symlink loop", tmp / "loop.toml", "in sub"),
                           ("a 300-char file name", tmp / ("x" * 300 + ".toml"), "in sub"),
                           ("a NUL in the path", str(tmp / "a\x00b.toml"), "in"),
                           ("/dev/zero (endless; memory-capped subprocess)", "/dev/zero", "sub")]:
        cases.append({"desc": d, "path": str(path), "rule": "not a regular scenario file", "expect_valid": False,
                      "slot": d, "modes": tuple(modes.split())})
    return cases


# ---- Running one case
def _frame(filename, lineno, name):
    filename = filename.split("site-packages/")[-1]
    short_name = os.path.relpath(filename, ROOT) if filename.startswith(str(ROOT)) else \
        "/".join(Path(filename).parts[-2:])
    return f"{short_name}:{lineno} {name}"


def describe(e):
    tb = traceback.extract_tb(e.__traceback__)
    ours = [f for f in tb if "/connbench/" in f.filename]
    return {"type": type(e).__name__, "msg": str(e)[:300], "where": _frame(*tb[-1][:3]) if tb else "?",
            "ours": _frame(*ours[-1][:3]) if ours else None}


class Hang(BaseException):
    """Raised by SIGALRM in a case that overran its timeout; a BaseException, so main()'s handlers let it by."""


def _alarm(*_):
    raise Hang


def validate_inproc(path: str, timeout: float | None = None) -> dict:
    """`connbench validate PATH` in this process, through the CLI's own main(), output captured. A timeout
    interrupts Python code and blocking system calls (a FIFO's open), not a C loop that never returns."""
    from connbench.cli import main as cli_main

    out, err, rc, exc = io.StringIO(), io.StringIO(), None, None
    t0 = time.perf_counter()
    if timeout:
        signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli_main(["validate", path])
    except Hang:
        return {"hang": True, "elapsed": timeout}
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else int(e.code is not None)
    except BaseException as e:  # noqa: BLE001 - an exception escaping main is the finding
        exc = describe(e)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return {"rc": rc, "stderr": err.getvalue(), "exc": exc, "elapsed": time.perf_counter() - t0}


def _cap_memory():  # /dev/zero and 10 MB strings must not take the machine down
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


def validate_subprocess(path: str, timeout: float) -> dict:
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-m", "connbench.cli", "validate", path], cwd=ROOT, capture_output=True,
                           timeout=timeout, preexec_fn=_cap_memory)
    except subprocess.TimeoutExpired:
        return {"hang": True, "elapsed": timeout}
    return {"rc": p.returncode, "stderr": p.stderr.decode("utf-8", "replace"), "exc": None,
            "elapsed": time.perf_counter() - t0}


def classify(case, res, path, slow_s=SLOW_S):
    """-> (class, first line of the message or the exception, where it was raised)."""
    if res.get("hang"):
        return "hang", f"no answer in {res['elapsed']:.0f} s", ""
    msg = res["stderr"].strip()
    if e := res["exc"]:
        return "traceback", f"{e['type']}: {e['msg']}", e["where"] + (f" (via {e['ours']})" if e["ours"] else "")
    if "Traceback" in msg:
        frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', msg)
        return "traceback", msg.splitlines()[-1], _frame(*frames[-1]) if frames else "?"
    first, name = (msg.splitlines() or ["(no message)"])[0], str(Path(path))
    name = name if name.isprintable() else repr(name)[1:-1]  # messages escape control characters
    if res["rc"] == 0:
        return ("silent_accept" if case["rule"] else "slow" if res["elapsed"] > slow_s else "valid"), first, ""
    if res["rc"] != 2 or not msg or "\n" in msg or len(msg) > MAX_MSG or ("\x00" not in name and name[:150] not in msg):
        why = f"exit {res['rc']}, {len(msg.splitlines())} lines, {len(msg)} chars, names the file: {name[:150] in msg}"
        return "unclean_error", f"[{why}] {first[:300]}", ""
    cls = "slow" if res["elapsed"] > slow_s else "false_reject" if case["expect_valid"] else "clean_error"
    return cls, first, ""


ORDER = ["valid", "clean_error", "traceback", "hang", "slow", "silent_accept", "unclean_error", "false_reject"]


def group(r):
    """Distinct causes: exception + where; rule + slot (knob names folded into *); else the mutation."""
    if r["cls"] == "traceback":
        return f"{r['first'].split(':')[0].split('.')[-1]} at {r['where']}"
    if r["cls"] == "silent_accept":
        return f"{r['rule'].split(':')[0].split(' (')[0]} @ " + re.sub(r"(where|exclude\[\]|probe)\.\w+", r"\1.*",
                                                                       r["slot"])
    return r["slot"]


def report(results, n_cases, wall):
    print(f"\n{n_cases} cases in {wall:.0f} s ({sum(r['mode'] == 'sub' for r in results)} also as subprocesses)")
    counts = Counter((r["cls"], r["mode"]) for r in results)
    print(f"{'class':<15}{'in-process':>12}{'subprocess':>12}")
    for c in ORDER:
        print(f"{c:<15}{counts[c, 'in']:>12}{counts[c, 'sub']:>12}")
    for c in ORDER[2:]:
        rows = [r for r in results if r["cls"] == c]
        groups = defaultdict(list)
        for r in rows:
            groups[group(r)].append(r)
        if rows:
            print(f"\n== {c}: {len(rows)} cases, {len(groups)} distinct")
            for key, rs in sorted(groups.items(), key=lambda kv: -len(kv[1])):
                print(f"   {len(rs):>4} x {key}")
            print("   examples:")
        for r in sorted(rows, key=lambda r: len(r["desc"]))[:20]:
            rule, where = f"   (rule: {r['rule']})" * (c == "silent_accept"), f"  @ {r['where']}" * bool(r["where"])
            print(f"   [{r['mode']}] {r['desc']}{rule}   {r['elapsed']:.2f} s\n        -> {r['first'][:200]}{where}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="write every case's result here (JSON)")
    ap.add_argument("--subprocess", type=int, default=40, help="random cases also run as subprocesses (default 40)")
    ap.add_argument("--timeout", type=float, default=8.0, help="seconds before a case counts as a hang")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))  # in-process: the same connbench as `python -m connbench.cli` run in ROOT
    t0, rng, bases = time.perf_counter(), random.Random(args.seed), load_bases()
    tmp = Path(tempfile.mkdtemp(prefix="fuzz-scenarios-"))
    cases = special_cases(tmp, bases)
    n_special = len(cases)
    cases += [random_case(rng, bases) for _ in range(max(0, args.cases - n_special))]
    step = max(1, (len(cases) - n_special) // max(1, args.subprocess))
    sub = set(range(n_special)) | (set(range(n_special, len(cases), step)) if args.subprocess else set())
    results = []
    try:
        for i, case in enumerate(cases):
            path = case.get("path") or str(tmp / (case.get("name") or f"{i:05d}.toml"))
            if "data" in case:
                Path(path).parent.mkdir(exist_ok=True)  # "case-[/].toml" is "].toml" in a directory "case-["
                Path(path).write_bytes(case["data"])
            for mode in ("in", "sub"):
                if mode not in case.get("modes", ("in", "sub")) or (mode == "sub" and i not in sub):
                    continue
                res = validate_inproc(path, args.timeout) if mode == "in" else validate_subprocess(path, args.timeout)
                cls, first, where = classify(case, res, path, SLOW_S if mode == "in" else SLOW_S + 1)
                results.append({"i": i, "mode": mode, "cls": cls, "desc": case["desc"], "rule": case["rule"],
                                "slot": case["slot"], "rc": res.get("rc"), "elapsed": round(res["elapsed"], 3),
                                "first": first, "where": where})
            if "data" in case:
                Path(path).unlink()
            if (i + 1) % 500 == 0:
                print(f"... {i + 1}/{len(cases)} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(results, len(cases), time.perf_counter() - t0)
    if args.out:
        Path(args.out).write_text(json.dumps({"seed": args.seed, "cases": len(cases), "results": results}, indent=1))
    return 1 if any(r["cls"] in ("traceback", "hang") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
