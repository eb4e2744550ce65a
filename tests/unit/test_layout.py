"""One import name: nothing imports the checkout's analysis/, target_app/ or locustfiles/ by its bare name
(installed, only connbench.analysis etc. exist), nor names one in a dotted path Django or gunicorn loads."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.support import ROOT

BARE = {"analysis", "target_app", "locustfiles", "requestlog", "masterlog"}
DOTTED = re.compile(r"""["'](?:analysis|target_app|locustfiles)\.[a-z_]""")
FOLDERS = ("connbench", "analysis", "target_app", "locustfiles", "tests", "scripts", "examples")


def _sources() -> list[Path]:
    out = []
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT)
            if not any(p.is_symlink() for p in [ROOT / rel.parents[i] for i in range(len(rel.parts) - 1)]):
                out.append(path)  # each file once: connbench/analysis is a link to analysis/
    return out


def _bare_imports(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in BARE]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [node.module] if node.module.split(".")[0] in BARE else []
    return found


def test_nothing_imports_a_subpackage_by_its_bare_name():
    sources = _sources()
    assert len(sources) > 100  # the walk found the tree
    bad = {str(p.relative_to(ROOT)): names for p in sources if (names := _bare_imports(ast.parse(p.read_text())))}
    assert not bad


def test_no_dotted_path_names_a_bare_subpackage():
    mine = Path(__file__).resolve()  # its own examples below
    bad = [f"{p.relative_to(ROOT)}:{n}" for p in _sources() if p.resolve() != mine
           for n, line in enumerate(p.read_text().splitlines(), 1) if DOTTED.search(line)]
    assert not bad


def test_the_checker_sees_a_bare_import():
    assert _bare_imports(ast.parse("import analysis.report\nfrom target_app import views")) == [
        "analysis.report", "target_app"]
    assert DOTTED.search('MIDDLEWARE = ["target_app.middleware.ErrorClassMiddleware"]')


def test_the_checkout_links_each_subpackage_into_connbench():
    for name in ("analysis", "target_app", "locustfiles"):
        link = ROOT / "connbench" / name
        assert link.is_symlink() and link.resolve() == (ROOT / name).resolve()


def test_shipped_files_are_found_by_the_package_itself(tmp_path, monkeypatch):
    """Paths the package computes from its own files (moved modules once pointed into a missing folder)."""
    from connbench.scenario.expand import SHIPPED, resolve
    from connbench.scenario.starter import STARTER_FILE
    from connbench.services.django_app import package_root
    from connbench.services.locust import LOCUSTFILE, LOGONLY

    monkeypatch.chdir(tmp_path)  # a user's directory: no scenarios/ here
    assert resolve("smoke") == SHIPPED / "smoke.toml" and resolve("smoke").is_file()
    assert STARTER_FILE.is_file()
    assert (package_root() / LOCUSTFILE).is_file() and (package_root() / LOGONLY).is_file()
    assert (package_root() / "connbench" / "analysis" / "templates" / "report.html.j2").is_file()
