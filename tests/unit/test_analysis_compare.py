"""compare(): ratios of medians, "~" below the threshold, Mann-Whitney significance, schema refusal."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from connbench import results as R
from connbench.analysis import AnalysisError, SchemaMismatchError
from connbench.analysis.compare import compare, comparison_frame
from tests.fixture_runs import FIXTURES, copy_run

D0, D600 = "pool-direct_cma-0", "pool-direct_cma-600"


def rows(a, b, **kw):
    df = comparison_frame(FIXTURES / a, FIXTURES / b, **kw)
    return {(r["group"], r["metric"]): r for r in df.to_dict("records")}


def test_ratios_changes_and_significance_with_four_repeats():
    r = rows("run_c", "run_b")
    rps = r[(D0, "req/s")]  # A [10,11,12,13] vs B [20,21,22,23]: medians 11.5 -> 21.5
    assert (rps["a"], rps["b"], rps["n_a"], rps["n_b"]) == (11.5, 21.5, 4, 4)
    assert rps["ratio"] == pytest.approx(21.5 / 11.5)
    assert (rps["change"], rps["verdict"]) == ("+87.0%", "better")
    assert rps["p_value"] == pytest.approx(2 / 70)  # exact test, complete separation, 4 vs 4
    assert rps["significant"] and rps["test"] == "repeats"
    assert (rps["a_lo"], rps["a_hi"], rps["b_lo"], rps["b_hi"]) == (10, 13, 20, 23)  # min-max below 5 repeats
    p95 = r[(D0, "p95 ms")]  # 20 -> 20.5: +2.5 % is under the 5 % threshold
    assert p95["ratio"] == pytest.approx(1.025) and p95["change"] == "~" and p95["verdict"] == ""
    peak = r[(D0, "peak connections")]
    assert (peak["ratio"], peak["change"], peak["p_value"], peak["significant"]) == (1.0, "~", 1.0, False)
    rps6 = r[(D600, "req/s")]  # A [20]*4 vs B [19,20,21,21]
    assert rps6["b"] == 20.5 and rps6["change"] == "~" and rps6["p_value"] > 0.05 and not rps6["significant"]
    lat6 = r[(D600, "p95 ms")]  # 5 -> 6 ms: worse
    assert (lat6["ratio"], lat6["change"], lat6["verdict"], lat6["significant"]) == (
        pytest.approx(1.2), "+20.0%", "worse", True)
    conn6 = r[(D600, "peak connections")]
    assert (conn6["ratio"], conn6["change"], conn6["verdict"]) == (1.5, "+50.0%", "")
    only = [v for (g, _), v in r.items() if g == "pool-django-pool_cma-0"]
    assert [v["note"] for v in only] == ["only in B"]


def test_single_repeat_is_tested_on_per_second_samples_and_says_so():
    r = rows("run_a", "run_b")
    rps = r[(D0, "req/s")]  # run_a: 10 req/s once (10 every second); run_b median 21.5 of [20, 21, 22, 23]
    assert (rps["ratio"], rps["n_a"], rps["n_b"]) == (2.15, 1, 4)
    assert (rps["a_lo"], rps["a_hi"], rps["b_lo"], rps["b_hi"]) == (10, 10, 20, 23)  # 1-s blocks; min-max
    assert rps["test"] == "per-second samples" and rps["significant"]
    assert r[(D0, "p95 ms")]["ratio"] == pytest.approx(20.5 / 95.05)
    assert r[(D0, "peak connections")]["ratio"] == pytest.approx(2 / 3)
    assert r[(D0, "peak connections")]["change"] == "-33.3%"
    # a peak is an exact count: no interval from one repeat's seconds
    assert np.isnan(r[(D0, "peak connections")]["a_lo"])


def test_threshold_changes_what_counts_as_no_change():
    assert rows("run_c", "run_b", threshold=0.01)[(D0, "p95 ms")]["change"] == "+2.5%"
    assert rows("run_c", "run_b", threshold=0.6)[(D600, "peak connections")]["change"] == "~"
    with pytest.raises(AnalysisError, match="threshold"):
        compare(FIXTURES / "run_c", FIXTURES / "run_b", threshold=5)


def test_text_markdown_and_csv_output():
    text = compare(FIXTURES / "run_c", FIXTURES / "run_b")
    line = next(x for x in text.splitlines() if x.startswith(D0) and "req/s" in x)
    assert "+87.0% (better)" in line and "0.029 *" in line
    assert any("only in B" in x for x in text.splitlines())
    md = compare(FIXTURES / "run_c", FIXTURES / "run_b", fmt="md")
    assert "| group | metric | A [interval] | B [interval] |" in md
    assert f"| {D0} | p95 ms | 20 [20, 20] | 20.5 [20.5, 20.5] | 4/4 | 1.02 | ~ | 0.029 * | repeats |  |" in md
    assert compare(FIXTURES / "run_c", FIXTURES / "run_b", fmt="markdown") == md
    out = list(csv.DictReader(io.StringIO(compare(FIXTURES / "run_c", FIXTURES / "run_b", fmt="csv"))))
    first = out[0]
    assert (first["group"], first["metric"], first["a"], first["b"], first["change"]) == (
        D0, "req/s", "11.5", "21.5", "+87.0%")
    assert first["significant"] == "True" and float(first["p_value"]) == pytest.approx(2 / 70)
    with pytest.raises(AnalysisError, match="unknown format"):
        compare(FIXTURES / "run_c", FIXTURES / "run_b", fmt="html")


def test_refuses_a_run_written_by_a_newer_schema(tmp_path):
    b = copy_run("run_b", tmp_path)
    man = json.loads((b / R.MANIFEST_JSON).read_text())
    man["schema_version"] = R.SCHEMA_VERSION + 1
    (b / R.MANIFEST_JSON).write_text(json.dumps(man))
    with pytest.raises(SchemaMismatchError, match=f"written with results schema {R.SCHEMA_VERSION + 1}; this "
                                                  f"connbench reads schema {R.SCHEMA_VERSION} and older") as err:
        compare(FIXTURES / "run_c", b)
    assert isinstance(err.value, AnalysisError) and isinstance(err.value, ValueError)


def test_an_older_run_compares_through_the_migration():
    r = rows("run_v1", "run_a")  # schema 1 against schema 4: both read as schema 5
    assert r[(D0, "req/s")]["ratio"] == 1.0 and r[(D0, "p95 ms")]["ratio"] == 1.0


def test_compare_reads_without_writing(tmp_path):
    a, b = copy_run("run_c", tmp_path), copy_run("run_b", tmp_path)
    compare(a, b)
    assert not (a / R.SUMMARY_CSV).exists() and not (b / R.SUMMARY_CSV).exists()


def test_a_comparison_across_postgresql_builds_says_so(tmp_path):
    a, b = copy_run("run_c", tmp_path / "a"), copy_run("run_b", tmp_path / "b")
    assert "the server differs" not in compare(a, b)
    man = json.loads((b / R.MANIFEST_JSON).read_text())
    for server in man["servers"].values():
        server.update(kind="system", version="15.18")
    (b / R.MANIFEST_JSON).write_text(json.dumps(man))
    assert "B on system 15.18: the server differs, not only the setting." in compare(a, b)
