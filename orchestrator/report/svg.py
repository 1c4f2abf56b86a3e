"""Tiny inline-SVG line charts for the HTML report (no plotting dependency).

A chart shows one counter over time: the kernel's observed values as a solid
line with markers, the model's prediction as a dashed line, widened into a
shaded band where the model predicts a range (an unbounded range reaches the
top of the chart).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from html import escape

log = logging.getLogger(__name__)

_PAD_LEFT, _PAD_RIGHT, _PAD_TOP, _PAD_BOTTOM = 44, 12, 44, 34


@dataclass
class Series:
    """One line: `lo[i]`..`hi[i]` at `xs[i]`; lo == hi is a point, hi None is unbounded."""

    name: str
    xs: list[float]
    lo: list[float]
    hi: list[float | None]
    color: str
    dashed: bool = False


@dataclass
class _Frame:
    """Maps data coordinates to pixels."""

    x0: float
    x1: float
    y1: float
    width: int
    height: int

    def px(self, x: float) -> float:
        span = self.x1 - self.x0
        return _PAD_LEFT + (x - self.x0) / span * (self.width - _PAD_LEFT - _PAD_RIGHT)

    def py(self, y: float) -> float:
        plot_h = self.height - _PAD_TOP - _PAD_BOTTOM
        return _PAD_TOP + plot_h - y / self.y1 * plot_h


def nice_step(span: float, target_ticks: int = 4, integer: bool = True) -> float:
    """A 1/2/5×10^k tick step giving about `target_ticks` ticks over `span`
    (at least 1 when `integer`: counters are whole numbers)."""
    raw = max(span / max(target_ticks, 1), 1e-9)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if raw <= m * mag * (1 + 1e-9))
    return max(1.0, step) if integer else step


def _frame(series: list[Series], width: int, height: int) -> _Frame:
    xs = [x for s in series for x in s.xs] or [0.0]
    ys = [v for s in series for v in s.lo] + [v for s in series for v in s.hi if v is not None]
    x0, x1 = min(xs), max(xs)
    if x1 <= x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    top = max([1.0] + ys)
    step = nice_step(top)
    return _Frame(x0, x1, math.ceil(top * 1.05 / step) * step, width, height)


def _axes(f: _Frame, x_label: str) -> list[str]:
    out = []
    step = nice_step(f.y1)
    y = 0.0
    while y <= f.y1 + 1e-9:
        py = f.py(y)
        out.append(f'<line x1="{_PAD_LEFT}" y1="{py:.1f}" x2="{f.width - _PAD_RIGHT}" '
                   f'y2="{py:.1f}" stroke="#e3e3e3"/>')
        out.append(f'<text x="{_PAD_LEFT - 5}" y="{py + 4:.1f}" text-anchor="end">{y:g}</text>')
        y += step
    xstep = nice_step(f.x1 - f.x0, 5, integer=False)
    x = math.ceil(f.x0 / xstep - 1e-9) * xstep
    while x <= f.x1 + 1e-9:
        out.append(f'<text x="{f.px(x):.1f}" y="{f.height - _PAD_BOTTOM + 14}" '
                   f'text-anchor="middle">{round(x, 6):g}</text>')
        x += xstep
    base = f.py(0)
    out.append(f'<line x1="{_PAD_LEFT}" y1="{base:.1f}" x2="{f.width - _PAD_RIGHT}" '
               f'y2="{base:.1f}" stroke="#888"/>')
    out.append(f'<text x="{(f.width + _PAD_LEFT) / 2:.1f}" y="{f.height - 6}" '
               f'text-anchor="middle">{escape(x_label)}</text>')
    return out


def _band(f: _Frame, s: Series) -> list[str]:
    his = [f.y1 if h is None else h for h in s.hi]
    if all(h == lo for h, lo in zip(his, s.lo, strict=True)):
        return []
    upper = [f"{f.px(x):.1f},{f.py(h):.1f}" for x, h in zip(s.xs, his, strict=True)]
    lower = [f"{f.px(x):.1f},{f.py(lo):.1f}" for x, lo in zip(s.xs, s.lo, strict=True)]
    return [f'<polygon points="{" ".join(upper + lower[::-1])}" fill="{s.color}" '
            f'fill-opacity="0.15" stroke="none"/>']


def _line(f: _Frame, s: Series) -> list[str]:
    points = " ".join(f"{f.px(x):.1f},{f.py(y):.1f}" for x, y in zip(s.xs, s.lo, strict=True))
    dash = ' stroke-dasharray="6 4"' if s.dashed else ""
    out = [f'<polyline points="{points}" fill="none" stroke="{s.color}" '
           f'stroke-width="2"{dash}/>']
    if not s.dashed:
        out += [f'<circle cx="{f.px(x):.1f}" cy="{f.py(y):.1f}" r="3" fill="{s.color}"/>'
                for x, y in zip(s.xs, s.lo, strict=True)]
    return out


def _legend(f: _Frame, series: list[Series]) -> list[str]:
    out = []
    x = _PAD_LEFT + 4
    for s in series:
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        out.append(f'<line x1="{x}" y1="{_PAD_TOP - 14}" x2="{x + 22}" y2="{_PAD_TOP - 14}" '
                   f'stroke="{s.color}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{x + 26}" y="{_PAD_TOP - 10}">{escape(s.name)}</text>')
        x += 34 + 7 * len(s.name)
    return out


def line_chart(title: str, series: list[Series], *, x_label: str = "t (s)",
               width: int = 400, height: int = 220, css_class: str = "plot") -> str:
    """An inline `<svg>` element plotting `series`, titled `title` (escaped)."""
    for s in series:
        if not len(s.xs) == len(s.lo) == len(s.hi):
            raise ValueError(f"series {s.name!r}: xs, lo and hi differ in length")
    f = _frame(series, width, height)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="{escape(css_class)}" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{escape(title)}" font-family="sans-serif" font-size="11">',
             f"<title>{escape(title)}</title>",
             f'<text x="{_PAD_LEFT}" y="14" font-weight="bold" '
             f'font-size="12">{escape(title)}</text>']
    parts += _axes(f, x_label)
    # Bands under lines; dashed (model) lines over solid (kernel) ones so both stay visible.
    for s in series:
        parts += _band(f, s)
    for s in sorted(series, key=lambda s: s.dashed):
        parts += _line(f, s)
    parts += _legend(f, series)
    parts.append("</svg>")
    return "\n".join(parts)
