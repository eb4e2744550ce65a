"""What every chart shares: the descriptor, the files (matplotlib's: PNG for the report, SVG for papers),
colours, markers and the layout pass that keeps labels off each other."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import matplotlib

matplotlib.use("Agg")  # files only, never a window; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.collections import LineCollection, PathCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.text import Annotation  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from connbench import results as R  # noqa: E402

if TYPE_CHECKING:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

PHASE_COLORS: dict[R.Phase, tuple[str, str]] = {"warmup": ("#f3d37a", "warm-up"), "measure": ("#9fd89f", "measure"),
                "cooldown": ("#9cc3e6", "cool-down")}
STATE_COLORS = {"active": "#d62728", "idle": "#2ca02c", "idle in transaction": "#ff7f0e",
                "idle in transaction (aborted)": "#8c564b", "": "#7f7f7f"}
# One colour per pooling mode in every chart (Okabe-Ito, readable with colour-blindness); others grey.
POOLING_COLORS = {"direct": "#D55E00", "django-pool": "#0072B2", "pgbouncer-transaction": "#009E73",
                  "pgbouncer-session": "#E69F00", "dj-db-conn-pool": "#CC79A7"}
LABEL_GIDS = ("point", "value")  # texts layout keeps apart: point labels move, bar value labels drop
plt.rcParams.update({"figure.dpi": 100, "font.size": 10, "axes.grid": True, "grid.alpha": 0.3,
                     "svg.hashsalt": "connbench"})  # deterministic SVG ids


@dataclass(frozen=True)
class Chart:
    """A drawn chart. png: the image the report shows (the SVG itself for the hand-built per-cell charts,
    cell.py); svg: the vector file it links. cell_id: None for a chart of the whole run."""
    title: str
    png: Path
    svg: Path
    cell_id: str | None
    kind: str


def pooling_color(name: object) -> str:
    return POOLING_COLORS.get(str(name), "#8c8c8c")


def save(fig: Figure, out: Path, name: str, title: str, cell_id: str | None, kind: str) -> Chart:
    out.mkdir(parents=True, exist_ok=True)
    png, svg = out / f"{name}.png", out / f"{name}.svg"
    layout(fig)
    # Write then rename, so a report never links a half-written image.
    for path, kw in ((png, {"dpi": 100}), (svg, {"metadata": {"Date": None}})):
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, format=path.suffix[1:], **kw)
        tmp.replace(path)
    plt.close(fig)
    return Chart(title, png, svg, cell_id, kind)


def layout(fig: Figure) -> None:
    """tight_layout, then declutter; again while an axes grew to hold a label, since growing moves points."""
    for _ in range(4):
        fig.tight_layout()
        if not declutter(fig):
            return


def declutter(fig: Figure) -> bool:
    """Labels (LABEL_GIDS) off legends, each other, bars, error bars and points, and inside their axes: a point
    label moves up past what it would cover, a value label is dropped. In pixels; True when an axes grew."""
    if not (labelled := [ax for ax in fig.axes if any(t.get_gid() in LABEL_GIDS for t in ax.texts)]):
        return False
    fig.canvas.draw()
    r, grew = cast("FigureCanvasAgg", fig.canvas).get_renderer(), False  # Agg (matplotlib.use above)
    legends = [lg.get_window_extent(r) for lg in [*fig.legends, *(ax.get_legend() for ax in fig.axes)] if lg]
    for ax in labelled:
        box, taken, data = ax.get_window_extent(r), list(legends), ax.transData.transform
        taken += [p.get_window_extent(r) for p in ax.patches] + [  # bars, error bars, points (5 px around)
            Bbox.from_extents(*data(s).min(0), *data(s).max(0)) for c in ax.collections
            if isinstance(c, LineCollection) for s in c.get_segments() if len(s)] + [
            Bbox.from_extents(x - 5, y - 5, x + 5, y + 5) for c in ax.collections
            if isinstance(c, PathCollection) for x, y in data(c.get_offsets())]
        for t in cast(list[Annotation], [t for t in ax.texts if t.get_gid() in LABEL_GIDS]):  # all annotate()'s
            bb = t.get_window_extent(r)
            if bb.x1 > box.x1 or bb.x0 < box.x0:  # running out sideways (toward a legend): turn it around
                t.set_horizontalalignment("right" if bb.x1 > box.x1 else "left")
                t.xyann = (-t.xyann[0], t.xyann[1])
                bb = t.get_window_extent(r)
            hits = [b for b in taken if b.overlaps(bb)]
            if hits and t.get_gid() == "value":
                t.remove()
                continue
            while hits:  # each step clears the highest box it hit, so this ends
                t.xyann = (t.xyann[0], t.xyann[1] + (max(b.y1 for b in hits) - bb.y0 + 2) * 72 / fig.dpi)
                bb = t.get_window_extent(r)
                hits = [b for b in taken if b.overlaps(bb)]
            taken.append(bb)
            if bb.y1 > box.y1:
                ax.set_ylim(top=ax.transData.inverted().transform((bb.x0, bb.y1 + 4))[1])
                grew = True
    return grew


def point_labels(ax: Axes, xs: Iterable[float], ys: Iterable[float], labels: Iterable[object]) -> None:
    """Point labels beside their point, right-half ones to its left; coinciding points share one. layout
    staggers upward those that would cover another label or point."""
    merged: dict[tuple[float, float], list[str]] = {}
    for x, y, lab in zip(xs, ys, labels, strict=True):
        merged.setdefault((float(x), float(y)), []).append(str(lab))
    xmax = max((x for x, _ in merged), default=0.0)
    for (x, y), labs in sorted(merged.items(), key=lambda kv: kv[0][1]):
        right = xmax > 0 and x > 0.5 * xmax
        ax.annotate("\n".join(labs), (x, y), textcoords="offset points", xytext=(-7 if right else 7, 0),
                    ha="right" if right else "left", va="center", fontsize=7, gid="point")


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
MAX_LABELS = 6  # beyond this many points, labels turn into clutter: colour and shape carry the meaning
