"""Loaded beside your own locustfile ([load] locustfile): connbench's raw request log and the test's start
mark, nothing else (no User class). Your users' requests are logged like connbench's own."""

from connbench.locustfiles import requestlog

LOG = requestlog.install()
