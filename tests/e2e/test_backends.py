"""backends.csv on real processes: every app backend's life, keyed by (pid, backend_start), agrees with the
counts of connections.csv sample by sample (both come from one pg_stat_activity snapshot), and its memory is
plausible for an idle PostgreSQL backend, at a sampler cost within budget.

One cell, short: 1 dyno x 2 sync workers, persistent connections (a busy sync worker does not accept, so both
workers serve and each holds one connection).
"""

from __future__ import annotations

import pandas as pd
import pytest

from tests.support import cell_data

pytestmark = pytest.mark.e2e

SCENARIO = """
[scenario]
name = "backends"
[defaults]
dynos = 1
workers = 2
worker_class = "sync"
conn_max_age = "none"
users = 8
spawn_rate = 8
warmup = 1
duration = 6
cooldown = 1.5
calibrate_n = 0
mix = { read = 1 }
"""

MIB = 2**20
NUMERIC = ("t", "pid", "backend_start", "samples", "idle_samples", "pss_bytes", "rss_bytes")
SAMPLER_CPU_MAX = 0.02  # of one core, at the default 0.1 s interval


@pytest.fixture(scope="module")
def cell(run_factory):
    run = run_factory(SCENARIO, "--no-report", name="backends")
    (cell_id,) = [c["cell_id"] for c in run.manifest["cells"]]
    cell = cell_data(run.dir, cell_id)
    assert cell.status == "completed", (cell.status, cell.error, cell.damage)
    return cell


def backends(cell) -> pd.DataFrame:
    """backends.csv with its numbers parsed (analysis's loader leaves a file it has no types for as text)."""
    b = cell.csv("backends.csv").copy()
    for col in NUMERIC:
        b[col] = pd.to_numeric(b[col], errors="coerce")
    return b


def lives(b: pd.DataFrame) -> pd.DataFrame:
    """One row per (pid, backend_start): when it was first seen and when it ended (gone or open)."""
    seen = b[b.event == "seen"].set_index(["pid", "backend_start"]).t.rename("seen")
    end = b[b.event.isin(["gone", "open"])].set_index(["pid", "backend_start"])
    out = pd.concat([seen, end.t.rename("end"), end.event.rename("how")], axis=1)
    assert out.notna().all().all(), out  # every life seen once and ended once
    return out


def test_every_backend_recorded_and_counted(cell):
    doc = cell.doc
    assert doc.memory == "measured"
    m0, m1 = cell.phase("measure")
    b, conns, reqs = backends(cell), cell.csv("connections.csv"), cell.csv("requests.csv")
    life = lives(b)
    # every backend a request ran on was seen (pids only: requests carry no backend_start)
    used = set(reqs.backend_pid.dropna().astype(int))
    assert len(used) == 2 and used <= set(life.index.get_level_values("pid"))
    # persistent: two lives, ended when the app stopped (gone: the sampler stops after the app)
    assert len(life) == 2 and (life.end >= m1).all(), life
    # alive at each measured sample = connections.csv's count of that sample
    pg = conns[(conns.source == "postgres") & (conns.t >= m0) & (conns.t < m1)].groupby("t")["count"].sum()
    assert len(pg) >= 40
    alive = pd.Series([int(((life.seen <= t) & ((life.end > t) | ((life.how == "open") & (life.end >= t)))).sum())
                       for t in pg.index], index=pg.index)
    assert (alive == pg).all(), pd.concat([alive, pg], axis=1)[alive != pg]
    assert pg.max() == 2


def test_idle_backend_memory(cell):
    c0, c1 = cell.phase("cooldown")
    b = backends(cell)
    mem = b[(b.event == "mem") & (b.t >= c0) & (b.t <= c1)]  # the load is over: idle backends
    per = mem.groupby(["pid", "backend_start"])[["pss_bytes", "rss_bytes"]].median() / MIB
    print(f"\nidle app backend memory, MiB (median per backend):\n{per.round(2).to_string()}")
    assert len(per) == 2
    assert per.pss_bytes.between(0.3, 30).all() and (per.pss_bytes < per.rss_bytes).all()


def test_sampler_cpu_within_budget(cell):
    m0, m1 = cell.phase("measure")
    procs = cell.csv("processes.csv")
    s = procs[(procs.component == "sampler") & (procs.t >= m0) & (procs.t <= m1)].sort_values("t")
    assert len(s) >= 10
    share = (s.cpu_seconds.iloc[-1] - s.cpu_seconds.iloc[0]) / (s.t.iloc[-1] - s.t.iloc[0])
    print(f"\nsampler CPU over the measure window: {100 * share:.2f} % of a core")
    assert share < SAMPLER_CPU_MAX
