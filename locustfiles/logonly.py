"""Loaded beside your own locustfile ([load] locustfile): connbench's raw request log and the test's start
mark, nothing else (no User class). Your users' requests are logged like connbench's own."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import requestlog  # noqa: E402

requestlog.install()
