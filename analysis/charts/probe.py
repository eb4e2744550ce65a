"""The probe's chart: the article's count against requests sent, per mode, plateau marked."""

from __future__ import annotations

from connbench.analysis.charts.common import Chart, plt, save
from connbench.analysis.load import RunData


def draw_probe(run: RunData) -> list[Chart]:
    """Nothing without a probe.json (or with an unusable one: the report says why)."""
    doc = run.probe
    if doc is None:
        return []
    fig, ax = plt.subplots(figsize=(9, 4.5))
    colors = {"sequential": "tab:orange", "ramp": "tab:blue"}
    for mode, r in doc.results.items():
        x = [s.requests_total for s in r.steps]
        ax.plot(x, [s.count for s in r.steps], marker="o", color=colors.get(mode), label=f"{mode}: count after step")
        ax.plot(x, [s.peak_during for s in r.steps], linestyle=":", color=colors.get(mode), alpha=0.6,
                label=f"{mode}: peak during step")
        p = r.plateau
        if p.plateau is not None and p.reached_at_step is not None:
            at = r.steps[p.reached_at_step].requests_total
            ax.axhline(p.plateau, color=colors.get(mode), alpha=0.25)
            ax.annotate(f"{mode} plateau {p.plateau}" + ("" if p.settled else " (still rising)"),
                        (at, p.plateau), textcoords="offset points", xytext=(5, 6), color=colors.get(mode))
    pred = doc.predicted.at_rest
    if pred is not None:
        ax.axhline(pred, color="black", linestyle="--", linewidth=1, label=f"predicted {pred}")
    ax.set_xscale("log")
    ax.set_xlabel("requests sent (cumulative, log scale)")
    ax.set_ylabel("connections (the article's count query)")
    ax.set_title("Probe: hit the app until the count stops rising")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return [save(fig, run.paths.charts, "probe", "Probe: connection count against requests sent",
                  None, "probe")]
