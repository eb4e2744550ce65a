"""Compare two runs group by group: did req/s, p95 latency or peak connections change?

Cells match on their group (cell id without the repeat suffix). Each side's value is the median over
its completed repeats. A change smaller than `threshold` (relative) is shown as "~" (no change).
With >= 3 completed repeats on both sides, a two-sided Mann-Whitney U test gives a p-value and "*"
marks p < 0.05. A damaged cell (see analysis/load.py) is listed with its reason and left out of the
medians, so lost files never read as "-100 %". Note: with 3 vs 3 repeats the smallest possible two-sided p is 0.10, so a
significant result needs at least 4 repeats on one side (4 vs 4 reaches 0.029).
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu

from analysis import AnalysisError
from analysis.load import RunData, load_run
from analysis.summarize import summary_frame

# metric column, label, +1 when higher is better, -1 when lower is better, 0 when neither
METRICS = (("rps", "req/s", 1), ("lat_p95", "p95 ms", -1), ("conn_peak", "peak connections", 0))
MIN_REPEATS = 3
ALPHA = 0.05
FORMATS = {"text": "text", "txt": "text", "markdown": "markdown", "md": "markdown", "csv": "csv"}
COLUMNS = ("group", "metric", "a", "b", "n_a", "n_b", "ratio", "change", "verdict", "p_value", "significant", "note")


def _values(summary: pd.DataFrame, group: str, metric: str) -> np.ndarray:
    g = summary[(summary["group"] == group) & (summary["status"] == "completed")]
    return pd.to_numeric(g[metric], errors="coerce").dropna().to_numpy(float)


def _ratio(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b):
        return math.nan
    if a == 0:
        return 1.0 if b == 0 else math.inf
    return b / a


def _p_value(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < MIN_REPEATS or len(b) < MIN_REPEATS:
        return math.nan
    if np.unique(np.concatenate([a, b])).size == 1:
        return 1.0  # identical constants: no evidence of a difference (the test itself is undefined)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(mannwhitneyu(b, a, alternative="two-sided").pvalue)


def _row(group: str, metric: str, label: str, better: int, a: np.ndarray, b: np.ndarray,
         threshold: float) -> dict[str, Any]:
    ma = float(np.median(a)) if len(a) else math.nan
    mb = float(np.median(b)) if len(b) else math.nan
    ratio = _ratio(ma, mb)
    if math.isnan(ratio):
        change, verdict = "", ""
    elif math.isinf(ratio) or abs(ratio - 1) >= threshold:
        change = "+inf" if math.isinf(ratio) else f"{(ratio - 1) * 100:+.1f}%"
        verdict = "" if not better else ("better" if (ratio > 1) == (better > 0) else "worse")
    else:
        change, verdict = "~", ""
    p = _p_value(a, b)
    note = "" if len(a) and len(b) else ("no completed cell in A" if not len(a) else "no completed cell in B")
    return {"group": group, "metric": label, "a": ma, "b": mb, "n_a": len(a), "n_b": len(b), "ratio": ratio,
            "change": change, "verdict": verdict, "p_value": p, "significant": bool(p < ALPHA), "note": note}


def _damaged(run: RunData) -> dict[str, list[str]]:
    """group -> "cell: reason" for each damaged cell: listed, never compared (it has no figures)."""
    out: dict[str, list[str]] = {}
    for cell in run.cells:
        if cell.damage:
            out.setdefault(cell.group, []).append(f"{cell.cell_id}: {cell.damage}")
    return out


def comparison_frame(run_a: Path | str, run_b: Path | str, threshold: float = 0.05) -> pd.DataFrame:
    """One row per (group, metric) present in either run; groups in only one run get a note."""
    if not (0 <= threshold < 1):
        raise AnalysisError(f"threshold must be a fraction in [0, 1), e.g. 0.05 for 5%, not {threshold!r}")
    ra, rb = load_run(run_a), load_run(run_b)  # both as the current schema (older runs through the migration)
    sa, sb = summary_frame(ra), summary_frame(rb)
    ga, gb = list(dict.fromkeys(sa["group"])), list(dict.fromkeys(sb["group"]))
    da, db = _damaged(ra), _damaged(rb)
    rows = []
    for group in ga + [g for g in gb if g not in ga]:
        rows += [{"group": group, "note": f"damaged in {side}, left out: {what}"}
                 for side, dmg in (("A", da), ("B", db)) for what in dmg.get(group, [])]
        if group not in gb or group not in ga:
            rows.append({"group": group, "note": "only in A" if group in ga else "only in B"})
            continue
        for metric, label, better in METRICS:
            rows.append(_row(group, metric, label, better, _values(sa, group, metric), _values(sb, group, metric),
                             threshold))
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df[["n_a", "n_b"]] = df[["n_a", "n_b"]].astype("Int64")  # counts stay integers next to "only in" rows
    # plain strings only: pandas deep-copies attrs on every operation
    n_a, n_b = sum(map(len, da.values())), sum(map(len, db.values()))
    df.attrs.update(run_a=f"{ra.run_id} ({ra.root})", run_b=f"{rb.run_id} ({rb.root})", threshold=threshold,
                    damaged=f"{n_a} in A, {n_b} in B" if n_a or n_b else "")
    return df


def _num(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _display(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    headers = ["group", "metric", "A", "B", "n A/B", "B/A", "change", "p", "note"]
    rows = []
    for r in df.to_dict("records"):
        if not isinstance(r.get("metric"), str):
            rows.append([r["group"], "", "", "", "", "", "", "", r["note"]])
            continue
        p = _num(r["p_value"], 2) + (" *" if r["significant"] else "")
        change = r["change"] + (f" ({r['verdict']})" if r["verdict"] else "")
        rows.append([r["group"], r["metric"], _num(r["a"]), _num(r["b"]), f"{r['n_a']}/{r['n_b']}",
                     _num(r["ratio"], 3), change, p, r["note"]])
    return headers, rows


def _title(df: pd.DataFrame) -> list[str]:
    return [f"A: {df.attrs['run_a']}", f"B: {df.attrs['run_b']}",
            f'B/A of medians over completed repeats; "~" = change below {df.attrs["threshold"]:.0%}; '
            f"* = Mann-Whitney U p < {ALPHA} (needs >= {MIN_REPEATS} repeats on both sides).",
            *([f"Damaged cells ({df.attrs['damaged']}) are listed with the reason and left out of every "
               "figure."] if df.attrs.get("damaged") else [])]


def _text(df: pd.DataFrame) -> str:
    headers, rows = _display(df)
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([*_title(df), "", line(headers), line(["-" * w for w in widths]), *map(line, rows)]) + "\n"


def _markdown(df: pd.DataFrame) -> str:
    headers, rows = _display(df)
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    out = [f"- {t}" for t in _title(df)] + ["", "| " + " | ".join(headers) + " |",
                                             "|" + "|".join(["---"] * len(headers)) + "|"]
    out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def _csv(df: pd.DataFrame) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in df.to_dict("records"):
        w.writerow(["" if r[c] is None or r[c] is pd.NA or (isinstance(r[c], float) and math.isnan(r[c])) else r[c]
                    for c in COLUMNS])
    return buf.getvalue()


def compare(run_a: Path | str, run_b: Path | str, threshold: float = 0.05, fmt: str = "text") -> str:
    """Compare run B against run A; returns a text, markdown or csv table (see module docstring)."""
    kind = FORMATS.get(str(fmt).lower())
    if kind is None:
        raise AnalysisError(f"unknown format {fmt!r}; use one of: text, markdown (md), csv")
    df = comparison_frame(run_a, run_b, threshold)
    return {"text": _text, "markdown": _markdown, "csv": _csv}[kind](df)
