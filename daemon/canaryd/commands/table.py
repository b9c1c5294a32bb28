"""Plain-text rendering of a judgement, for people at a terminal."""

from __future__ import annotations

import math

from ..analysis.verdicts import Judgement, MetricResult


def _value(x: float | None, unit: str) -> str:
    if x is None:
        return "-"
    if unit == "ms":
        return f"{x:.0f} ms"
    if unit == "%":
        return f"{x:.2f} %"
    return f"{x:.3g}"


def _p(p: float | None) -> str:
    if p is None:
        return "-"
    return f"{p:.3g}" if p >= 1e-4 else f"{p:.1e}"


def _ratio(m: MetricResult) -> str:
    if m.ratio is None:
        return "-"
    text = f"{m.ratio:.2f}"
    if m.ci is not None:
        hi = "inf" if math.isinf(m.ci[1]) else f"{m.ci[1]:.2f}"
        text += f" [{m.ci[0]:.2f}, {hi}]"
    return text


def _limit(m: MetricResult) -> str:
    if m.limit is None:
        return "-"
    if m.name.endswith("_ratio"):
        return f"{m.limit:g}×"
    return f"{m.limit:g} {m.unit}".strip()


def render_metrics(metrics: tuple[MetricResult, ...] | list[MetricResult]) -> str:
    header = ("metric", "verdict", "canary", "stable", "limit", "ratio [CI]", "p", "anytime p", "action")
    rows = [header]
    for m in metrics:
        rows.append((m.name, m.verdict.value.upper(), _value(m.canary, m.unit), _value(m.stable, m.unit),
                     _limit(m), _ratio(m), _p(m.p_value), _p(m.anytime_p_value), m.action.value))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def render_judgement(j: Judgement) -> str:
    lines = [f"decision: {j.decision.value.upper()} at t={j.at:g}s "
             f"(step time {j.elapsed:g}s, requests canary {j.canary_requests:.0f} / stable {j.stable_requests:.0f})"]
    if j.reasons:
        lines.append("reasons:")
        lines.extend(f"  - {r}" for r in j.reasons)
    if j.metrics:
        lines.append("")
        lines.append(render_metrics(j.metrics))
        lines.append("")
        lines.append("why, metric by metric:")
        lines.extend(f"  - {m.reason}" for m in j.metrics)
    return "\n".join(lines)
