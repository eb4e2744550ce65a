"""`connbench probe`: the Heroku article's "hit it until the count stops rising", automated.

After each step of load the probe runs the article's exact query (connbench.sampler.ARTICLE_QUERY)
plus an attributed breakdown, and stops once the count has not risen for K steps. Two ways to
hit: `sequential` (one request at a time, like reloading a page: what the article literally
says) and `ramp` (concurrency raised step by step). They can disagree, and the probe says why.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable, Mapping
from typing import Literal
from urllib.parse import urlsplit

from connbench.errors import UsageError
from connbench.probe import rules as plateau
from connbench.results import ProbeLeak, ProbeMode, ProbePlateau, ProbeStep
from connbench.results.docs import ProbeStop
from connbench.sampler.readers import DbReader, parse_appname
from connbench.scenario.knobs import ProbeSettings

ModeName = Literal["sequential", "ramp"]


class ProbeError(UsageError):
    """The probe cannot run as asked; the message says what to change."""


class Hitter:
    """Sends requests over loopback with plain keep-alive HTTP clients (one per virtual user)."""

    def __init__(self, targets: list[str], path: str):
        self.targets = [urlsplit(t) for t in targets]
        self.path = path

    def _conn(self, i: int) -> http.client.HTTPConnection:
        u = self.targets[i % len(self.targets)]
        if not u.hostname:  # _check_remote refuses such a --target; a started app's URL always has one
            raise ProbeError(f"{u.geturl()!r} names no host")
        return http.client.HTTPConnection(u.hostname, u.port or 80, timeout=30)

    def _one(self, conn: http.client.HTTPConnection) -> bool:
        try:
            conn.request("GET", self.path)
            resp = conn.getresponse()
            resp.read()
            return resp.status == 200
        except (OSError, http.client.HTTPException):
            conn.close()
            return False

    def sequential(self, n: int, offset: int) -> tuple[int, int]:
        """n requests one after the other, round-robin over dynos (a fresh connection each,
        like a browser reload that does not reuse the socket)."""
        errors = 0
        for i in range(n):
            conn = self._conn(offset + i)
            errors += not self._one(conn)
            conn.close()
        return n, errors

    def concurrent(self, clients: int, seconds: float) -> tuple[int, int]:
        done, errors, lock = [0], [0], threading.Lock()
        deadline = time.monotonic() + seconds

        def user(i: int) -> None:
            conn, n, e = self._conn(i), 0, 0
            while time.monotonic() < deadline:
                e += not self._one(conn)
                n += 1
            conn.close()
            with lock:
                done[0] += n
                errors[0] += e

        threads = [threading.Thread(target=user, args=(i,), daemon=True) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 35)
        return done[0], errors[0]


class Counter:
    """The article's query after each step, plus a background peak while the step runs."""

    def __init__(self, db: DbReader):
        self.db = db
        self.lock = threading.Lock()
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sessions: int | None = None  # pg_stat_database.sessions at the last sample (None before PG 14)

    def sample(self) -> tuple[int, dict[str, int], dict[str, int]]:
        with self.lock:
            groups, article, db, _ssl = self.db.sample()
            self.sessions = db[1]
        by_dyno: dict[str, int] = {}
        by_worker: dict[str, int] = {}
        for appname, _state, count in groups:
            dyno, worker = parse_appname(appname)
            if dyno:
                by_dyno[dyno] = by_dyno.get(dyno, 0) + count
                by_worker[f"d{dyno}:w{worker}"] = by_worker.get(f"d{dyno}:w{worker}", 0) + count
        return article, by_dyno, by_worker

    def watch(self) -> None:
        self._peak, self._stop = 0, threading.Event()

        def loop() -> None:
            while not self._stop.wait(0.05):
                try:
                    self._peak = max(self._peak, self.sample()[0])
                except Exception:  # noqa: BLE001 - a missed peak sample is not fatal
                    pass

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def peak(self) -> int:
        self._stop.set()
        if self._thread:
            self._thread.join(2)
        return self._peak


def run_mode(mode: ModeName, s: ProbeSettings, hitter: Hitter, counter: Counter,
             progress: Callable[[str, ProbeStep], None] | None = None, limit: int | None = None,
             bound: int | None = None) -> ProbeMode:
    """Steps of load until the count settles, a leak shows, the count nears `limit` (the app's slots: stop
    before the server is exhausted), or the step/time budget runs out."""
    steps: list[ProbeStep] = []
    total = 0
    t_end = time.monotonic() + s.max_seconds
    baseline = counter.sample()[0]
    stop: ProbeStop
    for i in range(s.max_steps):
        sessions_before = counter.sessions
        counter.watch()
        if mode == "sequential":
            load = s.step_requests
            n, errors = hitter.sequential(load, total)
        else:
            load = s.ramp_start + i * s.ramp_increment
            n, errors = hitter.concurrent(load, s.step_seconds)
        peak = counter.peak()
        time.sleep(s.settle_seconds)
        total += n
        count, by_dyno, by_worker = counter.sample()
        after = counter.sessions
        opened = None if sessions_before is None or after is None else after - sessions_before
        steps.append(ProbeStep(step=i, load=load, requests=n, requests_total=total, errors=errors, count=count,
                               opened=opened, peak_during=max(peak, count), by_dyno=by_dyno,
                               by_worker=by_worker))
        if progress:
            progress(mode, steps[-1])
        counts = [st.count for st in steps]
        leak = plateau.leak([st.requests_total for st in steps], counts,
                            [1 if mode == "sequential" else st.load for st in steps], s.leak_steps,
                            [st.opened for st in steps], [st.errors for st in steps], limit, bound)
        if leak:
            stop = "leak"
            break
        if limit is not None and count >= limit - 1:
            stop = "server"
            break
        if plateau.should_stop(counts, s.stable_steps):
            stop = "settled"
            break
        if time.monotonic() > t_end:
            stop = "time"
            break
    else:
        stop = "steps"
    result = plateau.detect([st.count for st in steps], s.stable_steps)
    at = steps[result.reached_at_step] if result.reached_at_step is not None else None
    return ProbeMode(mode=mode, baseline_count=baseline, steps=steps, plateau=ProbePlateau(**result.as_dict()),
                     requests_to_plateau=at.requests_total if at else 0,
                     per_dyno_at_plateau=max(at.by_dyno.values(), default=0) if at else 0,
                     peak_during_load=max((st.peak_during for st in steps), default=0), limited_by=stop,
                     leak=ProbeLeak(**leak.as_dict()) if leak else None)


def explain(results: Mapping[ModeName, ProbeMode], predicted: int | None, worker_class: str, threads: int) -> list[str]:
    notes = []
    seq, ramp = results.get("sequential"), results.get("ramp")
    if seq and ramp and not (seq.leak or ramp.leak):
        a, b = seq.plateau.plateau, ramp.plateau.plateau
        if a is not None and b is not None and a < b:
            why = ("requests sent one at a time rarely overlap inside a worker, and a gthread worker's thread pool "
                   "starts a new thread only when none is idle, and each thread opens its own connection "
                   "lazily" if worker_class == "gthread" and threads > 1 else
                   "one request at a time is served by whichever worker accepts it; some workers may never "
                   "get one, and each worker opens its connection lazily")
            notes.append(f"sequential hits plateaued at {a}, concurrent load at {b}: {why}. Counting after "
                         "reloading a page can stop below what production load will hold.")
        elif a == b:
            notes.append(f"sequential and concurrent load agree: {a} connections.")
    for r in results.values():
        p, lk = r.plateau, r.leak
        if lk:
            what = (f"still rising after {lk.requests} requests ({lk.count} connections): about one "
                    f"connection left behind per {lk.per_requests:.0f} requests" if lk.kind == "rising" else
                    f"after {lk.requests} requests {lk.count} connections stay open with no request "
                    "running, and the server saw a new connection for about every "
                    f"{lk.per_requests:.1f} requests (a garbage collector closes some, so the count "
                    "saw-tooths instead of rising)")
            notes.append(f"{r.mode}: {what} — a leak, not lazy opening; the probe stopped before the server "
                         "was exhausted"
                         + (" (it had already filled: requests failed at the limit)" if lk.server_full else "")
                         + (". Under ASGI this is Django's persistent connections on per-request threads "
                            "(ticket #33497): use CONN_MAX_AGE=0 with a pool (Django's, or PgBouncer)."
                            if worker_class == "asgi" else "."))
            continue
        if r.limited_by == "server":
            notes.append(f"{r.mode}: stopped with the count at the server's limit ({p.plateau}), before "
                         "exhausting it: the app would hold more if it could.")
            continue
        if p.still_rising or not p.settled:
            notes.append(f"{r.mode}: the count was still rising when the probe stopped ({r.limited_by} "
                         "limit): more load may open more connections; with gevent and persistent "
                         "connections this is one connection per greenlet (a leak by design).")
        if predicted is not None and p.plateau is not None:
            verdict = "matches" if p.plateau == predicted else (
                "below the prediction" if p.plateau < predicted else "ABOVE the prediction")
            notes.append(f"{r.mode}: plateau {p.plateau} {verdict} (predicted {predicted}).")
    return notes
