"""`connbench worker`: a Locust worker for a connbench master, on this machine or another.

Each cell of a run starts a new master at the scenario's [generator] bind:port; this joins it, runs the
cell's load with the master's settings (Locust hands them over when the test starts), sends its rows and
CPU to the master, and joins the next cell's master, until Ctrl-C (or after one test with --once).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from connbench.contract import GENERATOR_ENV
from connbench.errors import ScenarioError
from connbench.loopback import require_local
from connbench.scenario.expand import Scenario
from connbench.scenario.model import GeneratorSpec
from connbench.services import locust
from connbench.services.django_app import package_root
from connbench.services.procs import Supervisor, free_port

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")


class WorkerError(ScenarioError):
    """Bad arguments: a message naming the flag and what is allowed (exit 2, as a scenario error)."""


def parse_master(value: str, allow_remote: bool) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise WorkerError(f"--master {value!r}: expected HOST:PORT, e.g. 127.0.0.1:5557 (the scenario's "
                          "[generator] bind and port)")
    require_local("--master", host, allow_remote, "--allow-remote", "generate load for another machine")
    return host, int(port)


def generator_for(scen: Scenario, workers: int | None, locust_processes: int) -> GeneratorSpec:
    """The scenario's [generator] with --generator-workers (or --locust-processes: N local workers) applied,
    its address checked; a ScenarioError (exit 2) says what is wrong before anything starts."""
    if locust_processes > 1 and (workers is not None or scen.generator.workers):
        raise ScenarioError("--locust-processes and [generator] workers (or --generator-workers): choose one")
    workers = workers if workers is not None else (locust_processes if locust_processes > 1 else None)
    gen = scen.generator
    if workers is not None:
        try:
            gen = gen.with_workers(workers)
        except ValueError as e:
            raise ScenarioError(f"--generator-workers {workers}: {e}") from None
    if gen.workers:
        try:  # an address this machine does not have fails here, not in every cell
            free_port(gen.bind)
        except OSError as e:
            raise ScenarioError(f"{scen.path}: generator.bind {gen.bind}: cannot listen there ({e.strerror}); "
                                "give an address of this machine") from None
    return gen


def dies_with_parent(cmd: list[str]) -> list[str]:
    """cmd run so that it gets SIGTERM when this process dies, even of SIGKILL (PR_SET_PDEATHSIG, kept across
    exec): without it, a killed `connbench worker` leaves its Locust waiting up to 5 minutes for a master."""
    setpriv = shutil.which("setpriv") if sys.platform == "linux" else None  # util-linux, on every Debian
    return [setpriv, "--pdeathsig", "TERM", "--", *cmd] if setpriv else cmd


def _hangup(*_a: object) -> None:
    raise KeyboardInterrupt


def run(master: str, name: str | None, locustfile: str | None, once: bool, allow_remote: bool,
        say: Callable[[str], None], log_dir: Path) -> int:
    host, port = parse_master(master, allow_remote)
    if name is not None and not NAME.fullmatch(name):
        raise WorkerError(f"--name {name!r}: 1-40 letters, digits, '_', '.' or '-', starting with a letter or digit")
    if locustfile is not None and not Path(locustfile).is_file():
        raise WorkerError(f"--locustfile {locustfile!r}: no such file")
    root = package_root()
    name = name or f"{os.uname().nodename.split('.')[0]}-{os.getpid()}"
    env = {**os.environ, GENERATOR_ENV: name, "PYTHONPATH": str(root)}
    env.pop("CONNBENCH_LOAD", None)  # the master's settings, never this machine's
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WorkerError(f"--reports: cannot write its logs to {log_dir} ({e.strerror})") from None
    signal.signal(signal.SIGHUP, _hangup)  # a closed terminal stops it as Ctrl-C does: its Locust with it
    sup = Supervisor()
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    cmd = dies_with_parent(locust.worker_command(address, str(Path(locustfile).absolute()) if locustfile else None,
                                                 root))
    tests = 0
    try:
        while True:
            log = log_dir / f"worker-{name}-{tests + 1}.log"
            say(f"worker {name}: joining the master at {address} (log: {log})")
            proc = sup.spawn("locust-worker", cmd, log=log, env=env, cwd=root)
            while (rc := sup.wait(proc, timeout=3600)) is None:
                pass
            sup.stop(proc, timeout=0)
            tests += 1
            say(f"worker {name}: test {tests} ended (exit {rc})")
            if once:
                return 0 if rc == 0 else 1
            time.sleep(1)  # the next cell's master starts in a moment
    finally:
        sup.stop_all()
