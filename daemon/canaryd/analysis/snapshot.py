"""What the judge reads: one arm's counters at one moment.

Counters are cumulative since the rollout began (the daemon adds Prometheus `increase()` results tick by
tick, so values may be fractional). Every field may be None: that metric had no data at this moment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Buckets = tuple[tuple[float, float], ...]
"""Cumulative histogram buckets as (le, count), sorted by le, the last le being +Inf."""


@dataclass(frozen=True)
class ArmSnapshot:
    requests: float | None = None
    errors: float | None = None  # 5xx
    successes: float | None = None  # 2xx; None means requests - errors
    buckets: Buckets | None = None
    cpu: float | None = None  # utilisation, percent of the limit
    memory: float | None = None  # utilisation, percent of the limit


@dataclass(frozen=True)
class Snapshot:
    t: float  # seconds
    canary: ArmSnapshot
    stable: ArmSnapshot
    weight: float | None = None  # the canary's configured percentage at this moment, when known


INF = math.inf
