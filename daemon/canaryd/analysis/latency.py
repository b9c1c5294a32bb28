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
from dataclasses import dataclass, replace
from itertools import accumulate

import numpy as np

from .counts import DEFAULT_RATIO_PRIOR, MixturePrior, RatioSequential, log_sum_exp_rows, pack, unpack
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
    """State of the anytime-valid test of H0: canary latency <= limit × stable's (see the module doc).

    Each edge pair is a rate-ratio test with r0 = 1 on one prior; the pairs share the tick's request counts,
    so all of them are one grid, updated in one pass and kept packed (see counts.pack): a row per pair.
    """

    limit: float
    les: tuple[float, ...] = ()
    pairs: tuple[tuple[int, int], ...] = ()
    prior: MixturePrior = DEFAULT_RATIO_PRIOR
    log_lr: bytes = b""  # pairs × grid points: each pair's log L(rho) / L(1), packed float64
    pair_stats: bytes = b""  # pairs × (log E, max log E, canary above e, stable above b), packed float64
    n_c: float = 0.0  # requests over the ticks that were used, shared by the pairs
    n_s: float = 0.0
    ticks: int = 0
    log_e: float = 0.0
    max_log_e: float = 0.0
    best: int = -1  # the pair with the most evidence, for the verdict's words

    @property
    def p_value(self) -> float:
        return min(1.0, math.exp(-self.max_log_e))

    @property
    def tests(self) -> tuple[RatioSequential, ...]:
        """Each pair's test as the RatioSequential that one `ratio_sequential_update` per tick would give."""
        if not self.pairs:
            return ()
        grid = unpack(self.log_lr).reshape(len(self.pairs), -1)
        stats = unpack(self.pair_stats).reshape(len(self.pairs), _STATS).tolist()
        return tuple(RatioSequential(r0=1.0, prior=self.prior, log_lr=row.tobytes(), log_e=e, max_log_e=top,
                                     x_c=x_c, n_c=self.n_c, x_s=x_s, n_s=self.n_s, ticks=self.ticks)
                     for row, (e, top, x_c, x_s) in zip(grid, stats, strict=True))


_STATS = 4  # columns of ScaleSequential.pair_stats


def scale_sequential_start(limit: float) -> ScaleSequential:
    if not (math.isfinite(limit) and limit > 0):
        raise ValueError(f"limit: must be a finite ratio > 0, got {limit!r}")
    return ScaleSequential(limit=float(limit))


def _tails(per_bucket: tuple[float, ...]) -> list[float]:
    """[i]: the requests in buckets i and above (the last entry 0): above edge e is [e + 1]."""
    return [*accumulate(reversed(per_bucket)), 0.0][-2::-1] + [0.0]


def _with_pairs(state: ScaleSequential, les: tuple[float, ...]) -> ScaleSequential:
    pairs = edge_pairs(les, state.limit)
    points = len(state.prior.log_effects)
    return ScaleSequential(limit=state.limit, les=les, pairs=pairs, prior=state.prior,
                           log_lr=bytes(8 * points * len(pairs)), pair_stats=bytes(8 * _STATS * len(pairs)))


def _summary(state: ScaleSequential, stats: np.ndarray, **fields: object) -> ScaleSequential:
    """The pairs' e-values averaged with equal weights, and the pair with the most evidence."""
    logs = stats[:, 0]
    top = float(logs.max())
    log_e = top + math.log(float(np.exp(logs - top).mean()))
    return replace(state, **fields, log_e=log_e, max_log_e=max(state.max_log_e, log_e),
                   best=int(np.argmax(logs)))


def scale_sequential_update(state: ScaleSequential, canary: Buckets, stable: Buckets) -> ScaleSequential:
    """Add one tick's (non-cumulative in time, cumulative over le) buckets of both arms."""
    les = tuple(float(le) for le, _ in canary)
    if les != tuple(float(le) for le, _ in stable):
        return state
    if not state.pairs or les != state.les:
        if state.pairs:
            return state  # the layout changed mid-rollout: these counts are not comparable with the past
        state = _with_pairs(state, les)
        if not state.pairs:
            return state
    above_c, above_s = _tails(bucket_counts(canary)), _tails(bucket_counts(stable))
    n_c, n_s = above_c[0], above_s[0]
    stats = unpack(state.pair_stats).reshape(len(state.pairs), _STATS)
    if not (0.0 < n_c < math.inf and 0.0 < n_s < math.inf):
        return _summary(state, stats)  # a tick without requests in an arm (or unusable) carries nothing
    hits = np.array([above_c[e + 1] for _, e in state.pairs])
    others = np.array([above_s[b + 1] for b, _ in state.pairs])
    u, expm1_u, log_weights = state.prior.arrays
    q0 = 1.0 * n_c / (1.0 * n_c + n_s)
    # A pair without errors this tick adds exactly zero (0·u, 0·cost), and keeps its previous log E.
    grid = unpack(state.log_lr).reshape(len(state.pairs), -1)
    grid = grid + hits[:, None] * u - (hits + others)[:, None] * np.log1p(q0 * expm1_u)
    stepped = hits + others > 0
    log_e = np.where(stepped, log_sum_exp_rows(grid + log_weights), stats[:, 0])
    stats = np.column_stack((log_e, np.maximum(stats[:, 1], log_e), stats[:, 2] + hits, stats[:, 3] + others))
    return _summary(state, stats, log_lr=pack(grid), pair_stats=pack(stats), n_c=state.n_c + n_c,
                    n_s=state.n_s + n_s, ticks=state.ticks + 1)


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
