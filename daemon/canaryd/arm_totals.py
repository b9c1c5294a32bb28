"""Cumulative counters of a rollout: the sum of a tick's increments, and the empty start."""

from __future__ import annotations

from .analysis.snapshot import ArmSnapshot, Snapshot


def zero_snapshot(t: float, weight: float | None) -> Snapshot:
    # Every counter starts unknown, not at 0: the first increments then set them all at once, so that the
    # step's baseline never holds requests from one moment and 2xx or 5xx from a later one (that read
    # as a 0 % success rate), and a counter with no query (errors: null) stays "no data", not 0.
    empty = ArmSnapshot()
    return Snapshot(t=t, canary=empty, stable=empty, weight=weight)


def add_arm(total: ArmSnapshot, inc: ArmSnapshot) -> ArmSnapshot:
    """Cumulative counters plus one increment; gauges as last read."""
    def plus(a: float | None, b: float | None) -> float | None:
        if b is None:
            return a
        return b if a is None else a + b

    buckets = total.buckets
    if inc.buckets is not None:
        if buckets is not None and [le for le, _ in buckets] == [le for le, _ in inc.buckets]:
            buckets = tuple((le, a + b) for (le, a), (_, b) in zip(buckets, inc.buckets, strict=True))
        else:
            buckets = inc.buckets  # first histogram, or a new bucket layout: start over from here
    return ArmSnapshot(requests=plus(total.requests, inc.requests), errors=plus(total.errors, inc.errors),
                       successes=plus(total.successes, inc.successes), buckets=buckets,
                       cpu=inc.cpu, memory=inc.memory)
