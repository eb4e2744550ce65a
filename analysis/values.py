"""How analysis reads one value of a table: missing or not, and CONN_MAX_AGE as text."""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pandas as pd


def missing(v: Any) -> bool:
    """None, pandas' NA or a float NaN: no value, whatever the column's dtype made of it."""
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def cma_label(v: Any) -> str:
    """CONN_MAX_AGE as text: 600, 600.0 and "600" alike; None, NaN and "none" all mean no limit."""
    f = pd.to_numeric(pd.Series([v], dtype=object), errors="coerce").iloc[0]
    if pd.isna(f):
        return "none"
    return str(int(f)) if float(f).is_integer() else f"{f:g}"


def cma_sorted(values: Iterable[str]) -> list[str]:
    """Labels in order: numbers ascending, then words ("none")."""
    return sorted(values, key=lambda v: (0, float(v), "") if v.replace(".", "", 1).isdigit() else (1, 0.0, v))
