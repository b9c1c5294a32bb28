"""Counter totals that cannot be true: a hold with the reason, never a decision.

Prometheus (or whatever answers in its place) can return data no real service produces: more 5xx than
requests, negative or non-finite totals, totals beyond what a float counts exactly, latency buckets that
are not cumulative. Judged as they are, such numbers read as "5xx rate 677 %" or "inf %" and roll a
healthy canary back. The reader checks the totals of every arm before it differences them.
"""

from __future__ import annotations

import math

from ..analysis.snapshot import ArmSnapshot

MAX_COUNT = float(2**53)  # above this a float no longer counts one request exactly
_COUNTERS = ("requests", "errors", "successes")
_GAUGES = ("cpu", "memory")


def implausible(arm: ArmSnapshot) -> str | None:
    """Why these totals cannot be real, or None when they can."""
    for check in (_not_counts, _not_gauges, _parts_above_whole, _buckets_problem):
        why = check(arm)
        if why is not None:
            return why
    return None


def _not_counts(arm: ArmSnapshot) -> str | None:
    for name in _COUNTERS:
        value = getattr(arm, name)
        if value is not None and not (math.isfinite(value) and 0 <= value <= MAX_COUNT):
            return f"{name} total {value!r} is not a count (finite, 0 to 2^53)"
    return None


def _not_gauges(arm: ArmSnapshot) -> str | None:
    for name in _GAUGES:
        value = getattr(arm, name)
        if value is not None and not (math.isfinite(value) and value >= 0):
            return f"{name} {value!r} is not a utilisation (finite, at least 0)"
    return None


def _parts_above_whole(arm: ArmSnapshot) -> str | None:
    if arm.requests is None:
        return None
    for name in ("errors", "successes"):
        part = getattr(arm, name)
        if part is not None and part > arm.requests:
            return f"{name} total {part:g} is above the requests total {arm.requests:g}"
    if arm.successes is not None and arm.errors is not None and arm.successes + arm.errors > arm.requests * (1 + 1e-9):
        return (f"2xx ({arm.successes:g}) and 5xx ({arm.errors:g}) totals add up to more than the "
                f"requests total {arm.requests:g}")
    return None


def _buckets_problem(arm: ArmSnapshot) -> str | None:
    if arm.buckets is None:
        return None
    previous = 0.0
    for le, count in arm.buckets:
        if not (math.isfinite(count) and 0 <= count <= MAX_COUNT):
            return f"latency bucket le={le:g} count {count!r} is not a count (finite, 0 to 2^53)"
        if count < previous:
            return f"latency buckets are not cumulative: le={le:g} holds {count:g}, fewer than the bucket below"
        previous = count
    return None
