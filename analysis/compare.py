"""Compare two runs group by group: did req/s, latency, churn or peak connections change?

Cells match on their group (cell id without the repeat suffix). Each side's value is the median over its
completed repeats, with its interval (analysis/stats.py: min-max below 5 repeats, a bootstrap CI of the
median from 5, a bootstrap over 1-second blocks for a single repeat). A change smaller than `threshold`
(relative) is shown as "~" (no change). The test is the report's: two-sided Mann-Whitney U on the per-repeat
figures when both sides have >= 4 repeats (3 vs 3 cannot reach p < 0.05), else on the per-second samples of
every repeat pooled; `test` names which; "*" marks p < 0.05. A damaged cell (see analysis/load.py) is listed
with its reason and left out of the medians, so lost files never read as "-100 %".
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from connbench.analysis import AnalysisError, stats
from connbench.analysis.load import RunData, load_run
from connbench.analysis.settings import Settings
from connbench.analysis.summarize import summary_frame

# metric column, label, +1 when higher is better, -1 when lower is better, 0 when neither
METRICS = (("rps", "req/s", 1), ("lat_p50", "p50 ms", -1), ("lat_p95", "p95 ms", -1), ("lat_p99", "p99 ms", -1),
           ("churn_per_s", "new conn/s", -1), ("conn_peak", "peak connections", 0))
ALPHA = stats.ALPHA
FORMATS = {"text": "text", "txt": "text", "markdown": "markdown", "md": "markdown", "csv": "csv"}
COLUMNS = ("group", "metric", "a", "a_lo", "a_hi", "b", "b_lo", "b_hi", "n_a", "n_b", "ratio", "change", "verdict",
           "p_value", "test", "significant", "note")


def _ratio(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b):
        return math.nan
    if a == 0:
        return 1.0 if b == 0 else math.inf
    return b / a


def _interval(side: Settings, group: str, metric: str) -> stats.Interval:
    vals, secs = side.values(group, metric), side.seconds[group]
    return stats.interval(vals, secs[0].block(metric) if len(secs) == 1 else None)


def _row(group: str, metric: str, label: str, better: int, sa: Settings, sb: Settings,
         threshold: float) -> dict[str, Any]:
    ia, ib = _interval(sa, group, metric), _interval(sb, group, metric)
    n_a = int(np.isfinite(sa.values(group, metric)).sum())
    n_b = int(np.isfinite(sb.values(group, metric)).sum())
    ratio = _ratio(ia.center, ib.center)
    if math.isnan(ratio):
        change, verdict = "", ""
    elif math.isinf(ratio) or abs(ratio - 1) >= threshold:
        change = "+inf" if math.isinf(ratio) else f"{(ratio - 1) * 100:+.1f}%"
        verdict = "" if not better else ("better" if (ratio > 1) == (better > 0) else "worse")
    else:
        change, verdict = "~", ""
    t = stats.differ(sa.values(group, metric), sb.values(group, metric), sa.samples(group, metric),
                     sb.samples(group, metric))
    note = "" if n_a and n_b else ("no completed cell in A" if not n_a else "no completed cell in B")
    return {"group": group, "metric": label, "a": ia.center, "a_lo": ia.lo, "a_hi": ia.hi, "b": ib.center,
            "b_lo": ib.lo, "b_hi": ib.hi, "n_a": n_a, "n_b": n_b, "ratio": ratio, "change": change,
            "verdict": verdict, "p_value": t.p, "test": t.basis, "significant": t.significant, "note": note}


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
    seta, setb = Settings(ra, sa), Settings(rb, sb)
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
            rows.append(_row(group, metric, label, better, seta, setb, threshold))
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df[["n_a", "n_b"]] = df[["n_a", "n_b"]].astype("Int64")  # counts stay integers next to "only in" rows
    # plain strings only: pandas deep-copies attrs on every operation
    n_a, n_b = sum(map(len, da.values())), sum(map(len, db.values()))
    df.attrs.update(run_a=f"{ra.run_id} ({ra.root})", run_b=f"{rb.run_id} ({rb.root})", threshold=threshold,
                    damaged=f"{n_a} in A, {n_b} in B" if n_a or n_b else "", servers=_servers_differ(ra, rb))
    return df


def _servers(run: RunData) -> str:
    """The PostgreSQL builds a run used: kind and version, e.g. "embedded 18.1; system 15.18"."""
    found = sorted({f"{s.kind} {s.version}" for s in run.manifest.servers.values()})
    return "; ".join(found) or "unknown"


def _servers_differ(a: RunData, b: RunData) -> str:
    sa, sb = _servers(a), _servers(b)
    return "" if sa == sb else f"A ran on PostgreSQL {sa}, B on {sb}: the server differs, not only the setting."


def _num(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _with_interval(v: Any, lo: Any, hi: Any) -> str:
    if not _num(v):
        return ""
    return _num(v) + (f" [{_num(lo)}, {_num(hi)}]" if _num(lo) and _num(hi) else "")


def _display(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    headers = ["group", "metric", "A [interval]", "B [interval]", "n A/B", "B/A", "change", "p", "test", "note"]
    rows = []
    for r in df.to_dict("records"):
        if not isinstance(r.get("metric"), str):
            rows.append([r["group"], "", "", "", "", "", "", "", "", r["note"]])
            continue
        p = _num(r["p_value"], 2) + (" *" if r["significant"] else "")
        change = r["change"] + (f" ({r['verdict']})" if r["verdict"] else "")
        rows.append([r["group"], r["metric"], _with_interval(r["a"], r["a_lo"], r["a_hi"]),
                     _with_interval(r["b"], r["b_lo"], r["b_hi"]), f"{r['n_a']}/{r['n_b']}",
                     _num(r["ratio"], 3), change, p, r["test"] or "", r["note"]])
    return headers, rows


def _title(df: pd.DataFrame) -> list[str]:
    return [f"A: {df.attrs['run_a']}", f"B: {df.attrs['run_b']}",
            f'B/A of medians over completed repeats, intervals in brackets (min-max below '
            f'{stats.MIN_REPEATS_BOOTSTRAP} repeats, bootstrap 95% CI of the median from '
            f'{stats.MIN_REPEATS_BOOTSTRAP}, '
            f'over 1-s blocks for one repeat); "~" = change below {df.attrs["threshold"]:.0%}; '
            f"* = Mann-Whitney U p < {ALPHA}, on repeats when both sides have >= {stats.MIN_REPEATS_TEST}, else on "
            "per-second samples (column test).",
            *([f"Damaged cells ({df.attrs['damaged']}) are listed with the reason and left out of every "
               "figure."] if df.attrs.get("damaged") else []),
            *([df.attrs["servers"]] if df.attrs.get("servers") else [])]


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
