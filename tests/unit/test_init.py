"""`connbench init` writes a starter scenario that loads as written; `python -m connbench` works."""

from __future__ import annotations

import subprocess
import sys

from connbench.cli import main as cli_main
from connbench.scenario import expand
from connbench.scenario.starter import STARTER, STARTER_NAME


def test_init_writes_a_valid_starter_and_never_overwrites(tmp_path, capsys):
    assert cli_main(["init", str(tmp_path / "new")]) == 0
    path = tmp_path / "new" / STARTER_NAME
    scen = expand.load(path)
    assert len(scen.cells) == 3 * 4 and scen.meta.repeats == 4  # (django-pool, none) pruned, with its reason
    assert scen.pruned and "Django's pool requires CONN_MAX_AGE=0" in scen.pruned[0].reason
    assert scen.raw["expect"]
    path.write_text(STARTER + "# mine\n")
    assert cli_main(["init", str(tmp_path / "new")]) == 2  # exists: one clean error, the file untouched
    assert "already exists" in capsys.readouterr().err and path.read_text().endswith("# mine\n")
    (tmp_path / "file").write_text("x")
    assert cli_main(["init", str(tmp_path / "file")]) == 2 and (tmp_path / "file").read_text() == "x"


def test_python_dash_m_connbench(tmp_path):
    res = subprocess.run([sys.executable, "-m", "connbench", "init", str(tmp_path)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0 and (tmp_path / STARTER_NAME).is_file(), res.stderr
    res = subprocess.run([sys.executable, "-m", "connbench", "validate", str(tmp_path / STARTER_NAME)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "ok, 12 cells" in " ".join((res.stderr + res.stdout).split())


def test_a_detected_django_project_renders_a_scenario_that_loads(tmp_path):
    from connbench.run.init_project import Detected, _dotted, render, settings_module

    (tmp_path / "manage.py").write_text("import os\n"
                                        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'mysite.settings')\n")
    assert settings_module(tmp_path) == "mysite.settings"
    assert _dotted("mysite.wsgi.application") == "mysite.wsgi:application" and _dotted(None) is None
    (tmp_path / "mysite").mkdir()
    for name in ("__init__.py", "settings.py", "wsgi.py", "asgi.py"):
        (tmp_path / "mysite" / name).write_text("")
    found = Detected(tmp_path, "mysite.settings", "mysite.wsgi:application", "mysite.asgi:application",
                     paths=["/", '/a"quoted"page/'], left=[("/items/<int:pk>/", "takes parameters")], health="/",
                     unknown=["something init could not know"])
    text = render(found)
    (tmp_path / STARTER_NAME).write_text(text)
    scen = expand.load(tmp_path / STARTER_NAME)
    assert scen.project.user_settings == "mysite.settings" and scen.project.path == str(tmp_path)
    assert scen.project.load_paths == {"/": 1, '/a"quoted"page/': 1} and len(scen.cells) == 2
    assert "#   /items/<int:pk>/: takes parameters" in text and "# Could not know: something" in text
