"""Issue 17: `connbench init` writes a starter scenario that loads as written; `python -m connbench` works."""

from __future__ import annotations

import subprocess
import sys

from connbench import expand
from connbench.cli import main as cli_main
from connbench.starter import STARTER, STARTER_NAME


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
