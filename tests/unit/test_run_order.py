"""The order a matrix runs its cells in: round-robin over repeats, so drift hits every setting alike."""

from __future__ import annotations

from connbench.run.matrix import MAX_LIVE_SERVERS, run_order
from connbench.scenario import expand as sc
from tests.support import ROOT, write_scenario


def test_the_demo_runs_every_setting_once_before_any_runs_again():
    cells = sc.load(ROOT / "scenarios" / "quick.toml").cells
    order = run_order(cells)
    assert sorted(c.cell_id for c in order) == sorted(c.cell_id for c in cells)  # each cell once
    repeats = [c.repeat for c in order]
    assert repeats == sorted(repeats) and len(set(repeats)) == 4  # all of repeat r before any of r + 1
    per_repeat = [[c.group for c in order if c.repeat == r] for r in sorted(set(repeats))]
    assert len(per_repeat[0]) == 8 and all(groups == per_repeat[0] for groups in per_repeat)  # same order each time


def test_past_the_live_server_limit_each_server_setting_runs_its_repeats_together(tmp_path):
    n = MAX_LIVE_SERVERS + 2
    limits = ", ".join(str(20 + i) for i in range(n))
    cells = sc.load(write_scenario(tmp_path / "many.toml", f"""
[scenario]
name = "many"
repeats = 3
[defaults]
duration = 1
[matrix]
max_connections = [{limits}]
conn_max_age = [0, 60]
""")).cells
    order = run_order(cells)
    assert sorted(c.cell_id for c in order) == sorted(c.cell_id for c in cells)
    keys = [c.knobs.server_key() for c in order]
    runs = [k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]
    assert len(runs) == len(set(keys)) == n  # each server started once: its cells are contiguous
    for key in set(keys):
        mine = [c for c in order if c.knobs.server_key() == key]
        assert [c.repeat for c in mine] == sorted(c.repeat for c in mine)  # round-robin within the server
        assert len({c.group for c in mine}) == 2
