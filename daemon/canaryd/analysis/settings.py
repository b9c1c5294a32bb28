"""The judge's settings, each written once with its default, its doc line and its validator kind.

`Thresholds` is also the config's ``thresholds:`` section and `JudgeBase` supplies the config's alpha,
min_requests, step_duration and tolerance_pp: adding a threshold is one field here plus the judge's check;
the config validation, its reference and its JSON schema follow from the field's metadata.

Metadata keys: ``doc`` (one line), ``kind`` (the name of a config validator, see canaryd.config.kinds),
and for thresholds ``action`` (rollback or warn, fixed) and ``when`` (the breach, as said in the doc).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["JudgeBase", "JudgeSettings", "Thresholds", "threshold_doc"]


def _setting(default: Any, doc: str, kind: str) -> Any:
    return field(default=default, metadata={"doc": doc, "kind": kind})


def _threshold(default: float, doc: str, kind: str, action: str, when: str) -> Any:
    return field(default=default, metadata={"doc": doc, "kind": kind, "action": action, "when": when})


def threshold_doc(metadata: Any) -> str:
    """A threshold's doc line as the config reference shows it: what, action, when, how to disable."""
    return f"{metadata['doc']} ({metadata['action']} {metadata['when']}; null disables)"


@dataclass(frozen=True)
class Thresholds:
    """Absolute and relative limits; None disables that check. The action on a breach is fixed per field."""

    error_rate: float | None = _threshold(5.0, "Canary 5xx rate, %", "percent", "rollback", "above")
    success_rate: float | None = _threshold(95.0, "Canary 2xx rate, %", "percent", "rollback", "below")
    latency_p95_ms: float | None = _threshold(500.0, "Canary P95 latency, ms", "positive", "warn", "above")
    latency_p99_ms: float | None = _threshold(1000.0, "Canary P99 latency, ms", "positive", "rollback", "above")
    error_ratio: float | None = _threshold(2.0, "Canary / stable error rate", "ratio", "rollback",
                                           "when significantly above")
    latency_ratio: float | None = _threshold(1.5, "Canary P95 / stable P95", "ratio", "rollback",
                                             "when significantly above")
    cpu: float | None = _threshold(80.0, "Canary CPU utilisation, %", "percent", "warn", "above")
    memory: float | None = _threshold(80.0, "Canary memory utilisation, %", "percent", "warn", "above")


@dataclass(frozen=True)
class JudgeBase:
    """The judge's step and test settings; the config's analysis settings take theirs from here."""

    alpha: float = _setting(0.05, "Family-wise error rate of the statistical tests", "alpha")
    min_requests: int = _setting(1000, "Requests per arm needed before a step may pass", "count")
    step_duration: float = _setting(300.0, "Minimum time at each step before it may pass", "duration")
    max_step_duration: float | None = 900.0  # the config's default is 3 × step_duration
    timeout_rollback: bool = False  # after max_step_duration a hold becomes: rollback (True) or pause
    # Pass bound: the canary error rate's upper confidence bound <= stable's rate + this many points.
    tolerance_pp: float = _setting(
        1.0, "A step passes when the canary error rate's upper bound is at most stable's + this many points "
        "(or the error ratio's upper bound is at most error_ratio)", "points")
    # The older, stricter pass rule: also no significant evidence that the canary is worse than stable at all.
    strict: bool = _setting(
        False, "A step passes only if the canary is also not significantly worse than stable at all", "bool")


@dataclass(frozen=True)
class JudgeSettings(Thresholds, JudgeBase):
    """What the judge needs from the config; `None` disables a threshold.

    Fields, in order: JudgeBase's, then Thresholds', then min_traffic_share (dataclass fields are collected
    from the bases in reverse method resolution order).
    """

    min_traffic_share: float = 0.5  # below this share of its weight, the canary "is not receiving traffic"
