"""Is the canary slower than `limit` × stable? An anytime-valid test that reads buckets only at their edges.

A histogram knows, exactly, how many requests were above each bucket edge, and nothing in between. Take two
edges b (for stable) and e >= limit·b (for the canary). If the canary's latencies are stable's scaled by
k <= limit (the whole distribution, P95 included, at most limit × stable's), then

    P(canary > e) = P(stable > e / k) <= P(stable > b),

so "more canary requests above e than stable requests above b" is evidence against k <= limit, at every
bucket layout and with no interpolation. A ±20 % swing of the whole system shifts both arms alike and leaves
this alone. Each pair is the rate-ratio test with r0 = 1 on those two counts (its binomial e-value is valid
for the hypergeometric law of equal rates too, by Hoeffding's convex ordering), and the pairs' e-values are
averaged with fixed equal weights, which is again an e-value. Without the scaling assumption a rejection
still means: at the quantile level of stable's edge b, the canary is more than limit × slower.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .counts import RatioSequential, ratio_sequential_start, ratio_sequential_update_many
from .distribution import bucket_counts
from .snapshot import Buckets


def edge_pairs(les: tuple[float, ...], limit: float) -> tuple[tuple[int, int], ...]:
    """(b, e) index pairs: every finite edge b > 0 and the first finite edge e >= limit·b."""
    finite = [i for i, le in enumerate(les) if math.isfinite(le)]
    pairs = []
    for i in finite:
        if les[i] <= 0:
            continue
        j = next((j for j in finite if les[j] >= limit * les[i] * (1 - 1e-9)), None)
        if j is not None:
            pairs.append((i, j))
    return tuple(pairs)


@dataclass(frozen=True)
class ScaleSequential:
    """State of the anytime-valid test of H0: canary latency <= limit × stable's (see the module doc)."""

    limit: float
    les: tuple[float, ...] = ()
    pairs: tuple[tuple[int, int], ...] = ()
    tests: tuple[RatioSequential, ...] = ()
    log_e: float = 0.0
    max_log_e: float = 0.0
    best: int = -1  # the pair with the most evidence, for the verdict's words

    @property
    def p_value(self) -> float:
        return min(1.0, math.exp(-self.max_log_e))


def scale_sequential_start(limit: float) -> ScaleSequential:
    if not (math.isfinite(limit) and limit > 0):
        raise ValueError(f"limit: must be a finite ratio > 0, got {limit!r}")
    return ScaleSequential(limit=float(limit))


def _tails(per_bucket: np.ndarray) -> list[float]:
    """[i]: the requests in buckets i and above (the last entry 0): above edge e is [e + 1]."""
    return [*np.cumsum(per_bucket[::-1])[::-1].tolist(), 0.0]


def scale_sequential_update(state: ScaleSequential, canary: Buckets, stable: Buckets) -> ScaleSequential:
    """Add one tick's (non-cumulative in time, cumulative over le) buckets of both arms."""
    les = tuple(float(le) for le, _ in canary)
    if les != tuple(float(le) for le, _ in stable):
        return state
    if not state.pairs or les != state.les:
        if state.pairs:
            return state  # the layout changed mid-rollout: these counts are not comparable with the past
        pairs = edge_pairs(les, state.limit)
        state = ScaleSequential(limit=state.limit, les=les, pairs=pairs,
                                tests=tuple(ratio_sequential_start(1.0) for _ in pairs))
        if not pairs:
            return state
    c, s = np.asarray(bucket_counts(canary)), np.asarray(bucket_counts(stable))
    n_c, n_s = float(c.sum()), float(s.sum())
    above_c, above_s = _tails(c), _tails(s)
    tests = ratio_sequential_update_many(state.tests, [above_c[e + 1] for _, e in state.pairs], n_c,
                                         [above_s[b + 1] for b, _ in state.pairs], n_s)
    logs = np.array([t.log_e for t in tests])
    top = float(logs.max())
    log_e = top + math.log(float(np.exp(logs - top).mean()))
    return ScaleSequential(limit=state.limit, les=les, pairs=state.pairs, tests=tests, log_e=log_e,
                           max_log_e=max(state.max_log_e, log_e), best=int(np.argmax(logs)))


def best_pair(state: ScaleSequential) -> tuple[float, float] | None:
    """(stable edge b, canary edge e) of the pair with the most evidence, in seconds."""
    if state.best < 0:
        return None
    b, e = state.pairs[state.best]
    return state.les[b], state.les[e]


def quantile_bucket(q: float, buckets: Buckets) -> tuple[float, float] | None:
    """The bucket (lo, hi] that holds the q-quantile: all a histogram can say about it, no interpolation."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    rank = q * total
    lo = 0.0
    for le, count in buckets:
        if count >= rank:
            return lo, le
        lo = le
    return lo, math.inf


def too_coarse(bucket: tuple[float, float], limit: float) -> bool:
    """A bucket wider than the limit cannot tell a canary inside the limit from one beyond it."""
    lo, hi = bucket
    return lo <= 0 or math.isinf(hi) or hi > limit * lo * (1 + 1e-9)


def surely_above(buckets: Buckets, threshold: float) -> tuple[float, float]:
    """(requests certainly above threshold, total): those above the first edge >= threshold.

    The rollback side of an absolute latency limit: a request in the bucket that holds the limit may be
    under it, so it is not counted (interpolation would guess).
    """
    total = float(buckets[-1][1]) if buckets else 0.0
    for le, count in buckets:
        if le >= threshold:
            return (max(total - float(count), 0.0) if math.isfinite(le) else 0.0), total
    return 0.0, total
