"""A run directory's schema, in one place: the version and its history, every path and column
(schema.py), the models of its JSON documents (docs.py), the writers (files.py), and the one step per
version that reads a run of an older schema (migrate.py). Import it as `connbench.results`.
"""

from connbench.results.docs import (
    CellDoc,
    ConnectCost,
    ConnInfo,
    Git,
    HeadroomRow,
    Manifest,
    ManifestCell,
    Overhead,
    Predicted,
    ProbeDoc,
    ProbeLeak,
    ProbeMode,
    ProbePlateau,
    ProbeServer,
    ProbeStep,
    Pruned,
    Resume,
    SamplerConfig,
    ServerInfo,
    Services,
    calibration_key,
)
from connbench.results.files import (
    CsvAppender,
    append_event,
    json_kind,
    read_json,
    read_json_doc,
    write_atomic,
    write_csv_atomic,
    write_json_atomic,
    write_private,
    write_text_atomic,
)
from connbench.results.migrate import (
    UPDATES,
    update_to_2,
    update_to_3,
    update_to_4,
    update_to_5,
    update_to_6,
    update_to_7,
    upgrade,
)
from connbench.results.schema import *  # noqa: F403 - the version, names, columns and paths
from connbench.results.schema import SCHEMA_VERSION, CellPaths, ResultsError, RunPaths, SchemaVersionError

__all__ = [
    "SCHEMA_VERSION", "RunPaths", "CellPaths", "ResultsError", "SchemaVersionError", "UPDATES", "update_to_2",
    "update_to_3", "update_to_4", "update_to_5", "update_to_6", "update_to_7", "upgrade", "CellDoc", "ConnInfo",
    "ConnectCost",
    "calibration_key", "Git",
    "HeadroomRow", "Manifest", "ManifestCell",
    "Overhead", "Predicted",
    "ProbeDoc", "ProbeLeak", "ProbeMode", "ProbePlateau", "ProbeServer", "ProbeStep", "Pruned", "Resume",
    "SamplerConfig",
    "ServerInfo", "Services", "CsvAppender", "append_event", "json_kind", "read_json", "read_json_doc",
    "write_atomic", "write_csv_atomic", "write_json_atomic", "write_private", "write_text_atomic",
]  # fmt: skip
