"""The orchestrator: the only code that starts or stops processes (matrix, cell, stack, faults, probe)."""
