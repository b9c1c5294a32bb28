"""Differences of cumulative snapshots: the current step's window, and one tick's increment."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .distribution import delta_buckets, histogram_quantile
from .snapshot import ArmSnapshot, Snapshot

COUNTER_FIELDS = ("requests", "errors", "successes", "buckets")


@dataclass(slots=True)  # made every tick and never kept: not frozen, whose __init__ costs µs per field
class ArmWindow:
    """Counts accumulated between two snapshots; gauges as read at the later one."""

    requests: float | None
    errors: float | None
    successes: float | None
    buckets: tuple[tuple[float, float], ...] | None
    cpu: float | None
    memory: float | None
    quantiles: dict[float, float | None] | None = None  # histogram_quantile of the buckets, as read (quantile)

    def quantile(self, q: float) -> float | None:
        """histogram_quantile(q, buckets), computed once per window: two checks read the same P95s."""
        if self.quantiles is None:
            self.quantiles = {}
        elif q in self.quantiles:
            return self.quantiles[q]
        value = self.quantiles[q] = None if self.buckets is None else histogram_quantile(q, self.buckets)
        return value

    @property
    def non_successes(self) -> float | None:
        # Where 2xx are not reported, success is whatever is not a 5xx (the replay format's rule).
        if self.requests is None:
            return None
        if self.successes is not None:
            return max(0.0, self.requests - self.successes)
        if self.errors is not None:
            return self.errors
        return None


def _sub(later: float | None, earlier: float | None) -> float | None:
    if later is None or earlier is None:
        return None
    # A counter that went backwards is a reset the source should have absorbed; never a negative count
    # (max(0.0, d) written out: it runs 12 times a tick).
    d = later - earlier
    return d if d > 0.0 else 0.0


def arm_window(later: ArmSnapshot, earlier: ArmSnapshot) -> ArmWindow:
    buckets = None
    if later.buckets is not None and earlier.buckets is not None:
        try:
            buckets = delta_buckets(later.buckets, earlier.buckets)
        except ValueError:
            buckets = None  # bucket layout changed (a redeploy with new buckets): no comparable data
    return ArmWindow(
        requests=_sub(later.requests, earlier.requests),
        errors=_sub(later.errors, earlier.errors),
        successes=_sub(later.successes, earlier.successes),
        buckets=buckets,
        cpu=later.cpu,
        memory=later.memory,
    )


def fill_baseline(baseline: ArmSnapshot, current: ArmSnapshot) -> ArmSnapshot:
    """A counter that first appears after the baseline starts counting from where it first appeared."""
    if baseline.requests is not None and baseline.errors is not None and baseline.successes is not None \
            and baseline.buckets is not None:
        return baseline  # the usual case, every tick: nothing can be missing
    missing = {f: getattr(current, f) for f in COUNTER_FIELDS
               if getattr(baseline, f) is None and getattr(current, f) is not None}
    return replace(baseline, **missing) if missing else baseline


def fill_snapshot_baseline(baseline: Snapshot, current: Snapshot) -> Snapshot:
    canary = fill_baseline(baseline.canary, current.canary)
    stable = fill_baseline(baseline.stable, current.stable)
    if canary is baseline.canary and stable is baseline.stable:
        return baseline
    return replace(baseline, canary=canary, stable=stable)
