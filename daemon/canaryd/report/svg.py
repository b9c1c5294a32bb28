"""Small helpers for inline SVG charts: scales, axes, lines, bands, markers. Every text is escaped here."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape

WIDTH = 960
LEFT, RIGHT, TOP, BOTTOM = 64, 150, 14, 26  # the right margin holds the series' labels

Point = tuple[float, float]


def e(text: object) -> str:
    """Escaped for HTML text and attribute values alike."""
    return escape(str(text), quote=True)


def num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".") if math.isfinite(x) else "0"


@dataclass(frozen=True)
class Frame:
    """One chart's drawing area and its scales: time on x (shared by every chart), a value on y."""

    t0: float
    t1: float
    y0: float  # the value at the bottom
    y1: float  # the value at the top
    height: int = 170
    log: bool = False

    @property
    def plot_bottom(self) -> float:
        return self.height - BOTTOM

    def x(self, t: float) -> float:
        span = self.t1 - self.t0 or 1.0
        return LEFT + (WIDTH - LEFT - RIGHT) * (min(max(t, self.t0), self.t1) - self.t0) / span

    def y(self, v: float) -> float:
        lo, hi, v = self.y0, self.y1, v
        if self.log:
            lo, hi, v = math.log10(lo), math.log10(hi), math.log10(max(v, self.y0))
        span = hi - lo or 1.0
        frac = min(max((v - lo) / span, 0.0), 1.0)
        return TOP + (self.plot_bottom - TOP) * (1.0 - frac)


def open_svg(f: Frame, label: str) -> str:
    return (f'<svg viewBox="0 0 {WIDTH} {f.height}" role="img" aria-label="{e(label)}" '
            f'xmlns="http://www.w3.org/2000/svg"><title>{e(label)}</title>')


def time_axis(f: Frame, ticks: Iterable[tuple[float, str]]) -> str:
    out = [f'<line class="axis" x1="{LEFT}" y1="{num(f.plot_bottom)}" x2="{WIDTH - RIGHT}" '
           f'y2="{num(f.plot_bottom)}"/>']
    for t, text in ticks:
        x = num(f.x(t))
        out.append(f'<line class="grid" x1="{x}" y1="{TOP}" x2="{x}" y2="{num(f.plot_bottom)}"/>'
                   f'<text class="tick" x="{x}" y="{num(f.height - 8)}" text-anchor="middle">{e(text)}</text>')
    return "".join(out)


def value_axis(f: Frame, ticks: Iterable[tuple[float, str]], unit: str) -> str:
    out = [f'<text class="unit" x="4" y="{TOP + 4}">{e(unit)}</text>']
    for v, text in ticks:
        y = num(f.y(v))
        out.append(f'<line class="grid" x1="{LEFT}" y1="{y}" x2="{WIDTH - RIGHT}" y2="{y}"/>'
                   f'<text class="tick" x="{LEFT - 6}" y="{y}" dy="4" text-anchor="end">{e(text)}</text>')
    return "".join(out)


def linear_ticks(lo: float, hi: float, count: int = 4) -> list[float]:
    span = hi - lo
    if span <= 0:
        return [lo]
    raw = span / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    every = max(1, (b - a) // 6)
    return [10.0 ** k for k in range(b, a - 1, -every) if lo <= 10.0 ** k <= hi]


def polyline(f: Frame, points: Sequence[Point], cls: str, *, step: bool = False) -> str:
    """A line through (t, value) points; None-free. `step` draws a staircase (a value held until the next)."""
    if not points:
        return ""
    coords: list[str] = []
    prev_y: str | None = None
    for t, v in points:
        x, y = num(f.x(t)), num(f.y(v))
        if step and prev_y is not None:
            coords.append(f"{x},{prev_y}")
        coords.append(f"{x},{y}")
        prev_y = y
    return f'<polyline class="{e(cls)}" points="{" ".join(coords)}"/>'


def segments(f: Frame, points: Sequence[tuple[float, float | None]], cls: str) -> str:
    """A line broken where a value is missing."""
    out: list[str] = []
    run: list[Point] = []
    for t, v in (*points, (math.nan, None)):
        if v is None:
            if run:
                out.append(polyline(f, run, cls) if len(run) > 1 else dots(f, run, cls + " lone"))
            run = []
        else:
            run.append((t, v))
    return "".join(out)


def dots(f: Frame, points: Sequence[Point], cls: str, r: float = 2.2) -> str:
    return "".join(f'<circle class="{e(cls)}" cx="{num(f.x(t))}" cy="{num(f.y(v))}" r="{r}"/>' for t, v in points)


def band(f: Frame, rows: Sequence[tuple[float, float, float]], cls: str) -> str:
    """A shaded interval through (t, low, high) rows."""
    if len(rows) < 2:
        return ""
    upper = [f"{num(f.x(t))},{num(f.y(hi))}" for t, _, hi in rows]
    lower = [f"{num(f.x(t))},{num(f.y(lo))}" for t, lo, _ in reversed(rows)]
    return f'<polygon class="{e(cls)}" points="{" ".join(upper + lower)}"/>'


def hline(f: Frame, value: float, cls: str, label: str, *, inside: bool = False) -> str:
    """A horizontal line labelled at its right, or `inside` the plot at its left (clear of series' names)."""
    y = num(f.y(value))
    where = f'x="{LEFT + 4}" y="{y}" dy="-4"' if inside else f'x="{WIDTH - RIGHT + 6}" y="{y}" dy="4"'
    return (f'<line class="{e(cls)}" x1="{LEFT}" y1="{y}" x2="{WIDTH - RIGHT}" y2="{y}"><title>{e(label)}</title>'
            f'</line><text class="label {e(cls)}-text" {where}>{e(label)}</text>')


def end_label(f: Frame, point: Point | None, cls: str, label: str) -> str:
    """The series' name at the right of its last point."""
    if point is None:
        return ""
    return (f'<text class="label {e(cls)}-text" x="{WIDTH - RIGHT + 6}" y="{num(f.y(point[1]))}" dy="4">'
            f'{e(label)}</text>')


def end_labels(f: Frame, items: Sequence[tuple[Point | None, str, str]], gap: float = 12.0) -> str:
    """Series names at the right of their last points, moved apart where they would overlap."""
    placed: list[tuple[float, str, str]] = sorted((f.y(p[1]), cls, label) for p, cls, label in items if p is not None)
    out: list[str] = []
    floor = -math.inf
    for y, cls, label in placed:
        y = max(y, floor + gap)
        floor = y
        out.append(f'<text class="label {e(cls)}-text" x="{WIDTH - RIGHT + 6}" y="{num(y)}" dy="4">{e(label)}</text>')
    return "".join(out)


def marker(x: float, y: float, kind: str, title: str, *, label: str | None = None) -> str:
    """An event on the time axis: a shape per kind, its description as a tooltip and, for some, a label."""
    shapes = {
        "start": f"M{num(x - 5)},{num(y - 6)} L{num(x + 6)},{num(y)} L{num(x - 5)},{num(y + 6)} Z",
        "advance": f"M{num(x)},{num(y - 7)} L{num(x + 6)},{num(y + 4)} L{num(x - 6)},{num(y + 4)} Z",
        "pause": f"M{num(x - 5)},{num(y - 6)} h3 v12 h-3 Z M{num(x + 2)},{num(y - 6)} h3 v12 h-3 Z",
        "resume": f"M{num(x - 5)},{num(y - 6)} L{num(x + 6)},{num(y)} L{num(x - 5)},{num(y + 6)} Z",
        "alert": f"M{num(x)},{num(y - 7)} L{num(x + 7)},{num(y + 6)} L{num(x - 7)},{num(y + 6)} Z",
        "promote": f"M{num(x)},{num(y - 7)} L{num(x + 7)},{num(y)} L{num(x)},{num(y + 7)} L{num(x - 7)},{num(y)} Z",
        "rollback": f"M{num(x - 6)},{num(y - 6)} L{num(x + 6)},{num(y + 6)} M{num(x + 6)},{num(y - 6)} "
                    f"L{num(x - 6)},{num(y + 6)}",
    }
    path = shapes.get(kind, shapes["advance"])
    text = "" if label is None else \
        f'<text class="label marker-text" x="{num(x)}" y="{num(y - 10)}" text-anchor="middle">{e(label)}</text>'
    return (f'<g class="marker marker-{e(kind)}" data-kind="{e(kind)}"><title>{e(title)}</title>'
            f'<path d="{path}"/>{text}</g>')


def vline(f: Frame, t: float, cls: str) -> str:
    x = num(f.x(t))
    return f'<line class="{e(cls)}" x1="{x}" y1="{TOP}" x2="{x}" y2="{num(f.plot_bottom)}"/>'
