"""The report's four charts on one time axis: weight with events, error rates, latency, evidence."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import svg
from .svg import Frame, e
from .timeline import MetricPoint, TickEntry

# The decision (or trigger) an event marker stands for.
MARKED = {"start": "start", "advance": "advance", "pause": "pause", "resume": "resume", "promote": "promote",
          "promoted": "promote", "rollback": "rollback"}
LABELLED = {"rollback": "rolled back", "promoted": "promoted"}
PALETTE = ("m1", "m2", "m3", "m4", "m5", "m6")  # classes of the evidence lines, one per metric


@dataclass(frozen=True)
class Axis:
    """The shared time axis: from the first entry to now (or to the last entry once the rollout ended)."""

    t0: float
    t1: float

    def frame(self, y0: float, y1: float, *, height: int = 170, log: bool = False) -> Frame:
        return Frame(self.t0, self.t1, y0, y1, height=height, log=log)

    def ticks(self) -> list[tuple[float, str]]:
        span = self.t1 - self.t0
        step = next((s for s in (10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200)
                     if span / s <= 10), 86400)
        return [(self.t0 + k * step, relative(k * step)) for k in range(int(span // step) + 1)]


def relative(seconds: float) -> str:
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m" if m else f"{h}h"
    if m:
        return f"{m}m{sec:02d}s" if sec else f"{m}m"
    return f"{sec}s"


def metric(entry: TickEntry, name: str) -> MetricPoint | None:
    return next((m for m in entry.metrics if m.name == name), None)


def series(ticks: Sequence[TickEntry], name: str, value: Callable[[MetricPoint], float | None]
           ) -> list[tuple[float, float | None]]:
    """(t, value) for every judged tick; None where the metric had no value (the line breaks there)."""
    out: list[tuple[float, float | None]] = []
    for t in ticks:
        if not t.judged:
            continue
        m = metric(t, name)
        out.append((t.at, None if m is None else value(m)))
    return out


def _present(points: Sequence[tuple[float, float | None]]) -> list[tuple[float, float]]:
    return [(t, v) for t, v in points if v is not None]


def _last(points: Sequence[tuple[float, float | None]]) -> tuple[float, float] | None:
    present = _present(points)
    return present[-1] if present else None


def _limit(ticks: Sequence[TickEntry], name: str) -> float | None:
    values = _present(series(ticks, name, lambda m: m.limit))
    return values[-1][1] if values else None


def _chart(f: Frame, label: str, body: str, axis: Axis, unit: str, yticks: list[tuple[float, str]]) -> str:
    return (svg.open_svg(f, label) + svg.value_axis(f, yticks, unit) + svg.time_axis(f, axis.ticks()) + body
            + "</svg>")


# ---------------------------------------------------------------------------------------------- weight


def weight_points(ticks: Sequence[TickEntry], current: float | None, end: float) -> list[tuple[float, float]]:
    """The weight as a staircase: a tick's weight held since the previous entry; a start's from its time."""
    points: list[tuple[float, float]] = []
    prev_at: float | None = None
    for t in ticks:
        if t.weight is not None:
            since = t.at if t.decision == "start" or prev_at is None else prev_at
            if not points or points[-1][1] != t.weight:
                points.append((since, t.weight))
        prev_at = t.at
    if ticks and current is not None:
        if not points or points[-1][1] != current:
            points.append((ticks[-1].at, current))
    if points:
        points.append((max(end, points[-1][0]), points[-1][1]))
    return points


def _event_title(t: TickEntry, axis: Axis) -> str:
    reasons = "; ".join(t.reasons)
    weight = "" if t.weight is None else f" at {t.weight:g} %"
    return f"{t.decision} ({t.trigger}){weight}, {relative(t.at - axis.t0)}: {reasons}"


def weight_chart(ticks: Sequence[TickEntry], axis: Axis, current: float | None) -> str:
    f = axis.frame(0.0, 100.0, height=190)
    points = weight_points(ticks, current, axis.t1)
    body = [svg.polyline(f, points, "weight", step=True)]
    previous = ""
    for t in ticks:
        kind = MARKED.get(t.decision)
        repeated, previous = t.decision == previous, t.decision
        if kind is None or repeated:  # a replay advances tick after tick: its first advance is marked
            continue
        y = f.y(t.weight or 0.0)  # a rollback's entry holds the weight it took the traffic from
        body.append(svg.marker(f.x(t.at), y, kind, _event_title(t, axis), label=LABELLED.get(t.decision)))
        if t.trigger == "alert":
            body.append(svg.marker(f.x(t.at), svg.TOP + 8, "alert", _event_title(t, axis), label="alert"))
    body.append(svg.end_label(f, points[-1] if points else None, "weight", "canary weight"))
    yticks = [(v, f"{v:g}") for v in (0, 25, 50, 75, 100)]
    return _chart(f, "canary weight (%) over time, with the rollout's events", "".join(body), axis, "%", yticks)


# ---------------------------------------------------------------------------------------------- error rate


def interval_rates(ticks: Sequence[TickEntry]) -> list[tuple[float, float | None, float | None]]:
    """(t, canary %, stable %) per interval: the error ratio's step-window counts, differenced."""
    out: list[tuple[float, float | None, float | None]] = []
    prev: tuple[float, float, float, float] | None = None
    for t in ticks:
        if t.decision in ("start", "advance", "resume"):
            prev = None  # the judge's window restarts: its counts start again from zero
        if not t.judged:
            continue
        m = metric(t, "error_ratio")
        if m is None or m.counts is None:
            out.append((t.at, None, None))
            continue
        cur = m.counts
        base = prev if prev is not None and all(c >= p for c, p in zip(cur, prev, strict=True)) else (0, 0, 0, 0)
        d = [c - p for c, p in zip(cur, base, strict=True)]
        out.append((t.at, 100 * d[0] / d[1] if d[1] > 0 else None, 100 * d[2] / d[3] if d[3] > 0 else None))
        prev = cur
    return out


def error_chart(ticks: Sequence[TickEntry], axis: Axis) -> str:
    rates = interval_rates(ticks)
    canary = [(t, c) for t, c, _ in rates]
    stable = [(t, s) for t, _, s in rates]
    bands = [(t.at, m.band[0], m.band[1]) for t in ticks if t.judged
             and (m := metric(t, "error_rate")) is not None and m.band is not None]
    limit = _limit(ticks, "error_rate")
    values = [v for _, v in _present(canary) + _present(stable)] + ([limit] if limit is not None else [])
    top = max([*values, 0.1]) * 1.2
    f = axis.frame(0.0, top)
    body = [svg.band(f, bands, "band canary-band"), svg.segments(f, stable, "stable"),
            svg.segments(f, canary, "canary"), svg.dots(f, _present(canary), "canary-dot")]
    if limit is not None:
        body.append(svg.hline(f, limit, "limit", f"limit {limit:g} %"))
    body.append(svg.end_labels(f, [(_last(canary), "canary", "canary"), (_last(stable), "stable", "stable")]))
    yticks = [(v, f"{v:g}") for v in svg.linear_ticks(0.0, top)]
    return _chart(f, "5xx rate per interval (%), canary and stable, with the canary's band and the limit",
                  "".join(body), axis, "5xx %", yticks)


# ---------------------------------------------------------------------------------------------- latency


def latency_chart(ticks: Sequence[TickEntry], axis: Axis) -> str:
    name = "latency_p95" if any(metric(t, "latency_p95") for t in ticks) else "latency_ratio"
    canary = series(ticks, name, lambda m: m.canary)
    stable = series(ticks, name, lambda m: m.stable)
    limit = _limit(ticks, "latency_p95")
    values = [v for _, v in _present(canary) + _present(stable)] + ([limit] if limit is not None else [])
    top = max([*values, 1.0]) * 1.15
    f = axis.frame(0.0, top)
    body = [svg.segments(f, stable, "stable"), svg.segments(f, canary, "canary")]
    if limit is not None:
        body.append(svg.hline(f, limit, "limit", f"limit {limit:g} ms"))
    body.append(svg.end_labels(f, [(_last(canary), "canary", "canary"), (_last(stable), "stable", "stable")]))
    yticks = [(v, f"{v:g}") for v in svg.linear_ticks(0.0, top)]
    return _chart(f, "P95 latency (ms) by histogram bucket bounds, canary and stable, with the limit",
                  "".join(body), axis, "ms", yticks)


# ---------------------------------------------------------------------------------------------- evidence


def evidence_metrics(ticks: Sequence[TickEntry]) -> list[str]:
    names: list[str] = []
    for t in ticks:
        for m in t.metrics:
            if m.action == "rollback" and m.adjusted_p is not None and m.name not in names:
                names.append(m.name)
    return names


def crossings(points: Sequence[tuple[float, float | None]], alpha: float) -> list[tuple[float, float]]:
    """Where the adjusted p-value falls to alpha or below, having been above it (or at its first value)."""
    out: list[tuple[float, float]] = []
    above = True
    for t, p in points:
        if p is None:
            continue
        if p <= alpha and above:
            out.append((t, p))
        above = p > alpha
    return out


def evidence_chart(ticks: Sequence[TickEntry], axis: Axis, alpha: float) -> str:
    names = evidence_metrics(ticks)
    lines = {n: series(ticks, n, lambda m: m.adjusted_p) for n in names}
    smallest = min([p for pts in lines.values() for _, p in _present(pts) if p > 0] + [alpha / 10])
    f = axis.frame(max(smallest / 2, 1e-16), 1.0, height=210, log=True)
    body = [svg.hline(f, alpha, "alpha", f"α = {alpha:g}: a rollback metric fails below this line", inside=True)]
    labels: list[tuple[tuple[float, float] | None, str, str]] = []
    for i, n in enumerate(names):
        cls = PALETTE[i % len(PALETTE)]
        body.append(svg.segments(f, lines[n], f"evidence {cls}"))
        labels.append((_last(lines[n]), cls, n))
        for t, p in crossings(lines[n], alpha):
            x, y = svg.num(f.x(t)), svg.num(f.y(p))
            body.append(f'<g class="crossing" data-metric="{e(n)}"><title>{e(n)}: Holm-adjusted anytime p = '
                        f'{p:.2g} ≤ α = {alpha:g} at {relative(t - axis.t0)}</title>'
                        f'<circle cx="{x}" cy="{y}" r="6"/><text class="label crossing-text" x="{x}" y="{y}" '
                        f'dy="18" text-anchor="middle">{e(n)} crossed</text></g>')
    body.append(svg.end_labels(f, labels))
    yticks = [(v, f"{v:g}") for v in svg.log_ticks(f.y0, 1.0)]
    return _chart(f, "evidence against the canary: each rollback metric's Holm-adjusted anytime p-value "
                     "(log scale); it fails once below α", "".join(body), axis, "p", yticks)


def has_values(ticks: Sequence[TickEntry]) -> bool:
    return any(t.judged and t.metrics for t in ticks)


def span(ticks: Sequence[TickEntry], end: float | None) -> Axis:
    t0 = ticks[0].at if ticks else 0.0
    t1 = max([t.at for t in ticks] + ([end] if end is not None else []) + [t0])
    if t1 - t0 < 10:
        t1 = t0 + 10
    return Axis(t0, t1 + (t1 - t0) * 0.02)


def finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)
