"""The probe's chart: the article's count against requests sent, per mode, plateau marked."""

from __future__ import annotations

import json
from pathlib import Path

from analysis.charts import Chart, _save, plt

PROBE_JSON = "probe.json"


def draw_probe(run_dir: Path) -> list[Chart]:
    path = Path(run_dir) / PROBE_JSON
    if not path.exists():
        return []
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError:
        return []
    results = doc.get("results") if isinstance(doc, dict) else None
    # only the probe's own shape has per-step data; anything else is shown as tables by the report
    runs = {m: r for m, r in (results or {}).items() if isinstance(r, dict) and isinstance(r.get("steps"), list)
            and r["steps"] and all(isinstance(s, dict) and {"requests_total", "count", "peak_during"} <= s.keys()
                                  for s in r["steps"])} if isinstance(results, dict) else {}
    if not runs:
        return []
    fig, ax = plt.subplots(figsize=(9, 4.5))
    colors = {"sequential": "tab:orange", "ramp": "tab:blue"}
    for mode, r in runs.items():
        steps = r["steps"]
        x = [s["requests_total"] for s in steps]
        ax.plot(x, [s["count"] for s in steps], marker="o", color=colors.get(mode), label=f"{mode}: count after step")
        ax.plot(x, [s["peak_during"] for s in steps], linestyle=":", color=colors.get(mode), alpha=0.6,
                label=f"{mode}: peak during step")
        p = r.get("plateau") if isinstance(r.get("plateau"), dict) else {}
        if p.get("plateau") is not None and p.get("reached_at_step") is not None:
            at = steps[p["reached_at_step"]]["requests_total"]
            ax.axhline(p["plateau"], color=colors.get(mode), alpha=0.25)
            ax.annotate(f"{mode} plateau {p['plateau']}" + ("" if p.get("settled") else " (still rising)"),
                        (at, p["plateau"]), textcoords="offset points", xytext=(5, 6), color=colors.get(mode))
    pred = doc["predicted"].get("at_rest") if isinstance(doc.get("predicted"), dict) else None
    if pred is not None:
        ax.axhline(pred, color="black", linestyle="--", linewidth=1, label=f"predicted {pred}")
    ax.set_xscale("log")
    ax.set_xlabel("requests sent (cumulative, log scale)")
    ax.set_ylabel("connections (the article's count query)")
    ax.set_title("Probe: hit the app until the count stops rising")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return [_save(fig, Path(run_dir) / "charts", "probe", "Probe: connection count against requests sent",
                  None, "probe")]
