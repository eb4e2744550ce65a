"""connbench on code that is not its own -- the examples/shop project through a two-cell matrix, and
the built wheel installed into a fresh virtualenv, used from outside the checkout."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import sysconfig
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from connbench.contract import ERROR_HEADER, AppConfig, Database
from connbench.services.procs import free_port, wait_port
from tests.support import ROOT, assert_no_leftovers, assert_smoke_run, cell_data, read_json, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.beside_others]


def test_the_shop_example_through_a_two_cell_matrix(run_dir):
    res = run_cli("run", str(ROOT / "examples" / "shop" / "connbench.toml"), "--run-dir", str(run_dir), "--no-charts")
    assert res.returncode == 0, res.stdout + res.stderr
    results = read_json(run_dir / "expectations.json")
    assert results and all(r["passed"] for r in results), [r for r in results if not r["passed"]]
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["project"]["settings"] == "shop.settings" and not manifest["project"]["bundled"]
    assert manifest["scenario"]["app"]["env"] == {"SHOP_DEBUG": "<not recorded>"}  # names, never values
    persistent = cell_data(run_dir, "cma-none")
    conns = persistent.csv("connections.csv")
    pg = conns[(conns.source == "postgres") & conns.worker.notna()]
    m0, m1 = persistent.phase("measure")
    late = pg[(pg.t >= m0 + (m1 - m0) / 2) & (pg.t < m1)]
    # attributed to the one dyno's two workers, one connection each: the prediction
    assert set(late.dyno.astype(int)) == {0} and set(late.worker.astype(int)) <= {1, 2}
    assert (late.groupby("t")["count"].sum() == 2).all()
    reqs = persistent.csv("requests.csv")
    assert set(reqs["endpoint"]) == {"/", "/products/7/", "/products/7/hit"} and (reqs["status"] == 200).all()
    assert reqs["db_ms"].notna().all()  # Server-Timing from connbench's middleware, put first in the shop's


SHOP = ROOT / "examples" / "shop"
UNTOUCHED = ("/retired/", "/old-offers/", "/broken/", "/no-such-page/")  # 404, a 404 redirected, a bug, unrouted


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _answers(port: int, host: str) -> dict[str, tuple]:
    opener = urllib.request.build_opener(_NoRedirect)
    out = {}
    for path in UNTOUCHED:
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": host})
        try:
            with opener.open(req, timeout=10) as r:
                out[path] = (r.status, r.read(), r.headers.get("Location"), r.headers.get(ERROR_HEADER))
        except urllib.error.HTTPError as e:
            out[path] = (e.code, e.read(), e.headers.get("Location"), e.headers.get(ERROR_HEADER))
    return out


def _serve_shop(log: Path, env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    """The shop under real gunicorn, as a user would run it: 1 sync worker on a loopback port."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "shop.wsgi:application", "--bind", f"127.0.0.1:{port}",
                             "--workers", "1"], cwd=SHOP, env={**os.environ, **env, "PYTHONPATH": f"{SHOP}:{ROOT}"},
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    wait_port(port, 30, proc, "the shop's gunicorn")
    return proc, port


def test_the_shops_404_its_redirect_on_404_and_its_500_are_its_own_under_connbench(tmp_path):
    """Status, body and Location identical with connbench's shim and without it; the shim adds headers only."""
    app = AppConfig(db=Database("127.0.0.1", free_port(), "shop", "app", "unused"), conn_max_age=0,
                    health_checks=False, pooling="direct")
    runs = {}
    for mode, env, host in (("plain", {"DJANGO_SETTINGS_MODULE": "shop.settings"}, "shop.example.com"),
                            ("shim", {"DJANGO_SETTINGS_MODULE": "connbench.target_app.byo_settings",
                                      "CONNBENCH_USER_SETTINGS": "shop.settings", **app.to_env()}, "127.0.0.1")):
        proc, port = _serve_shop(tmp_path / f"{mode}.log", env)
        try:
            runs[mode] = _answers(port, host)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    plain, shim = runs["plain"], runs["shim"]
    assert [plain[p][0] for p in UNTOUCHED] == [404, 301, 500, 404]
    assert plain["/old-offers/"][2] == "/"
    for path in UNTOUCHED:
        assert shim[path][:3] == plain[path][:3], path  # status, body, Location
    assert shim["/broken/"][3] == "app_exception" and plain["/broken/"][3] is None
    assert all(shim[p][3] is None for p in ("/retired/", "/old-offers/", "/no-such-page/"))
    log = (tmp_path / "shim.log").read_text()
    assert "Traceback (most recent call last)" in log and "RuntimeError: the shop's own bug" in log
    assert "RuntimeError" not in (tmp_path / "plain.log").read_text()  # DEBUG = False: Django logs it nowhere


BROKEN = (SHOP / "connbench.toml").read_text().split("[[expect]]")[0].replace('path = "."', f'path = "{SHOP}"').replace(
    'env = { SHOP_DEBUG = "0" }', 'env = { SHOP_DEBUG = "0", SHOP_SECRET_KEY = "" }').replace(
    'conn_max_age = [0, "none"]', 'conn_max_age = [0]')


def test_broken_settings_fail_the_cell_at_once_with_the_real_exception(run_factory):
    run = run_factory(BROKEN, "--no-report", name="shop-broken", expect=1)
    (doc,) = [c for c in run.manifest["cells"]]
    assert doc["status"] == "failed"
    err = doc["error"]
    assert "ImproperlyConfigured: The SECRET_KEY setting must not be empty." in err, err
    assert "HTTP 500, twice" in err and "Traceback" not in err.split("\n")[0]
    cell = run.cell(doc["cell_id"])
    events = cell.csv("events.csv")
    begin = events[events.kind == "phase_begin:start_services"].t.iloc[0]
    stop = events[events.kind == "phase_begin:stop"].t.iloc[0]
    assert stop - begin < 5, f"the cell took {stop - begin:.1f} s to fail"
    (log,) = Path(cell.root).rglob("gunicorn-d0.log")
    assert "Traceback (most recent call last)" in log.read_text() and "SECRET_KEY" in log.read_text()


YOUR_LOCUSTFILE = f"""
[scenario]
name = "shop-own-locustfile"
[app]
settings = "shop.settings"
wsgi = "shop.wsgi:application"
path = "{ROOT / "examples" / "shop"}"
fixtures = ["catalog"]
health = "/up"
[load]
locustfile = "{ROOT / "examples" / "shop" / "locustfile.py"}"
[defaults]
workers = 2
conn_max_age = "none"
users = 3
warmup = 0.5
duration = 2
cooldown = 0.5
calibrate_n = 0
"""


def test_your_own_locustfile_is_run_and_every_request_logged(tmp_path, run_dir):
    scenario = tmp_path / "own.toml"
    scenario.write_text(YOUR_LOCUSTFILE)
    res = run_cli("run", str(scenario), "--run-dir", str(run_dir), "--no-report")
    assert res.returncode == 0, res.stdout + res.stderr
    cell = cell_data(run_dir, "default")
    reqs = cell.csv("requests.csv")
    assert set(reqs["endpoint"]) == {"/", "/products/[id]/"} and (reqs["status"] == 200).all()
    # Locust's own final count (its JSON; the CSV is written every few seconds and may lag the end)
    counted = sum(e["num_requests"] for e in read_json(Path(cell.root, "locust", "stats.json")))
    assert len(reqs) == counted > 0  # the request log saw every request Locust counted


def _fresh_venv(tmp: Path) -> tuple[Path, Path]:
    """A new virtualenv with the built wheel installed (no checkout on its path). Its dependencies, the pinned
    ones `make` installed, are shared through a path entry, so the test stays minutes shorter; what it tests
    is the wheel: its package data, entry points and paths."""
    wheels = tmp / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(ROOT)], check=True, capture_output=True, timeout=300)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next(wheels.glob("connbench-*.whl"))
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True,
                   capture_output=True, timeout=300)
    return venv, wheel


def _assert_one_import_name(wheel: Path) -> None:
    """Installed, connbench claims the import name connbench and nothing else: the checkout's analysis/,
    target_app/ and locustfiles/ are inside it, with their package data."""
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        info = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
        assert whl.read(info).decode().split() == ["connbench"]
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"connbench"}, tops
    for needed in ("connbench/analysis/report.py", "connbench/analysis/charts/common.py",
                   "connbench/analysis/templates/report.html.j2", "connbench/target_app/settings.py",
                   "connbench/target_app/bench/migrations/0001_initial.py", "connbench/locustfiles/app.py",
                   "connbench/locustfiles/requestlog.py", "connbench/scenario/starter.toml",
                   "connbench/scenarios/smoke.toml", "connbench/scenarios/quick.toml"):
        assert needed in names, needed


def test_the_wheel_works_outside_the_checkout(tmp_path):
    venv, wheel = _fresh_venv(tmp_path)
    _assert_one_import_name(wheel)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import connbench.locustfiles, connbench.target_app; "
                            "print(connbench.__file__, connbench.locustfiles.__file__, connbench.target_app.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True).stdout
    assert str(ROOT) not in where and str(venv) in where  # the wheel's copy, not the checkout's
    for bare in ("analysis", "target_app", "locustfiles"):  # the names a user's project may well have
        res = subprocess.run([str(venv / "bin" / "python"), "-c", f"import {bare}"], cwd=work, env=env,
                             capture_output=True, text=True)
        assert res.returncode == 1 and "ModuleNotFoundError" in res.stderr, (bare, res.stderr)
    cb = str(venv / "bin" / "connbench")
    res = subprocess.run([cb, "init", "."], cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and (work / "connbench.toml").is_file(), res.stderr
    res = subprocess.run([cb, "validate", "connbench.toml"], cwd=work, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    # a one-cell scenario shipped in the wheel, by name: PostgreSQL, gunicorn, Locust and the report
    res = subprocess.run([cb, "run", "smoke", "--run-dir", "run"], cwd=work, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert_smoke_run(work / "run", res.stdout)
    assert_no_leftovers(work / "run")


NOTES_VIEWS = '''from django.http import HttpResponse, JsonResponse

from notes.models import Note


def index(request):
    return HttpResponse(f"{Note.objects.count()} notes")


def one(request, pk):
    return JsonResponse({"id": pk, "exists": Note.objects.filter(pk=pk).exists()})
'''


def test_init_in_a_new_django_project_writes_a_scenario_that_runs_unedited(run_factory, tmp_path):
    """A project that was never in this repository: django-admin's startproject, one model, one view."""
    site = tmp_path / "site"
    site.mkdir()
    django_admin = [sys.executable, "-m", "django"]
    subprocess.run([*django_admin, "startproject", "mysite", str(site)], check=True, timeout=60)
    subprocess.run([sys.executable, "manage.py", "startapp", "notes"], cwd=site, check=True, timeout=60)
    (site / "notes" / "models.py").write_text("from django.db import models\n\n\nclass Note(models.Model):\n"
                                               "    text = models.CharField(max_length=200)\n")
    (site / "notes" / "views.py").write_text(NOTES_VIEWS)
    settings = site / "mysite" / "settings.py"
    settings.write_text(re.sub(r"""(["']django.contrib.staticfiles["'],)""", r"\1\n    'notes',",
                               settings.read_text()))
    urls = site / "mysite" / "urls.py"
    urls.write_text(re.sub(r"""(path\(["']admin/["'], admin.site.urls\),)""",
                           r"\1\n    path('', views.index),\n    path('notes/<int:pk>/', views.one),",
                           urls.read_text()).replace("from django.urls import path",
                                                     "from django.urls import path\nfrom notes import views"))
    subprocess.run([sys.executable, "manage.py", "makemigrations", "notes"], cwd=site, check=True, timeout=60,
                   capture_output=True)  # what the project's developer would have committed

    res = run_cli("init", cwd=site, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    text = (site / "connbench.toml").read_text()
    assert 'settings = "mysite.settings"' in text and 'wsgi = "mysite.wsgi:application"' in text
    assert 'asgi = "mysite.asgi:application"' in text
    assert '"/" = 1' in text and 'health = "/"' in text and "/admin/: answers 302, a redirect to" in text
    assert "/notes/<int:pk>/: takes parameters" in text
    run = run_factory(str(site / "connbench.toml"), "--no-report", name="init-startproject")
    cells = run.manifest["cells"]
    assert [c["status"] for c in cells] == ["completed", "completed"], cells
    reqs = run.cell(cells[0]["cell_id"]).csv("requests.csv")
    assert "/" in set(reqs["endpoint"]) and (reqs["status"] == 200).all()
