"""PostgreSQL 18's own timing of each connection (log_connections = setup_durations): read raw from its log,
summarized by analysis as the third figure of a connection's cost."""

from __future__ import annotations

import pytest

from connbench.analysis.summarize import summarize
from connbench.services.postgres import parse_setup_durations
from tests.fixture_runs import copy_run

# as PostgreSQL 18.6 wrote them here (log_line_prefix "%n [%p] "), with lines around that are not connections
LOG = """1796300612.380 [26342] LOG:  database system is ready to accept connections
1796300614.584 [26355] LOG:  connection ready: setup total=4.696 ms, fork=0.326 ms, authentication=0.292 ms
1796300614.700 [26356] FATAL:  sorry, too many clients already
1796300614.831 [26357] LOG:  connection ready: setup total=2.291 ms, fork=0.378 ms, authentication=0.249 ms
"""


def test_the_logs_connection_ready_lines_are_read_raw():
    assert parse_setup_durations(LOG) == [(1796300614.584, 26355, 4.696, 0.326, 0.292),
                                          (1796300614.831, 26357, 2.291, 0.378, 0.249)]
    assert parse_setup_durations("") == []


def test_the_summary_takes_the_median_over_the_measure_window(tmp_path):
    df = summarize(copy_run("run_a", tmp_path), write=False).set_index("cell_id")
    row = df.loc["pool-direct_cma-0"]
    assert (row["server_setup_n"], row["server_setup_p50"]) == (20, pytest.approx(1.95))  # warm-up's 50 ms out
    assert df["server_setup_n"].isna().sum() == len(df) - 1  # the others have no log: not measured, never 0
