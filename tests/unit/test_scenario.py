"""Scenario validation, expansion, pruning, error messages (no processes started)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connbench.cli import main as cli_main
from connbench.errors import ScenarioError
from connbench.scenario import expand as sc
from connbench.scenario.knobs import Knobs
from connbench.scenario.predict import predict

ROOT = Path(__file__).resolve().parents[2]
BASE = {"scenario": {"name": "t"}}


def err(raw, path="my.toml") -> str:
    with pytest.raises(ScenarioError) as ei:
        sc.from_dict(raw, path)
    return str(ei.value)


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "scenarios").glob("*.toml")))
def test_shipped_scenarios_validate(name):
    scen = sc.load(ROOT / "scenarios" / f"{name}.toml")
    assert scen.cells
    assert len({c.cell_id for c in scen.cells}) == len(scen.cells)


def test_unknown_key_names_file_key_and_allowed():
    msg = err({**BASE, "defaults": {"workerz": 3}})
    assert msg.startswith("my.toml:") and "'workerz'" in msg and "allowed keys:" in msg and "workers" in msg


def test_unknown_top_level_and_scenario_keys():
    assert "'setup'" in err({**BASE, "setup": {}}) and "allowed" in err({**BASE, "setup": {}})
    assert "'scenario.repeat'" in err({"scenario": {"name": "t", "repeat": 2}})


def test_wrong_type_says_what_is_allowed():
    msg = err({**BASE, "defaults": {"pooling": "pgpool"}})
    assert "[defaults].pooling" in msg and "'pgbouncer-transaction'" in msg
    msg = err({**BASE, "defaults": {"conn_max_age": "forever"}})
    assert "conn_max_age" in msg and '"none"' in msg
    msg = err({**BASE, "matrix": {"workers": [2, "many"]}})
    assert "workers" in msg and "'many'" in msg


def test_empty_axis_and_non_list_axis():
    assert "matrix.workers is an empty axis" in err({**BASE, "matrix": {"workers": []}})
    assert "must be a list" in err({**BASE, "matrix": {"workers": 3}})
    assert "unknown key 'matrix.wokers'" in err({**BASE, "matrix": {"wokers": [1]}})


@pytest.mark.parametrize("duration", [0, -1])
def test_duration_must_be_positive(duration):
    msg = err({**BASE, "defaults": {"duration": duration}})
    assert "duration" in msg and "> 0" in msg


def test_no_cells_left_is_an_error_with_the_reason():
    msg = err({**BASE, "defaults": {"pooling": "django-pool"}, "matrix": {"conn_max_age": [60, "none"]}})
    assert "no cells left" in msg and "CONN_MAX_AGE=0" in msg


def test_expansion_order_ids_and_pruning_reasons():
    scen = sc.from_dict({**BASE, "matrix": {"conn_max_age": [0, 60, "none"], "pooling": ["direct", "django-pool"]}})
    assert [c.cell_id for c in scen.cells] == [
        "cma-0_pool-direct", "cma-0_pool-django-pool", "cma-60_pool-direct", "cma-none_pool-direct"]
    assert len(scen.pruned) == 2 and all("ImproperlyConfigured" in p.reason for p in scen.pruned)


def test_exclude_rules_match_like_asv():
    scen = sc.from_dict({**BASE, "matrix": {"workers": [1, 2, 3], "conn_max_age": [0, 60],
                                            "exclude": [{"workers": [1, 3], "conn_max_age": 0}]}})
    assert sorted((c.knobs.workers, c.knobs.conn_max_age) for c in scen.cells) == [(1, 60), (2, 0), (2, 60), (3, 60)]
    assert all(p.reason == "excluded by matrix.exclude" for p in scen.pruned)
    bad = {**BASE, "matrix": {"workers": [1], "exclude": [{"bogus": 1}]}}
    assert "unknown key 'matrix.exclude[0].bogus'" in err(bad)


def test_gevent_persistent_needs_opt_in():
    raw = {**BASE, "defaults": {"worker_class": "gevent"}, "matrix": {"conn_max_age": [0, "none"]}}
    scen = sc.from_dict(raw)
    assert [c.knobs.conn_max_age for c in scen.cells] == [0]
    assert "pile up" in scen.pruned[0].reason
    raw["scenario"] = {"name": "t", "allow_gevent_persistent": True}
    assert len(sc.from_dict(raw).cells) == 2


def test_repeats_share_a_group_and_ids_are_stable():
    raw = {"scenario": {"name": "t", "repeats": 3}, "matrix": {"workers": [2]}}
    a, b = sc.from_dict(raw), sc.from_dict(raw)
    assert [c.cell_id for c in a.cells] == ["w-2_r1", "w-2_r2", "w-2_r3"] == [c.cell_id for c in b.cells]
    assert {c.group for c in a.cells} == {"w-2"} and a.hash == b.hash


def test_predictions_follow_the_articles():
    k = Knobs(dynos=2, workers=2, threads=2, worker_class="gthread", conn_max_age="none")
    assert predict(k).connections == 8
    cma0 = predict(Knobs(workers=3, conn_max_age=0))
    assert cma0.at_rest == 0 and cma0.connections is None and cma0.connections_max == 3
    p = predict(Knobs(workers=3, pooling="pgbouncer-transaction", pgbouncer_pool_size=2,
                            pgbouncer_reserve_pool=1, conn_max_age=600))
    assert p.pgbouncer_server_max == 3 and p.pgbouncer_clients == 3
    p = predict(Knobs(workers=2, threads=4, worker_class="gthread", pooling="django-pool",
                            pool_min_size=1, pool_max_size=3))
    assert p.connections == 6 and p.connections_max == 6
    assert predict(Knobs(dynos=7, workers=3, conn_max_age=600), app_slots=20).exceeds_app_slots


def test_gevent_predicts_one_connection_per_user_serving_a_request():
    assert predict(Knobs(workers=2, worker_class="gevent", conn_max_age="none", users=8)).connections == 8


def test_predictions_under_asgi():
    leak = predict(Knobs(workers=2, worker_class="asgi", conn_max_age="none"))
    assert leak.bounded is False and leak.connections is None and leak.connections_max is None
    assert leak.at_rest is None and "fresh thread" in leak.basis
    assert predict(Knobs(workers=2, worker_class="asgi", conn_max_age=60)).bounded is False
    cma0 = predict(Knobs(workers=2, worker_class="asgi", conn_max_age=0, users=8))
    assert cma0.bounded and cma0.at_rest == 0 and cma0.connections_max == 8  # the requests in flight
    pool = predict(Knobs(workers=2, worker_class="asgi", pooling="django-pool", pool_max_size=2))
    assert pool.bounded and pool.connections_max == 4
    pgb = predict(Knobs(workers=2, worker_class="asgi", conn_max_age="none", pooling="pgbouncer-transaction",
                        pgbouncer_pool_size=3))
    assert pgb.bounded and pgb.connections_max == 3 and pgb.pgbouncer_clients is None  # clients accumulate
    assert predict(Knobs(workers=2, worker_class="gthread", threads=2, conn_max_age="none")).bounded
    # threads do not apply to ASGI: pruned with the reason
    raw = {"scenario": {"name": "t"}, "defaults": {"worker_class": "asgi"}, "matrix": {"threads": [1, 4]}}
    s = sc.from_dict(raw)
    assert len(s.cells) == 1 and "only applies to worker_class='gthread'" in s.pruned[0].reason


def test_a_pool_smaller_than_a_workers_concurrency_is_predicted():
    wait = predict(Knobs(worker_class="gthread", threads=4, pooling="django-pool", pool_max_size=2,
                         pool_timeout=30)).pool_wait
    assert wait == ("each worker runs up to 4 threads at once on Django's pool (max_size 2): up to 2 of them wait "
                    "for a connection, and a wait past 30 s fails with django_pool_timeout")
    dbcp = predict(Knobs(worker_class="gthread", threads=3, pooling="dj-db-conn-pool", dbcp_pool_size=1,
                         dbcp_max_overflow=1, dbcp_timeout=2)).pool_wait
    assert dbcp is not None and "up to 1 of them wait" in dbcp
    assert dbcp.endswith("past 2 s fails with dbcp_pool_timeout")
    # a closed loop of 3 users never has more than 3 requests in flight, whatever gevent's worker_connections
    assert "up to 3 greenlets" in (predict(Knobs(worker_class="gevent", users=3, pooling="django-pool",
                                                 pool_max_size=2)).pool_wait or "")
    for fits in (Knobs(worker_class="gthread", threads=2, pooling="django-pool", pool_max_size=2),
                 Knobs(pooling="django-pool", pool_max_size=1),  # sync: one request at a time
                 Knobs(worker_class="gthread", threads=8, pooling="direct"),  # no pool: a connection per thread
                 Knobs(worker_class="gthread", threads=2, pooling="dj-db-conn-pool", dbcp_pool_size=1,
                       dbcp_max_overflow=1)):
        assert predict(fits).pool_wait is None, fits


def test_cli_list_warns_before_the_run(capsys, tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[scenario]\nname = "s"\n[defaults]\nworker_class = "gthread"\nthreads = 4\n'
                    'pooling = "django-pool"\npool_max_size = 2\n')
    assert cli_main(["list", str(path)]) == 0
    out = capsys.readouterr()
    assert "warning: default: pool smaller than concurrency: each worker runs up to 4 threads" in " ".join(
        (out.out + out.err).split())


def test_bad_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[scenario\nname=1")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        sc.load(bad)
    with pytest.raises(ScenarioError, match="no such scenario file"):
        sc.load(tmp_path / "nope.toml")


def test_cli_rejects_bad_scenario_before_starting_anything(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[scenario]\nname = "x"\n[defaults]\npoolling = "direct"\n')
    run_dir = tmp_path / "run"
    assert cli_main(["run", str(bad), "--run-dir", str(run_dir)]) == 2
    err_text = capsys.readouterr().err
    assert "bad.toml" in err_text and "poolling" in err_text
    assert not run_dir.exists()


def test_cli_list_prints_cells_and_predictions(capsys):
    assert cli_main(["list", str(ROOT / "scenarios" / "quick.toml")]) == 0
    out = capsys.readouterr()
    assert "cma-none" in out.out and "predicted" in out.out


# -- property tests: the validator accepts exactly the valid knobs ----------------------------
valid_values = {
    "workers": st.integers(1, 64), "threads": st.just(1), "dynos": st.integers(1, 32),
    "conn_max_age": st.one_of(st.integers(0, 10_000), st.just("none")),
    "pooling": st.sampled_from(["direct", "pgbouncer-session", "pgbouncer-transaction", "dj-db-conn-pool"]),
    "users": st.integers(1, 2000), "duration": st.floats(0.1, 3600), "max_connections": st.integers(5, 10_000),
}


@settings(max_examples=150, deadline=None)
@given(st.fixed_dictionaries({}, optional=valid_values))
def test_valid_defaults_always_expand(defaults):
    scen = sc.from_dict({**BASE, "defaults": defaults})
    assert len(scen.cells) == 1
    for key, value in defaults.items():
        assert getattr(scen.cells[0].knobs, key) == value


@settings(max_examples=150, deadline=None)
@given(st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=12)
       .filter(lambda k: k not in Knobs.model_fields), st.integers())
def test_any_unknown_key_is_named(key, value):
    msg = err({**BASE, "defaults": {key: value}})
    assert f"'{key}'" in msg


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["workers", "dynos", "users", "duration", "max_connections", "threads"]),
       st.one_of(st.integers(-1000, 0), st.text(max_size=5), st.booleans().map(str)))
def test_invalid_values_are_rejected_with_the_key(key, value):
    msg = err({**BASE, "defaults": {key: value}})
    assert key in msg and "my.toml" in msg


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 8), min_size=1, max_size=4, unique=True),
       st.lists(st.sampled_from([0, 60, "none"]), min_size=1, max_size=3, unique=True))
def test_expansion_is_the_cartesian_product(workers, cmas):
    scen = sc.from_dict({**BASE, "matrix": {"workers": workers, "conn_max_age": cmas}})
    assert len(scen.cells) == len(workers) * len(cmas)
    assert {(c.knobs.workers, c.knobs.conn_max_age) for c in scen.cells} == {(w, m) for w in workers for m in cmas}


def test_include_adds_cells_over_defaults_and_escapes_exclude():
    scen = sc.from_dict({"scenario": {"name": "t", "allow_gevent_persistent": True},
                         "matrix": {"conn_max_age": [0, 60], "exclude": [{"conn_max_age": 60}],
                                    "include": [{"worker_class": "gevent", "conn_max_age": 60}]}})
    assert [c.cell_id for c in scen.cells] == ["cma-0", "k-gevent_cma-60"]
    assert scen.cells[1].knobs.worker_class == "gevent" and scen.cells[1].knobs.conn_max_age == 60


def test_include_only_matrix_runs_just_the_included_cells_with_explicit_ids():
    scen = sc.from_dict({**BASE, "matrix": {"include": [{"id": "a", "workers": 3}, {"pooling": "django-pool"}]}})
    assert [c.cell_id for c in scen.cells] == ["a", "pool-django-pool"]
    assert "id must be" in err({**BASE, "matrix": {"include": [{"id": "a b"}]}})


def test_tls_on_the_embedded_server_is_pruned_never_run_in_plain_text(tmp_path):
    path = tmp_path / "tls.toml"
    path.write_text('[scenario]\nname = "tls"\n[defaults]\nserver = "embedded"\n'
                    '[matrix]\ntls = [false, true]\nauth = ["scram-sha-256", "md5", "trust"]\n')
    s = sc.load(path)
    assert sorted(c.knobs.auth for c in s.cells) == ["md5", "scram-sha-256", "trust"]
    assert all(not c.knobs.tls for c in s.cells) and len(s.pruned) == 3
    assert all("OpenSSL" in p.reason and 'server = "system"' in p.reason for p in s.pruned)
    system = sc.load(tmp_path.joinpath("sys.toml").write_text(path.read_text().replace("embedded", "system"))
                     and tmp_path / "sys.toml")
    assert len(system.cells) == 6 and not system.pruned
    # each (auth, tls) is its own server: a cell never shares a cluster set up another way
    assert len({c.knobs.server_key() for c in system.cells}) == 6
