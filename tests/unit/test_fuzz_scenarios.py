"""Mutated and hostile scenario files through `connbench validate`'s own entry point (cli.main).

Every result must be exit 0, or exit 2 with one clean line naming the file: no traceback, no
exception escaping main, no hang. The mutators and the rules come from scripts/fuzz_scenarios.py
(imported by path); the explicit tests pin the required behaviour for hostile inputs.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("fuzz_scenarios", ROOT / "scripts" / "fuzz_scenarios.py")
fz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fz)
BASES = fz.load_bases()
SMOKE = (ROOT / "scenarios" / "smoke.toml").read_bytes()
MIB = 1 << 20


def validate(path: Path | str) -> tuple[int, str]:
    """(exit code, stderr) of `connbench validate PATH`, in-process, failing on a traceback or a hang."""
    res = fz.validate_inproc(str(path), timeout=20)
    assert not res.get("hang"), f"validate {path} did not answer in 20 s"
    assert res["exc"] is None, f"an exception escaped main: {res['exc']}"
    assert "Traceback" not in res["stderr"], res["stderr"][-2000:]
    return res["rc"], res["stderr"].strip()


def clean_error(path: Path | str) -> str:
    """The message of an exit-2 rejection, checked to be one bounded line that names the file."""
    rc, msg = validate(path)
    assert rc == 2, f"exit {rc}, expected 2: {msg[:300]}"
    assert msg and "\n" not in msg, f"not one line: {msg[:1000]}"
    assert len(msg) < 2000, f"{len(msg)} characters: {msg[:300]}..."
    assert str(path)[:150] in msg, f"the message does not name the file: {msg[:300]}"
    return msg


def scenario_with(tmp_path: Path, defaults: dict, name: str = "case.toml") -> Path:
    raw = copy.deepcopy(BASES["quick"][1])
    raw["defaults"] = {**raw["defaults"], **defaults}
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(fz.dump(raw), encoding="utf-8")
    return path


# -- property: every mutation of a shipped scenario is valid, or one clean error -----------------
@settings(max_examples=1000, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(mutator=st.sampled_from([*sorted(fz.MUTATORS), "m_text"]), seed=st.integers(0, 2**32 - 1))
def test_mutated_scenarios_are_valid_or_one_clean_error(tmp_path, mutator, seed):
    case = fz.random_case(random.Random(seed), BASES, mutator)
    note(f"{case['desc']} (rule: {case['rule']})")
    path = tmp_path / "case.toml"
    path.write_bytes(case["data"])
    rc, msg = validate(path)
    assert rc in (0, 2), f"exit {rc}: {msg[:300]}"
    if rc == 2:
        assert "\n" not in msg and len(msg) < 2000 and str(path) in msg, msg[:1000]
    else:  # a mutation that breaks a stated rule must not pass (fz's rules are conservative)
        assert not case["rule"], f"accepted although: {case['rule']}"


# -- encodings -------------------------------------------------------------------------------
def test_latin1_byte_in_a_comment_says_utf8(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"# caf\xe9 au lait\n" + SMOKE)
    assert "UTF-8" in clean_error(path)


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + SMOKE)
    assert validate(path)[0] == 0


def test_utf16_is_a_clean_error(tmp_path):
    path = tmp_path / "utf16.toml"
    path.write_bytes(SMOKE.decode().encode("utf-16"))
    assert "UTF-8" in clean_error(path)


# -- paths that are no scenario file -----------------------------------------------------------
@pytest.mark.parametrize("kind", ["directory", "missing", "symlink loop", "300-char name", "/dev/null"])
def test_non_regular_paths_are_a_quick_clean_error(tmp_path, kind):
    path = {"directory": tmp_path / "dir.toml", "missing": tmp_path / "missing.toml",
            "symlink loop": tmp_path / "loop.toml", "300-char name": tmp_path / ("x" * 300 + ".toml"),
            "/dev/null": Path("/dev/null")}[kind]
    if kind == "directory":
        path.mkdir()
    if kind == "symlink loop":
        path.symlink_to(path)
    t0 = time.monotonic()
    clean_error(path)
    assert time.monotonic() - t0 < 2


def test_fifo_is_refused_without_hanging(tmp_path):
    # a subprocess: a blocking open() on a FIFO would otherwise hang the test run itself
    fifo = tmp_path / "pipe.toml"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    try:
        res = subprocess.run([sys.executable, "-m", "connbench.cli", "validate", str(fifo)], cwd=ROOT,
                             capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("connbench validate hung on a FIFO")
    msg = res.stderr.strip()
    assert res.returncode == 2 and "\n" not in msg and "Traceback" not in msg and str(fifo) in msg, res.stderr
    assert time.monotonic() - t0 < 10


# -- size and nesting --------------------------------------------------------------------------
def test_file_over_1_mib_is_refused(tmp_path):
    path = tmp_path / "big.toml"
    path.write_bytes(SMOKE + b"# " + b"x" * (MIB + 1000) + b"\n")  # valid TOML, only too large
    clean_error(path)


@pytest.mark.parametrize("open_, close", [("[", "]"), ("{a = ", "}")])
def test_10000_levels_of_nesting_are_a_clean_error(tmp_path, open_, close):
    path = tmp_path / "deep.toml"
    path.write_bytes(f"a = {open_ * 10_000}1{close * 10_000}\n".encode() + SMOKE)
    clean_error(path)


@pytest.mark.parametrize("size", [900_000, 10_000_000])
def test_a_huge_invalid_value_gives_a_short_message(tmp_path, size):
    clean_error(scenario_with(tmp_path, {"pooling": "x" * size}))


def test_many_unknown_keys_give_a_short_message(tmp_path):
    clean_error(scenario_with(tmp_path, {f"k{i}": 1 for i in range(20_000)}))


# -- rich markup: user text is printed as written -------------------------------------------------
@pytest.mark.parametrize("value", ["[/]", "[defaults]", "[bold red]x[/]"])
def test_markup_in_a_value_appears_literally(tmp_path, value):
    assert repr(value) in clean_error(scenario_with(tmp_path, {"pooling": value}))


@pytest.mark.parametrize("name", ["case-[defaults].toml", "case-[/].toml", "case-[bold]x.toml"])
def test_markup_in_a_file_name_appears_literally(tmp_path, name):
    # "case-[/].toml" is a file "].toml" in a directory "case-[": the path still reads "case-[/].toml"
    path = scenario_with(tmp_path, {"workerz": 3}, name)
    msg = clean_error(path)
    assert name in msg and "workerz" in msg


def test_the_defaults_section_label_is_not_eaten(tmp_path):
    assert "[defaults]" in clean_error(scenario_with(tmp_path, {"workers": "3"}))
