"""A small SVG writer for charts over time: one plot area with 1-2-5 ticks (powers of ten on a log scale),
axis labels, a title and a legend right of the plot. The standard library only, and no font metrics: text
widths are estimated (CHAR_W), which is enough to place a legend and tick labels.

Why not matplotlib: a per-cell chart took it 0.3 s (layout, then PNG and SVG); a run has three per cell.
Everything is added in data coordinates and mapped to pixels at render(), once the ranges are known.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
CHAR_W = 0.6  # average glyph width in em (DejaVu Sans is about 0.55-0.6): sizes the legend and tick gutter
DASHED, DOTTED = "6 3", "2 3"
TITLE_PX, LABEL_PX, TICK_PX, SMALL_PX = 15, 13, 12, 11
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")  # no XML 1.0 document may hold these


def esc(text: object) -> str:
    """Text safe as XML content and inside a quoted attribute; characters XML forbids become U+FFFD."""
    s = _NOT_XML.sub("\ufffd", str(text))
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;") \
        .replace("'", "&#39;")


def text_width(text: str, px: float) -> float:
    return len(text) * px * CHAR_W


def _finite(v: float) -> bool:
    return math.isfinite(v)


def nice_step(span: float, target: int = 6) -> float:
    """The smallest 1, 2 or 5 times a power of ten that cuts span into at most `target` steps."""
    raw = span / max(target, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw * (1 - 1e-9))


def _digits(step: float) -> int:
    return max(0, -math.floor(math.log10(step) + 1e-9))


def ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    """Tick values inside [lo, hi] on a 1-2-5 step, rounded to the step's decimals (no 0.30000000000000004)."""
    if not (_finite(lo) and _finite(hi)) or hi <= lo:
        return [lo] if _finite(lo) else []
    step = nice_step(hi - lo, target)
    first, d = math.ceil(lo / step - 1e-9), _digits(step)
    last = math.floor(hi / step + 1e-9)
    return [round(k * step, d) + 0.0 for k in range(first, last + 1)]  # + 0.0: no "-0"


def tick_label(v: float, step: float) -> str:
    """Plain decimals, as many as the step needs: never scientific notation."""
    return f"{v:.{_digits(step)}f}" if step > 0 else f"{v:g}"


def log_ticks(lo: float, hi: float) -> list[float]:
    """The powers of ten inside [lo, hi] (lo > 0)."""
    if not (_finite(lo) and _finite(hi)) or lo <= 0 or hi < lo:
        return []
    return [10.0 ** k for k in range(math.ceil(math.log10(lo) - 1e-9), math.floor(math.log10(hi) + 1e-9) + 1)]


def log_range(lo: float, hi: float, pad: float = 0.05) -> tuple[float, float]:
    """lo..hi padded by `pad` of its decades each side; widened to whole decades when that holds fewer than two
    powers of ten, since a log axis needs two labelled ticks to be read."""
    a, b = math.log10(lo), math.log10(hi)
    a, b = a - pad * (b - a or 1), b + pad * (b - a or 1)
    if len(log_ticks(10 ** a, 10 ** b)) < 2:
        a, b = math.floor(a), max(math.ceil(b), math.floor(a) + 1)
    return 10.0 ** a, 10.0 ** b


def step_points(xs: Sequence[float], ys: Sequence[float]) -> list[tuple[float, float]]:
    """A step curve with where="post" semantics: y[i] holds from x[i] until x[i+1], ending at the last point."""
    pts: list[tuple[float, float]] = []
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        if i:
            pts.append((x, ys[i - 1]))
        pts.append((x, y))
    return pts


@dataclass(frozen=True)
class Scale:
    """Data to pixels along one axis: lo..hi onto a..b (b < a for y, which grows downward)."""
    lo: float
    hi: float
    a: float
    b: float
    log: bool = False

    def __call__(self, v: float) -> float:
        if self.log:
            f = (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        else:
            f = (v - self.lo) / (self.hi - self.lo)
        return self.a + f * (self.b - self.a)

    def valid(self, v: float) -> bool:
        return _finite(v) and (v > 0 or not self.log)


def path_d(pts: Iterable[tuple[float, float]], sx: Scale, sy: Scale) -> str:
    """Path data through the points, broken where a value is missing (NaN, or not positive on a log scale)."""
    out, pen = [], "M"
    for x, y in pts:
        if not (sx.valid(x) and sy.valid(y)):
            pen = "M"
            continue
        out.append(f"{pen}{sx(x):.1f},{sy(y):.1f}")
        pen = "L"
    return "".join(out)


@dataclass(frozen=True)
class Entry:
    """A legend entry: a filled patch, or a line (dashed, with a marker)."""
    label: str
    color: str
    patch: bool = False
    opacity: float = 1.0
    width: float = 1.5
    dash: str | None = None
    marker: bool = False


Draw = Callable[[Scale, Scale], str]


def _line_attrs(color: str, width: float, dash: str | None) -> str:
    d = f' stroke-dasharray="{dash}"' if dash else ""
    return f'fill="none" stroke="{color}" stroke-width="{width:g}"{d} stroke-linejoin="round"'


class Plot:
    """One chart: add bands, curves and lines in data coordinates, then render() the SVG document."""

    def __init__(self, title: str, xlabel: str, ylabel: str, width: int = 1000, height: int = 420) -> None:
        self.title, self.xlabel, self.ylabel, self.width, self.height = title, xlabel, ylabel, width, height
        self.under: list[Draw] = []  # below the grid: the phase bands
        self.items: list[Draw] = []
        self.over: list[Draw] = []  # texts, unclipped
        self.legend: list[Entry] = []
        self.xs: list[float] = []
        self.ys: list[float] = []
        self.xlim: tuple[float | None, float | None] = (None, None)
        self.ylim: tuple[float | None, float | None] = (None, None)
        self.ylog = False

    def _extent(self, xs: Iterable[float], ys: Iterable[float]) -> None:
        self.xs += [float(x) for x in xs if _finite(float(x))]
        self.ys += [float(y) for y in ys if _finite(float(y))]

    def _entry(self, entry: Entry) -> None:
        if entry.label:  # unlabelled: drawn, not in the legend
            self.legend.append(entry)

    def band(self, x0: float, x1: float, color: str, label: str | None = None, opacity: float = 0.35) -> None:
        """A full-height span from x0 to x1."""
        self._extent([x0, x1], [])
        self.under.append(lambda sx, sy: f'<rect x="{sx(x0):.1f}" y="{sy.b:.1f}" width="{sx(x1) - sx(x0):.1f}" '
                                         f'height="{sy.a - sy.b:.1f}" fill="{color}" fill-opacity="{opacity:g}"/>')
        self._entry(Entry(label or "", color, patch=True, opacity=opacity))

    def line(self, xs: Sequence[float], ys: Sequence[float], color: str, label: str | None = None,
             width: float = 1.5, dash: str | None = None, marker: bool = False, step: bool = False) -> None:
        """A polyline (step: where="post" steps), broken at missing values; marker: a dot on each point."""
        xs, ys = [float(x) for x in xs], [float(y) for y in ys]
        self._extent(xs, ys)
        pts = step_points(xs, ys) if step else list(zip(xs, ys, strict=True))

        def draw(sx: Scale, sy: Scale) -> str:
            out = f'<path d="{path_d(pts, sx, sy)}" {_line_attrs(color, width, dash)}/>'
            if marker:
                out += "".join(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}"/>'
                               for x, y in zip(xs, ys, strict=True) if sx.valid(x) and sy.valid(y))
            return out
        self.items.append(draw)
        self._entry(Entry(label or "", color, width=width, dash=dash, marker=marker))

    def stack(self, xs: Sequence[float], layers: Sequence[tuple[Sequence[float], str, str]],
              opacity: float = 0.55) -> None:
        """Stacked areas in post steps, the first layer at the bottom: (values, colour, label) each."""
        xs, base = [float(x) for x in xs], [0.0] * len(xs)
        for values, color, label in layers:
            top = [b + (float(v) if _finite(float(v)) else 0.0) for b, v in zip(base, values, strict=True)]
            self.items.append(self._area(step_points(xs, top) + step_points(xs, base)[::-1], color, opacity))
            self._entry(Entry(label or "", color, patch=True, opacity=opacity))
            self._extent(xs, top)
            base = top

    @staticmethod
    def _area(ring: list[tuple[float, float]], color: str, opacity: float) -> Draw:
        return lambda sx, sy: f'<path d="{path_d(ring, sx, sy)}Z" fill="{color}" fill-opacity="{opacity:g}"/>'

    def hline(self, y: float, color: str, label: str | None = None, width: float = 2, dash: str | None = None) -> None:
        self._extent([], [y])
        self.items.append(lambda sx, sy: f'<path d="M{sx.a:.1f},{sy(y):.1f}H{sx.b:.1f}" '
                                         f'{_line_attrs(color, width, dash)}/>')
        self._entry(Entry(label or "", color, width=width, dash=dash))

    def vline(self, x: float, color: str, label: str | None = None, text: str | None = None, width: float = 1.5,
              dash: str | None = DASHED) -> None:
        """A vertical line at x; text written upright beside it, left of the line, from the plot's top down."""
        self._extent([x], [])
        self.items.append(lambda sx, sy: f'<path d="M{sx(x):.1f},{sy.a:.1f}V{sy.b:.1f}" '
                                         f'{_line_attrs(color, width, dash)}/>')
        if text:
            self.over.append(lambda sx, sy: f'<text transform="translate({sx(x) - 4:.1f},{sy.b + 4:.1f}) '
                                            f'rotate(-90)" text-anchor="end" font-size="{SMALL_PX}" '
                                            f'fill="{color}">{esc(text)}</text>')
        self._entry(Entry(label or "", color, width=width, dash=dash))

    def note(self, text: str, color: str) -> None:
        """A note in the plot's top right corner (one: a second would cover the first)."""
        self.over.append(lambda sx, sy: f'<text x="{sx.b - 6:.1f}" y="{sy.b + 16:.1f}" text-anchor="end" '
                                        f'font-size="{TICK_PX}" fill="{color}">{esc(text)}</text>')

    def _range(self, values: list[float], lim: tuple[float | None, float | None], log: bool) -> tuple[float, float]:
        vals = [v for v in values if v > 0] if log else values
        lo = lim[0] if lim[0] is not None else min(vals, default=1.0 if log else 0.0)
        hi = lim[1] if lim[1] is not None else max(vals, default=10.0 if log else 1.0)
        if log:
            lo, hi = (lo, hi) if hi > lo else (lo / 10, lo * 10)
            return log_range(lo, hi) if lim == (None, None) else (lo, hi)
        if hi <= lo:
            lo, hi = lo - 1, hi + 1
        pad = 0.05 * (hi - lo)  # as matplotlib's default margins, on the sides left automatic
        return (lo if lim[0] is not None else lo - pad), (hi if lim[1] is not None else hi + pad)

    def _minor(self, lo: float, hi: float) -> list[float]:
        """2..9 times each power of ten: unlabelled marks that show a log axis for what it is."""
        if not self.ylog:
            return []
        return [v for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)))
                for v in (m * 10.0 ** k for m in range(2, 10)) if lo <= v <= hi]

    def render(self) -> str:
        (x0, x1), (y0, y1) = self._range(self.xs, self.xlim, False), self._range(self.ys, self.ylim, self.ylog)
        top, bottom = 34.0, self.height - 50.0
        yt = log_ticks(y0, y1) if self.ylog else ticks(y0, y1, max(2, int((bottom - top) // 35)))
        ystep = 0.0 if self.ylog or len(yt) < 2 else yt[1] - yt[0]
        ylabels = [tick_label(v, v if self.ylog else ystep) for v in yt]
        legend_w = max((text_width(e.label, SMALL_PX) for e in self.legend), default=0) + 44
        left = 20 + LABEL_PX + max((text_width(s, TICK_PX) for s in ylabels), default=0)
        right = self.width - (legend_w + 22 if self.legend else 20)
        sx, sy = Scale(x0, x1, left, right), Scale(y0, y1, bottom, top, self.ylog)
        xt = ticks(x0, x1, max(2, int((right - left) // 70)))
        xlabels = [tick_label(v, xt[1] - xt[0] if len(xt) > 1 else 0.0) for v in xt]
        w, h = self.width, self.height
        out = [f'<?xml version="1.0" encoding="utf-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="{w}" '
               f'height="{h}" viewBox="0 0 {w} {h}" font-family="{FONT}" font-size="{TICK_PX}">',
               f"<title>{esc(self.title)}</title>", f'<rect width="{w}" height="{h}" fill="white"/>',
               f'<clipPath id="plot"><rect x="{left:.1f}" y="{top:.1f}" width="{right - left:.1f}" '
               f'height="{bottom - top:.1f}"/></clipPath>', '<g clip-path="url(#plot)">']
        out += [d(sx, sy) for d in self.under]
        grid = [f"M{sx(v):.1f},{top:.1f}V{bottom:.1f}" for v in xt] + [f"M{left:.1f},{sy(v):.1f}H{right:.1f}"
                                                                         for v in yt]
        out.append(f'<path d="{"".join(grid)}" stroke="#b0b0b0" stroke-opacity="0.5" stroke-width="0.8"/>')
        out += [d(sx, sy) for d in self.items]
        out.append("</g>")
        out.append(f'<rect x="{left:.1f}" y="{top:.1f}" width="{right - left:.1f}" height="{bottom - top:.1f}" '
                   'fill="none" stroke="black" stroke-width="0.8"/>')
        marks = [f"M{sx(v):.1f},{bottom:.1f}v4" for v in xt] + [f"M{left:.1f},{sy(v):.1f}h-4" for v in yt]
        marks += [f"M{left:.1f},{sy(v):.1f}h-2" for v in self._minor(y0, y1)]
        out.append(f'<path d="{"".join(marks)}" stroke="black" stroke-width="0.8"/>')
        out += [f'<text x="{sx(v):.1f}" y="{bottom + 18:.1f}" text-anchor="middle">{esc(s)}</text>'
                for v, s in zip(xt, xlabels, strict=True)]
        out += [f'<text x="{left - 7:.1f}" y="{sy(v) + 4:.1f}" text-anchor="end">{esc(s)}</text>'
                for v, s in zip(yt, ylabels, strict=True)]
        out += [f'<text x="{(left + right) / 2:.1f}" y="{h - 12:.1f}" text-anchor="middle" '
                f'font-size="{LABEL_PX}">{esc(self.xlabel)}</text>',
                f'<text transform="translate({LABEL_PX + 4},{(top + bottom) / 2:.1f}) rotate(-90)" '
                f'text-anchor="middle" font-size="{LABEL_PX}">{esc(self.ylabel)}</text>',
                f'<text x="{(left + right) / 2:.1f}" y="22" text-anchor="middle" '
                f'font-size="{TITLE_PX}">{esc(self.title)}</text>']
        out += [d(sx, sy) for d in self.over]
        if self.legend:
            out.append(self._legend(right + 12, top, legend_w))
        out.append("</svg>\n")
        return "\n".join(out)

    def _legend(self, x: float, y: float, width: float) -> str:
        row = SMALL_PX + 7
        out = [f'<g class="legend" font-size="{SMALL_PX}"><rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" '
               f'height="{len(self.legend) * row + 8}" fill="white" stroke="#cccccc" rx="3"/>']
        for i, e in enumerate(self.legend):
            cy = y + 4 + row * i + row / 2
            if e.patch:
                out.append(f'<rect x="{x + 8:.1f}" y="{cy - 5:.1f}" width="24" height="10" fill="{e.color}" '
                           f'fill-opacity="{e.opacity:g}"/>')
            else:
                out.append(f'<path d="M{x + 8:.1f},{cy:.1f}h24" {_line_attrs(e.color, e.width, e.dash)}/>')
                if e.marker:
                    out.append(f'<circle cx="{x + 20:.1f}" cy="{cy:.1f}" r="2.5" fill="{e.color}"/>')
            out.append(f'<text x="{x + 38:.1f}" y="{cy + 4:.1f}">{esc(e.label)}</text>')
        out.append("</g>")
        return "\n".join(out)
