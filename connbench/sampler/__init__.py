"""The sampling process (`python -m connbench.sampler CONFIG`): raw counters on one clock."""
