"""Turn a run directory (reports/<run-id>/) into tables, charts and a static HTML report.

Nothing here starts a process: analysis only reads the files the orchestrator wrote.

Public API (submodules, imported on demand so `import analysis` stays cheap):
    connbench.analysis.summarize.summarize(run_dir, write=True) -> pandas.DataFrame
    connbench.analysis.report.build_report(run_dir) -> Path            (index.html)
    connbench.analysis.compare.compare(run_a, run_b, threshold=0.05, fmt="text") -> str
Every bad input raises AnalysisError (a ValueError) with an actionable message.
"""

from __future__ import annotations

from connbench.errors import UsageError


class AnalysisError(UsageError, ValueError):
    """Bad input for analysis (not a run directory, no or a malformed manifest, a newer schema, an output path of the
    wrong kind such as charts/ being a file). A damaged *cell* is not an error: it is reported as damaged.

    The message says what was expected and what to do about it.
    """


class SchemaMismatchError(AnalysisError):
    """A run written with a newer results schema than this connbench reads (older ones are read through
    connbench.results' migration)."""


__all__ = ["AnalysisError", "SchemaMismatchError"]
