"""The unit suite runs in parallel (pytest-xdist, `make unit`): nothing in it may depend on timing or luck.

Hypothesis is derandomized (the same examples every run: a test cannot pass once and fail the next time) and
has no deadline (a busy machine is not a failure); scripts/fuzz_scenarios.py explores at random instead.
"""

from hypothesis import settings

settings.register_profile("connbench", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("connbench")
