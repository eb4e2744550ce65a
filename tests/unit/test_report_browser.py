"""Open the built report in headless Chromium from the file system: images load, no console errors,
the report opens with its Findings, the summary table sorts, and a screenshot can be taken.

No Selenium: a copy of index.html gets a probe script injected first in <head>; it records errors
(JS errors, failed resource loads, console.error), and on `load` checks every image, clicks the
req/s header twice and writes a JSON status into document.title, which `--dump-dom` prints.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from connbench.analysis.report import build_report
from tests.fixture_runs import copy_run


def _chromium() -> str | None:
    for cand in (os.environ.get("CONNBENCH_CHROMIUM"), "/usr/bin/chromium", "chromium", "chromium-browser",
                 "google-chrome"):
        if cand and (path := shutil.which(cand)):
            return path
    return None


CHROMIUM = _chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (make system installs it as root)")

PROBE = """<script>
(function () {
  var errors = [];
  window.addEventListener("error", function (e) {
    var t = e.target;
    if (t && t !== window && (t.src || t.href)) { errors.push("failed to load " + (t.src || t.href)); }
    else { errors.push("js error: " + (e.message || e)); }
  }, true);
  var ce = console.error;
  console.error = function () { errors.push("console.error: " + Array.prototype.join.call(arguments, " "));
                                return ce.apply(console, arguments); };
  function cellOrder() {
    return Array.prototype.map.call(document.querySelectorAll("#summary-table tbody tr"),
                                    function (tr) { return tr.cells[0].textContent.trim(); });
  }
  window.addEventListener("load", function () {
    var imgs = Array.prototype.slice.call(document.images);
    var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                     .map(function (i) { return i.getAttribute("src"); });
    var th = Array.prototype.filter.call(document.querySelectorAll("#summary-table th"),
                                         function (h) { return h.textContent.trim() === "req/s"; })[0];
    var asc = null, desc = null;
    if (th) { th.click(); asc = cellOrder(); th.click(); desc = cellOrder(); }
    var first = document.querySelector("main h2"), found = document.querySelectorAll("#findings-table tbody tr");
    document.title = "STATUS:" + JSON.stringify({images: imgs.length, broken: broken, errors: errors,
                                                 asc: asc, desc: desc, first: first ? first.id : null,
                                                 findings: found.length});
  });
})();
</script>"""

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--hide-scrollbars"]


def run_chromium(args: list[str], profile: Path, timeout: float = 90) -> subprocess.CompletedProcess:
    """Chromium in its own process group, so a hang is cleaned up completely (and only what we started)."""
    proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium did not finish within {timeout} s: {' '.join(args)}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    run = copy_run("run_a", tmp_path_factory.mktemp("browser"))
    return build_report(run)


def test_report_loads_cleanly_and_sorts(report, tmp_path):
    probe = report.with_name("index_probe.html")  # same directory: the relative links still resolve
    probe.write_text(report.read_text().replace("<head>", "<head>\n" + PROBE, 1))
    res = run_chromium(["--virtual-time-budget=15000", "--dump-dom", probe.as_uri()], tmp_path / "profile")
    m = re.search(r"<title>STATUS:(.*?)</title>", res.stdout, re.S)
    assert m, f"no status from the page (rc {res.returncode}):\n{res.stdout[:2000]}\n{res.stderr[-2000:]}"
    status = json.loads(html.unescape(m.group(1)))
    assert status["images"] == 11
    assert status["broken"] == []
    assert status["errors"] == []
    assert status["first"] == "findings" and status["findings"] == 3  # the 3 completed settings, first
    # req/s: pgbouncer 5 < direct-0 10 < persistent 20; failed and skipped cells (blank) stay last
    assert status["asc"] == ["pool-pgbouncer-transaction_cma-0", "pool-direct_cma-0", "pool-direct_cma-600",
                             "pool-direct_cma-none", "pool-pgbouncer-session_cma-0"]
    assert status["desc"][:3] == ["pool-direct_cma-600", "pool-direct_cma-0", "pool-pgbouncer-transaction_cma-0"]


def test_screenshot(report, tmp_path):
    shot = report.with_name("screenshot.png")  # kept next to the report for a human to look at
    res = run_chromium([f"--screenshot={shot}", "--window-size=1400,3000", report.as_uri()], tmp_path / "profile")
    assert shot.is_file(), res.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000  # a blank page compresses far smaller
