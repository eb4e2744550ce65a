"""Child processes the harness owns: each in its own process group, recorded on disk.

Every process is started with start_new_session=True so one killpg stops it and all of its
children (gunicorn workers, postgres backends, locust's forks). The groups are also written
to the run's pids.json, so a harness killed with SIGKILL can be cleaned up by the next
`--resume` (see cleanup_recorded).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import psutil

from connbench.errors import ComponentError
from connbench.results import write_json_atomic, write_private
from connbench.services.reachable import UnreachableError, ensure_cache, user_can

SERVICE_USER = "connbench"
T = TypeVar("T")


class ServiceError(ComponentError, RuntimeError):
    """A real component failed to start or misbehaved; the message says which and where its log is."""


@dataclass(frozen=True)
class RunAs:
    uid: int
    gid: int
    name: str


def service_user() -> RunAs | None:
    """PostgreSQL and PgBouncer refuse to run as root: as root, use an unprivileged system user."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        cmd = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True)
            why = res.stderr.strip()[-300:] if res.returncode else ""
        except OSError as e:
            why = str(e)
        if why:
            raise ServiceError(f"as root, PostgreSQL and PgBouncer run as the unprivileged user '{SERVICE_USER}', "
                               f"which could not be created ({why}); create it with `{' '.join(cmd)}`, "
                               "or run connbench as a user that is not root") from None
        pw = pwd.getpwnam(SERVICE_USER)
    return RunAs(pw.pw_uid, pw.pw_gid, SERVICE_USER)


def chown_tree(path: Path, who: RunAs | None) -> None:
    if who is None:
        return
    for root, dirs, files in os.walk(path):
        os.chown(root, who.uid, who.gid)
        for name in files + dirs:
            os.chown(os.path.join(root, name), who.uid, who.gid, follow_symlinks=False)


def can_reach(path: Path, who: RunAs | None) -> bool:
    """Can `who` get into the (existing) directory path? We create and chown what is below it."""
    return who is None or user_can(who, "-x", str(path))


OWNER_MARK = ".connbench-owned"
RUN_ENV = "CONNBENCH_RUN"  # set in every child's environment: which run directory it belongs to


def _mark(directory: Path, run_root: Path) -> None:
    (directory / OWNER_MARK).write_text(json.dumps({"run": str(Path(run_root).resolve())}) + "\n")


def _marked_for(directory: Path, run_root: Path) -> bool:
    """Did the harness create this directory for this run? Only such directories are ever deleted."""
    try:
        mark = json.loads((directory / OWNER_MARK).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(mark, dict) and mark.get("run") == str(Path(run_root).resolve())


def service_dir(run_root: Path, name: str, who: RunAs | None) -> Path:
    """A directory for a service's data that its unprivileged user can reach, marked as the harness's.

    Under the run directory when the user can get there; otherwise (the run lives under a
    0700 directory such as /root or pytest's tmp) a directory in connbench's cache (/var/tmp/connbench),
    linked from the run directory so that cleanup finds it.
    """
    run_root = Path(run_root).resolve()  # a relative run directory: the user must reach its absolute path
    link = run_root / name
    if link.is_symlink():
        target = link.resolve()
        if not _marked_for(target, run_root):
            raise ServiceError(f"{link} is a link to {target}, which this run did not create; move it away")
        return target
    run_root.mkdir(parents=True, exist_ok=True)
    if link.exists() and not _marked_for(link, run_root):
        raise ServiceError(f"{link} exists and was not created by this run; move it away")
    if can_reach(run_root, who):
        link.mkdir(parents=True, exist_ok=True)
        _mark(link, run_root)
        if who is not None:
            os.chown(link, who.uid, who.gid)
        return link
    try:
        base = ensure_cache(who)
    except UnreachableError as e:
        raise ServiceError(str(e)) from None
    target = Path(tempfile.mkdtemp(prefix=f"{run_root.name}-{name}-", dir=base))
    os.chmod(target, 0o755)
    _mark(target, run_root)
    if who is not None:
        os.chown(target, who.uid, who.gid)
    link.symlink_to(target)
    return target


def remove_service_dir(run_root: Path, name: str) -> None:
    """Delete a service directory this run created; never follow a link to anything else."""
    run_root = Path(run_root).resolve()  # a relative run directory: the user must reach its absolute path
    link = run_root / name
    if link.is_symlink():
        target = Path(os.path.realpath(link))
        if target.is_dir() and not target.is_symlink() and _marked_for(target, run_root):
            shutil.rmtree(target, ignore_errors=True)
            link.unlink()
        elif not target.exists():
            link.unlink()  # dangling: what it pointed at is gone already
    elif link.is_dir() and _marked_for(link, run_root):
        shutil.rmtree(link, ignore_errors=True)  # rmtree removes links inside, never their targets


PRIVATE_ENV = "CONNBENCH_PRIVATE_ROOT"


def private_root(who: RunAs | None) -> str:
    """Where private directories are made: $CONNBENCH_PRIVATE_ROOT, else the system's tmp, else (a tmp the
    service user cannot reach, e.g. TMPDIR under /root) connbench's cache."""
    chosen = os.environ.get(PRIVATE_ENV) or None
    if chosen:
        if who is not None and not can_reach(Path(chosen), who):  # None (not root): ourselves, who can
            raise ServiceError(f"{PRIVATE_ENV}={chosen[:200]}: the service user '{who.name}' cannot get into it; "
                               "choose a directory it can reach (the default is the system's tmp)")
        return chosen
    tmp = tempfile.gettempdir()
    if can_reach(Path(tmp), who):
        return tmp
    try:
        return str(ensure_cache(who))
    except UnreachableError as e:
        raise ServiceError(str(e)) from None


class PrivateDir:
    """Credentials the children need, kept outside the run directory (which is meant to be shared).

    Owned by the service user (PgBouncer reads its auth_file from here) and 0700; removed when the
    run ends. CONNBENCH_PRIVATE_ROOT chooses where it is created (tests use it to watch).
    """

    def __init__(self, who: RunAs | None):
        root = private_root(who)
        self.path = Path(tempfile.mkdtemp(prefix="connbench-private-", dir=root))
        os.chmod(self.path, 0o700)
        self.who = who
        if who is not None:
            os.chown(self.path, who.uid, who.gid)

    def write(self, name: str, text: str) -> Path:
        path = self.path / name
        write_private(path, text)
        if self.who is not None:
            os.chown(path, self.who.uid, self.who.gid)
        return path

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], T], timeout: float, interval: float = 0.05) -> T | None:
    """Poll check() until it returns something truthy, or None at the deadline.

    The one wait-for loop of the harness: check() raises to give up early (a process died).
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() >= deadline:
            return result or None
        time.sleep(interval)


def exited(proc: subprocess.Popen[bytes] | None, what: str) -> None:
    """Raise if a process we are waiting on has already exited."""
    if proc is not None and proc.poll() is not None:
        raise ServiceError(f"{what} exited with code {proc.returncode}")


def wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None, what: str = "",
              host: str = "127.0.0.1") -> None:
    def listening() -> bool:
        exited(proc, f"{what}, before listening on port {port},")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    if not wait_until(listening, timeout):
        raise ServiceError(f"{what} did not listen on {host}:{port} within {timeout:.0f} s")


class Supervisor:
    """Starts and stops every child process of a run; nothing it started outlives it."""

    def __init__(self, pids_file: Path | None = None, private: PrivateDir | None = None):
        self.pids_file = pids_file
        self.run_mark = str(pids_file.parent.resolve()) if pids_file else ""
        self.private = private
        self._procs: dict[int, tuple[str, subprocess.Popen[bytes], BinaryIO]] = {}
        self._lock = threading.Lock()

    def spawn(
        self,
        name: str,
        cmd: list[str],
        *,
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        user: RunAs | None = None,
    ) -> subprocess.Popen[bytes]:
        log.parent.mkdir(parents=True, exist_ok=True)
        fh = open(log, "ab")
        kwargs: dict[str, Any] = {}
        if user is not None:
            kwargs.update(user=user.uid, group=user.gid, extra_groups=[])
        env = {**(os.environ if env is None else env), RUN_ENV: self.run_mark}
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            **kwargs,
        )
        with self._lock:
            self._procs[proc.pid] = (name, proc, fh)
            self._record()
        return proc

    def wait(self, proc: subprocess.Popen[bytes], timeout: float) -> int | None:
        """The exit code once `proc` exits, or None at the deadline.

        Reaps with os.waitpid itself, never through Popen.wait: a Ctrl-C that lands inside Popen.wait
        can leave Popen's internal lock held, and every later wait on that process then times out
        (the first CI rehearsal of the Ctrl-C test ran past 60 s that way).
        """
        deadline = time.monotonic() + timeout
        while proc.returncode is None:
            try:
                pid, status = os.waitpid(proc.pid, os.WNOHANG)
            except ChildProcessError:  # reaped already (by Popen itself)
                break
            if pid == proc.pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)
        return proc.returncode

    def send(self, proc: subprocess.Popen[bytes], sig: int) -> None:
        """Signal a live process's group without waiting: several stop at once, then stop() each."""
        if self.wait(proc, 0) is None:
            _killpg(proc.pid, sig)

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Signal the process group, wait, then SIGKILL whatever is left of the group."""
        pgid = proc.pid
        reaped = proc.returncode is not None  # reaped earlier: its pid may be someone else's by now
        if self.wait(proc, 0) is None:
            _killpg(pgid, sig)
            self.wait(proc, timeout)
        # Children that outlived their leader keep its group id, and the kernel keeps that id allocated
        # while the group has members; a live process with the leader's pid after a reap is not ours.
        if not reaped or (not psutil.pid_exists(pgid) and _group_members(pgid)):
            _killpg(pgid, signal.SIGKILL)
        self.wait(proc, 5)  # reap the leader first: an unreaped one would count as a member below
        _wait_group_gone(pgid, 5.0)
        with self._lock:
            entry = self._procs.pop(proc.pid, None)
            if entry:
                entry[2].close()
            self._record()
        return proc.returncode

    def stop_all(self) -> None:
        with self._lock:
            procs = [p for _, p, _ in self._procs.values()]
        for proc in reversed(procs):
            self.stop(proc, timeout=5.0)
        # A child a Ctrl-C caught between Popen and its registration above is not in _procs: its mark is
        for pgid in _marked_groups(self.run_mark) if self.run_mark else ():
            _killpg(pgid, signal.SIGKILL)
            _wait_group_gone(pgid, 5.0)

    def running(self) -> list[tuple[str, int]]:
        with self._lock:
            return [(n, p.pid) for n, p, _ in self._procs.values() if p.poll() is None]

    def _record(self) -> None:
        if self.pids_file is None:
            return
        entries = []
        for name, proc, _ in self._procs.values():
            try:
                created = psutil.Process(proc.pid).create_time()
            except psutil.Error:
                continue
            entries.append({"name": name, "pgid": proc.pid, "create_time": created})
        write_json_atomic(self.pids_file, {"run": self.run_mark, "processes": entries,
                                           "private_dir": str(self.private.path) if self.private else None})


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_members(pgid: int) -> list[int]:
    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.info["pid"]) == pgid:
                out.append(p.info["pid"])
        except (ProcessLookupError, PermissionError):
            continue
    return out


def _running(pid: int) -> bool:
    try:
        # a zombie runs nothing: it waits to be reaped
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _wait_group_gone(pgid: int, timeout: float) -> None:
    wait_until(lambda: not any(_running(p) for p in _group_members(pgid)), timeout)


def _marked_groups(run_mark: str) -> dict[int, str]:
    """Process groups led by a process carrying this run's mark (RUN_ENV) in its environment; never our own."""
    mine = os.getpgrp()
    out: dict[int, str] = {}
    for p in psutil.process_iter(["pid", "name"]):
        try:
            if p.info["pid"] == os.getpid() or p.environ().get(RUN_ENV) != run_mark:
                continue
            pgid = os.getpgid(p.info["pid"])
        except (psutil.Error, OSError):
            continue
        if pgid > 1 and pgid != mine:
            out.setdefault(pgid, str(p.info["name"])[:40])
    return out
