"""The judge's closed vocabulary: verdicts, decisions, and the records that carry their evidence."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

from .frozen import lazy_fields


class Verdict(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"
    WARN = "warn"
    SKIPPED = "skipped"


class Decision(str, Enum):
    ADVANCE = "advance"
    HOLD = "hold"
    ROLLBACK = "rollback"


class Action(str, Enum):
    """What exceeding a metric's limit does (the seed's "Action if Exceeded" column)."""

    ROLLBACK = "rollback"
    WARN = "warn"


@dataclass(frozen=True)
class MetricResult:
    name: str
    verdict: Verdict
    reason: str
    action: Action
    p_value: float | None = None  # fixed-horizon, over the current step
    anytime_p_value: float | None = None  # valid however often it is read
    adjusted_p_value: float | None = None  # anytime p-value after Holm's correction across metrics
    ratio: float | None = None
    ci: tuple[float, float] | None = None
    canary: float | None = None  # the canary's value in the metric's unit (%, ms)
    stable: float | None = None
    limit: float | None = None
    unit: str = ""
    evidence: dict[str, float | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "verdict": self.verdict.value,
            "action": self.action.value,
            "p_value": _num(self.p_value),
            "anytime_p_value": _num(self.anytime_p_value),
            "adjusted_p_value": _num(self.adjusted_p_value),
            "ratio": _num(self.ratio),
            # JSON has no infinity: an unbounded end of an interval is null.
            "ci": None if self.ci is None else [_num(self.ci[0]), _num(self.ci[1])],
            "canary": _num(self.canary),
            "stable": _num(self.stable),
            "limit": _num(self.limit),
            "unit": self.unit,
            "reason": self.reason,
            "evidence": {k: _num(v) for k, v in self.evidence.items()},
        }


# The judge formats a verdict's reason, and gathers its evidence, on the first read (a daemon's tick reads few).
lazy_fields(MetricResult, "reason", "evidence")


@dataclass(frozen=True)
class Judgement:
    decision: Decision
    at: float
    reasons: tuple[str, ...]
    metrics: tuple[MetricResult, ...]
    gates_met: bool
    timed_out: bool = False
    canary_requests: float = 0.0
    stable_requests: float = 0.0
    elapsed: float = 0.0

    def metric(self, name: str) -> MetricResult | None:
        return next((m for m in self.metrics if m.name == name), None)

    def to_json(self) -> dict[str, object]:
        return {
            "decision": self.decision.value,
            "at": self.at,
            "reasons": list(self.reasons),
            "gates_met": self.gates_met,
            "timed_out": self.timed_out,
            "elapsed": self.elapsed,
            "canary_requests": self.canary_requests,
            "stable_requests": self.stable_requests,
            "metrics": [m.to_json() for m in self.metrics],
        }


def _num(x: float | None) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return float(x)


lazy_fields(Judgement, "reasons")  # the decision's reasons too: formatted when read
