"""A scenario's [app] and [load] (your project), checked before anything starts; pruning for a
server that is yours; what the manifest records of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from connbench.cli import main as cli_main
from connbench.run.stack import external_prune_reason
from connbench.scenario import expand
from connbench.scenario.knobs import Fault, Knobs
from connbench.scenario.project import redact_scenario
from connbench.services.external import ExternalServer

ROOT = Path(__file__).resolve().parents[2]
SHOP = ROOT / "examples" / "shop" / "connbench.toml"


def _scenario(tmp_path: Path, app: str = "", load: str = "", extra: str = "") -> Path:
    (tmp_path / "proj" / "mysite").mkdir(parents=True, exist_ok=True)
    for name in ("settings.py", "wsgi.py", "__init__.py"):
        (tmp_path / "proj" / "mysite" / name).write_text("")
    f = tmp_path / "s.toml"
    f.write_text(f'[scenario]\nname = "t"\n{app}\n{load}\n[defaults]\nworkers = 2\n{extra}\n')
    return f


APP = '[app]\nsettings = "mysite.settings"\nwsgi = "mysite.wsgi:application"\npath = "proj"\n'


def test_the_shop_example_resolves():
    scen = expand.load(SHOP)
    p = scen.project
    assert not p.bundled and p.user_settings == "shop.settings" and p.settings == "connbench.target_app.byo_settings"
    assert Path(p.path) == SHOP.parent and p.fixtures == ("catalog",) and p.verify_paths[0] == "/up"
    assert set(p.verify_paths) == {"/up", "/", "/products/7/", "/products/7/hit"}
    assert p.app_env()["CONNBENCH_USER_SETTINGS"] == "shop.settings" and p.app_env()["SHOP_DEBUG"] == "0"
    assert p.public()["env"] == ["SHOP_DEBUG"]  # names only


def test_bundled_project_by_default():
    p = expand.load(ROOT / "scenarios" / "smoke.toml").project
    assert p.bundled and p.wsgi == "connbench.target_app.wsgi:application" and p.verify_paths == ("/health", "/db/read")


@pytest.mark.parametrize("app, load, needle", [
    (APP.replace('path = "proj"', 'path = "nowhere"'), "", "app.path 'nowhere': not a directory"),
    (APP.replace("mysite.settings", "mysite.nosuch"), "", "app.settings: no module 'mysite.nosuch'"),
    (APP.replace("mysite.wsgi:application", "mysite.wsgi"), "", "app.wsgi"),
    (APP + 'env = { DJANGO_SETTINGS_MODULE = "x" }\n', "", "set by the harness"),
    (APP + 'env = { PGPASSWORD = "x" }\n', "", "set by the harness"),
    (APP + 'colour = "red"\n', "", "unknown key 'app.colour'"),
    (APP, '[load]\npaths = { "/" = 1 }\nlocustfile = "x.py"\n', "exactly one of paths"),
    (APP, '[load]\npaths = { "nope" = 1 }\n', "not a path starting with /"),
    (APP, '[load]\npaths = { "/" = 0 }\n', "must be > 0"),
    (APP, '[load]\nlocustfile = "missing.py"\n', "load.locustfile 'missing.py': no such file"),
])
def test_bad_app_or_load_is_one_clean_error_before_anything_starts(tmp_path, capsys, app, load, needle):
    f = _scenario(tmp_path, app, load)
    assert cli_main(["run", str(f), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert needle in " ".join(err.split()) and "s.toml" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_app_prunes_what_does_not_apply(tmp_path):
    f = _scenario(tmp_path, APP, "", "[matrix]\nworker_class = [\"sync\", \"asgi\"]\nview = [\"sync\", \"async\"]")
    scen = expand.load(f)
    assert [c.knobs.worker_class for c in scen.cells] == ["sync"]
    reasons = " ".join(p.reason for p in scen.pruned)
    assert "needs [app] asgi" in reasons and "view applies to the bundled app" in reasons


def test_a_locustfile_rules_out_the_open_model(tmp_path):
    (tmp_path / "lf.py").write_text("")
    f = _scenario(tmp_path, APP, '[load]\nlocustfile = "lf.py"\n', "[[matrix.include]]\nid = \"closed\"\n"
                  "[[matrix.include]]\narrival_rate = 10.0\nid = \"open\"")
    scen = expand.load(f)
    assert len(scen.cells) == 1 and "open model" in scen.pruned[0].reason


def test_external_server_prunes_cells_needing_another_server():
    ext = ExternalServer("postgresql://u:pw@127.0.0.1:5/db")
    ext.max_connections, ext.ssl, ext.superuser = 40, False, False
    assert external_prune_reason(ext, Knobs(), []) is None  # defaults were not asked for: the server's own apply
    assert "max_connections is 40" in external_prune_reason(ext, Knobs(max_connections=7), [])
    assert external_prune_reason(ext, Knobs(max_connections=40), []) is None
    assert "needs connbench's own server" in external_prune_reason(ext, Knobs(auth="md5"), [])
    assert "ssl = off" in external_prune_reason(ext, Knobs(tls=True), [])
    assert "superuser" in external_prune_reason(ext, Knobs(pooling="pgbouncer-transaction"), [])
    assert "restart_postgres" in external_prune_reason(ext, Knobs(), [Fault(at=1.0, action="restart_postgres")])
    scen = expand.load(ROOT / "scenarios" / "smoke.toml")
    kept = scen.pruned_by(lambda c: "no")
    assert kept.cells == [] and [p.reason for p in kept.pruned] == ["no"]


def test_app_env_values_and_server_passwords_are_never_recorded():
    raw = {"scenario": {"name": "t"}, "app": {"settings": "a.b", "env": {"API_KEY": "s3cret"}},
           "server": {"url": "postgresql://app:hunter2@127.0.0.1:5432/db"}}
    out = redact_scenario(raw)
    assert out["app"]["env"] == {"API_KEY": "<not recorded>"} and "hunter2" not in str(out)
    assert out["server"]["url"] == "postgresql://app:***@127.0.0.1:5432/db"
    assert raw["app"]["env"]["API_KEY"] == "s3cret"  # the scenario itself untouched


def test_server_url_in_the_scenario_is_checked_like_the_flag(tmp_path, capsys):
    f = _scenario(tmp_path, '[server]\nurl = "postgresql://u:hunter2@10.1.2.3:5432/db"\n')
    assert cli_main(["run", str(f), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "--allow-remote" in err and "hunter2" not in err and not (tmp_path / "run").exists()


def test_djangos_pool_is_pruned_on_a_django_without_it(monkeypatch):
    from connbench.scenario import project
    assert project.django_version() >= (5, 1)
    monkeypatch.setattr(project, "django_version", lambda: (4, 2))
    why = project.Project().prune_reason(Knobs(pooling="django-pool"))
    assert why == "Django's native pool needs Django 5.1 or later (installed: 4.2)"
    assert project.Project().prune_reason(Knobs()) is None


def test_your_locustfile_with_several_dynos_is_pruned(tmp_path):
    (tmp_path / "lf.py").write_text("")
    f = _scenario(tmp_path, APP, '[load]\nlocustfile = "lf.py"\n', "[matrix]\ndynos = [1, 2]")
    scen = expand.load(f)
    assert [c.knobs.dynos for c in scen.cells] == [1] and "one --host" in scen.pruned[0].reason


@pytest.mark.parametrize("url, needle", [
    ("postgresql://u:pw@h1,h2/db", "one host and one port"),
    ("postgresql://u:pw@127.0.0.1:5432,5433/db", "one host and one port"),
])
def test_a_url_with_several_hosts_is_one_clean_error(url, needle):
    from connbench.errors import ScenarioError
    from connbench.services.external import url_host
    with pytest.raises(ScenarioError, match=needle):
        url_host(url)


def test_hostaddr_is_where_the_url_connects():
    from connbench.services.external import url_host
    assert url_host("postgresql://u:pw@localhost/db?hostaddr=10.0.0.5") == "10.0.0.5"


def test_the_scenario_hash_holds_no_secret():
    base = {"scenario": {"name": "t"}, "server": {"url": "postgresql://u:one@127.0.0.1/db"},
            "app": {"settings": "a.b", "wsgi": "a.w:app", "env": {"K": "v1"}}}
    other = {**base, "server": {"url": "postgresql://u:two@127.0.0.1/db"},
             "app": {**base["app"], "env": {"K": "v2"}}}
    a, b = expand.Scenario(Path("x"), None, {}, {}, [], [], [], base), expand.Scenario(Path("x"), None, {}, {}, [],
                                                                                       [], [], other)
    assert a.hash == b.hash  # the hash is of what the manifest records: no password, no env value
