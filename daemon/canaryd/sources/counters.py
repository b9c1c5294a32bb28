"""Counter totals read at successive ticks → the increments between them.

Summed counters drop when a pod restarts or goes away. A drop is taken as a reset: that tick's
increment is zero and the new total is the next baseline. It undercounts one tick at worst, and
never invents requests or errors.
"""

from __future__ import annotations

from ..analysis.snapshot import ArmSnapshot, Buckets


def _diff(cur: float | None, prev: float | None) -> float | None:
    if cur is None or prev is None:
        return None
    return cur - prev if cur >= prev else 0.0


def _diff_buckets(cur: Buckets | None, prev: Buckets | None) -> Buckets | None:
    if cur is None or prev is None or [le for le, _ in cur] != [le for le, _ in prev]:
        return None
    if any(c < p for (_, c), (_, p) in zip(cur, prev, strict=True)):
        return tuple((le, 0.0) for le, _ in cur)
    return tuple((le, c - p) for (le, c), (_, p) in zip(cur, prev, strict=True))


COUNTERS = ("requests", "errors", "successes", "buckets")


def advance(prev: ArmSnapshot | None, cur: ArmSnapshot) -> tuple[ArmSnapshot, ArmSnapshot]:
    """(the increment since `prev`, the new baseline).

    A counter that was read before and is missing now (its query failed) makes the whole tick count
    as no data and keeps the old baseline: the next tick's difference then covers both ticks. Taking
    requests without their errors would understate the error rate.
    """
    gauges = ArmSnapshot(cpu=cur.cpu, memory=cur.memory)
    if prev is None:
        return gauges, cur
    if any(getattr(prev, f) is not None and getattr(cur, f) is None for f in COUNTERS):
        return gauges, prev
    inc = ArmSnapshot(requests=_diff(cur.requests, prev.requests), errors=_diff(cur.errors, prev.errors),
                      successes=_diff(cur.successes, prev.successes),
                      buckets=_diff_buckets(cur.buckets, prev.buckets), cpu=cur.cpu, memory=cur.memory)
    return inc, cur
