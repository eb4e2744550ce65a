"""Strict validation everywhere, bounded messages, user text never markup (no processes)."""

from __future__ import annotations

import copy

import pytest

from connbench.cli import main as cli_main
from connbench.errors import ScenarioError
from connbench.scenario import expand

BASE = {"scenario": {"name": "t"}, "defaults": {"duration": 5}}


def err(raw, **kw) -> str:
    with pytest.raises(ScenarioError) as ei:
        expand.from_dict(raw, "my.toml", **kw)
    return str(ei.value)


def with_(extra: dict) -> dict:
    raw = copy.deepcopy(BASE)
    for key, value in extra.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return raw


@pytest.mark.parametrize("probe, word", [({"mode": "fast"}, "mode"), ({"stable_steps": "3"}, "stable_steps"),
                                         ({"stable_step": 3}, "stable_step"), ({"step_seconds": float("inf")},
                                                                               "step_seconds")])
def test_probe_table_is_checked_by_validate(probe, word):
    msg = err(with_({"probe": probe}))
    assert msg.startswith("my.toml:") and f"probe.{word}" in msg


@pytest.mark.parametrize("meta", [{"repeats": "3"}, {"repeats": 0}, {"seed": "1"}, {"seed": -1},
                                  {"allow_gevent_persistent": "yes"}, {"name": ".."}, {"name": "."},
                                  {"name": "a/b"}, {"name": "x" * 81}])
def test_scenario_table_is_strict_and_names_are_path_safe(meta):
    assert "scenario." in err(with_({"scenario": {"name": "t", **meta}}))


@pytest.mark.parametrize("defaults", [{"rate": float("inf")}, {"rate": float("nan")}, {"spawn_rate": float("inf")},
                                      {"mix": {"read": float("inf")}}, {"mix": {"read": float("nan")}},
                                      {"duration": float("nan")}])
def test_inf_and_nan_are_refused_in_knobs(defaults):
    assert "finite" in err(with_({"defaults": defaults}))


@pytest.mark.parametrize("limit", [{"p95_ms_max": float("inf")}, {"p99_ms_max": float("nan")},
                                   {"connections": -1}, {"connections_max": -2},
                                   {"errors_max": {"too_many_clients": -1}},
                                   {"errors_min": {"connection_lost": -1}}, {"pgbouncer_server_max": -1}])
def test_expectation_bounds(limit):
    msg = err(with_({"expect": [limit]}))
    assert "expect[0]" in msg


def test_expectation_naming_unknown_cells():
    msg = err(with_({"expect": [{"cells": ["nope", "default"], "connections": 1}]}))
    assert "expect[0].cells names no cell: nope" in msg and "cells: default" in msg


@pytest.mark.parametrize("fault, words", [
    ({"at": 5, "action": "kill_worker"}, "not within the measure window"),
    ({"at": 1, "action": "kill_worker", "dyno": 1}, "out of range"),
    ({"at": 1, "action": "terminate_backends", "dyno": 1}, "kill_worker"),
    ({"at": "1", "action": "kill_worker"}, "faults[0].at"),
    ({"at": 1, "action": "kill_worker", "cells": ["nope"]}, "names no cell: nope"),
    ({"at": 1, "action": "kill_worker", "where": {"workerz": 2}}, "'workerz' is not a knob"),
    ({"at": 1, "action": "kill_worker", "where": {"pooling": "pgbouncer"}}, "not a valid pooling"),
    ({"at": 1, "action": "kill_worker", "where": {"workers": 7}}, "selects no cell"),
    ({"at": 1, "action": "restart_pgbouncer"}, "without PgBouncer"),
    ({"at": float("nan"), "action": "kill_worker"}, "finite"),
])
def test_faults_are_strict_and_must_select_a_cell(fault, words):
    assert words in err(with_({"faults": [fault]}))


def test_a_fault_within_range_is_accepted():
    scen = expand.from_dict(with_({"defaults": {"dynos": 2}, "faults": [{"at": 4.5, "action": "kill_worker",
                                                                           "dyno": 1}]}))
    assert len(scen.faults_for(scen.cells[0])) == 1


@pytest.mark.parametrize("matrix, words", [
    ({"pooling": ["direct"], "exclude": [{"pooling": "dj-db-connpool"}]}, "matrix.exclude[0]"),
    ({"pooling": ["direct"], "exclude": [{"conn_max_age": "forever"}]}, "not a valid conn_max_age"),
    ({"include": [{"pooling": "pgpool"}]}, "matrix.include[0].pooling"),
    ({"include": [{"id": "..", "workers": 1}]}, "include[0].id"),
    ({"include": [{"id": ".", "workers": 1}]}, "include[0].id"),
    ({"include": [{"id": "a/b", "workers": 1}]}, "include[0].id"),
    ({"conn_max_age": ["none", "None", "unlimited"]}, "same setting"),
    ({"duration": [1, 1.0]}, "same setting"),
    ({"workers": [1, True]}, "matrix.workers"),
])
def test_matrix_values_are_checked_and_normalised(matrix, words):
    assert words in err(with_({"matrix": matrix}))


def test_where_values_are_normalised_before_matching():
    scen = expand.from_dict(with_({"matrix": {"conn_max_age": [0, "none"]},
                                   "expect": [{"where": {"conn_max_age": "None"}, "connections": 2}]}))
    chosen = [c.cell_id for c in scen.cells if scen.expect[0].selects(c.cell_id, c.group, c.knobs.model_dump())]
    assert chosen == ["cma-none"]


def test_long_cell_ids_get_a_short_hash_suffix():
    scen = expand.from_dict(with_({"matrix": {"mix": [{"read": 1.123456789, "write": 2.5, "slow": 3.25,
                                                        "health": 4.125, "slow_ms": 12345}]},
                                   "defaults": {"pooling": "direct"}}))
    cid = scen.cells[0].cell_id
    assert len(cid) <= expand.MAX_ID_LEN and expand.SAFE_NAME.fullmatch(cid[:80])
    other = expand.from_dict(with_({"matrix": {"mix": [{"read": 1.123456788, "write": 2.5, "slow": 3.25,
                                                         "health": 4.125, "slow_ms": 12345}]}}))
    assert other.cells[0].cell_id != cid  # the hash keeps ids distinct


def test_matrix_over_the_cell_limit_is_refused_with_count_and_duration():
    raw = with_({"matrix": {"workers": list(range(1, 11)), "users": list(range(1, 11)),
                            "threads": list(range(1, 6))}})
    assert len(expand.from_dict(raw).cells) == 100  # 500 planned, at the limit; threads != 1 pruned for sync
    msg = err(raw, max_cells=499)
    assert "expands to 500 cells" in msg and "--max-cells 500" in msg and " h at " in msg
    raw["scenario"]["repeats"] = 2  # repeats count: 1,000 cells
    assert "expands to 1,000 cells" in err(raw)
    assert len(expand.from_dict(raw, max_cells=1000).cells) == 200


def test_messages_are_bounded():
    msg = err(with_({"defaults": {"pooling": "x" * 10_000_000}}))
    assert len(msg) < 2_000 and "characters)" in msg
    many = {"expect": [{"cells": [f"c{i}" for i in range(500)], "connections": 1}]}
    assert len(err(with_(many))) < 2_000


def test_user_text_is_printed_literally_never_as_markup(tmp_path, capsys):
    (tmp_path / "a[").mkdir()
    path = tmp_path / "a[" / "]b[bold].toml"
    path.write_text('[scenario]\nname = "t"\n[defaults]\nworkerz = "[/]"\n')
    assert cli_main(["validate", str(path)]) == 2
    out = capsys.readouterr().err
    assert "a[/]b[bold].toml" in out and "[defaults]" in out and "Traceback" not in out


def test_validate_and_list_take_max_cells(tmp_path, capsys):
    path = tmp_path / "big.toml"
    path.write_text('[scenario]\nname = "big"\n[matrix]\nworkers = [1,2,3,4]\nusers = [1,2,3]\n')
    assert cli_main(["validate", str(path), "--max-cells", "11"]) == 2
    assert "expands to 12 cells" in capsys.readouterr().err
    assert cli_main(["validate", str(path), "--max-cells", "12"]) == 0
    with pytest.raises(SystemExit) as ei:
        cli_main(["list", str(path), "--max-cells", "0"])
    assert ei.value.code == 2


def test_django_pool_with_min_above_max_is_pruned_with_its_reason():
    scen = expand.from_dict(with_({"defaults": {"pooling": "django-pool"}, "matrix": {"pool_min_size": [1, 8]}}))
    assert [c.knobs.pool_min_size for c in scen.cells] == [1]
    assert "pool_min_size 8 > pool_max_size 4" in scen.pruned[0].reason


@pytest.mark.parametrize("target, url", [("http://[::1", "postgresql://app@127.0.0.1/db"),
                                         ("http://127.0.0.1:1", "host=127.0.0.1 password=hunter2 nonsense")])
def test_probe_with_a_malformed_target_or_url_is_one_clean_line(target, url, capsys):
    assert cli_main(["probe", "--target", target, "--database-url", url, "--no-report"]) == 2
    err = capsys.readouterr().err
    assert "not a valid URL or conninfo string" in err and "hunter2" not in err and "Traceback" not in err
