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
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

import numpy as np

from .counts import DEFAULT_RATIO_PRIOR, MixturePrior, RatioSequential, log_sum_exp_rows, pack, unpack
from .distribution import WellFormed, bucket_counts
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


def _summary(state: ScaleSequential, stats: list[list[float]], log_lr: bytes | None = None,
             n_c: float = 0.0, n_s: float = 0.0) -> ScaleSequential:
    """The pairs' e-values averaged with equal weights, and the pair with the most evidence."""
    logs = [row[0] for row in stats]
    top = max(logs)
    log_e = top + math.log(sum([math.exp(v - top) for v in logs]) / len(logs))
    stepped = log_lr is not None
    return ScaleSequential(
        limit=state.limit, les=state.les, pairs=state.pairs, prior=state.prior,
        log_lr=state.log_lr if log_lr is None else log_lr,
        pair_stats=pack(np.array(stats)) if stepped else state.pair_stats,
        n_c=state.n_c + n_c, n_s=state.n_s + n_s, ticks=state.ticks + stepped, log_e=log_e,
        max_log_e=max(state.max_log_e, log_e), best=logs.index(top))


@dataclass
class _Tick:
    """One state's tick, ready for the grid: each pair's canary requests above e and stable's above b."""

    state: ScaleSequential
    stats: list[list[float]]
    hits: list[float]
    others: list[float]
    n_c: float
    n_s: float


def _above_edges(buckets: Buckets) -> tuple[float, list[float]]:
    """(requests, [i]: requests above edge i). Well-formed buckets (the judge's increments) are read as they
    are; others as Prometheus would, a decrease in the cumulative counts counting as none."""
    if type(buckets) is WellFormed:
        total = buckets[-1][1]
        return total, [total - c for _, c in buckets]
    tails = _tails(bucket_counts(buckets))
    return tails[0], tails[1:]


def _prepare(state: ScaleSequential, canary: Buckets, stable: Buckets) -> ScaleSequential | _Tick:
    """The tick's inputs, or the new state when the tick does not touch the grid."""
    les_c = [b[0] for b in canary]
    if les_c != [b[0] for b in stable]:
        return state
    if not state.pairs or tuple(les_c) != state.les:
        if state.pairs:
            return state  # the layout changed mid-rollout: these counts are not comparable with the past
        state = _with_pairs(state, tuple([float(le) for le in les_c]))
        if not state.pairs:
            return state
    (n_c, above_c), (n_s, above_s) = _above_edges(canary), _above_edges(stable)
    stats = unpack(state.pair_stats).reshape(len(state.pairs), _STATS).tolist()
    if not (0.0 < n_c < math.inf and 0.0 < n_s < math.inf):
        return _summary(state, stats)  # a tick without requests in an arm (or unusable) carries nothing
    return _Tick(state, stats, [above_c[e] for _, e in state.pairs], [above_s[b] for b, _ in state.pairs],
                 n_c, n_s)


def _stacked(ticks: list[_Tick]) -> tuple[np.ndarray, np.ndarray]:
    """The ticks' grids one above the other, and each row's null cost log(1 + q0·(e^u − 1))."""
    expm1_u = ticks[0].state.prior.arrays[1]
    if len(ticks) == 1:
        t = ticks[0]
        return (unpack(t.state.log_lr).reshape(len(t.hits), -1),
                np.log1p(1.0 * t.n_c / (1.0 * t.n_c + t.n_s) * expm1_u))
    q0 = np.array([1.0 * t.n_c / (1.0 * t.n_c + t.n_s) for t in ticks for _ in t.hits])[:, None]
    return np.vstack([unpack(t.state.log_lr).reshape(len(t.hits), -1) for t in ticks]), np.log1p(q0 * expm1_u)


def _grid_step(ticks: list[_Tick]) -> list[ScaleSequential]:
    """Each tick's pairs added to its grid, all the rows of all the ticks (one prior) in one pass."""
    u, _, log_weights = ticks[0].state.prior.arrays
    rows = [row for t in ticks for row in t.stats]
    hit_list = [h for t in ticks for h in t.hits]
    other_list = [o for t in ticks for o in t.others]
    hits, others = np.array(hit_list)[:, None], np.array(other_list)[:, None]
    grid, cost = _stacked(ticks)
    grid = grid + hits * u - (hits + others) * cost
    # A pair without errors this tick adds exactly zero (0·u, 0·cost), and keeps its previous log E.
    stepped = [i for i, (a, b) in enumerate(zip(hit_list, other_list, strict=True)) if a + b > 0]
    if stepped:
        chosen = grid if len(stepped) == len(rows) else grid[stepped]
        for i, e in zip(stepped, log_sum_exp_rows(chosen + log_weights), strict=True):
            rows[i][0] = e
    for row, a, b in zip(rows, hit_list, other_list, strict=True):
        row[1], row[2], row[3] = max(row[1], row[0]), row[2] + a, row[3] + b
    out, start = [], 0
    for t in ticks:
        out.append(_summary(t.state, t.stats, pack(grid[start:start + len(t.hits)]), t.n_c, t.n_s))
        start += len(t.hits)
    return out


def _step_one(t: _Tick) -> ScaleSequential:
    """`_grid_step([t])[0]` with fewer array operations: the same arithmetic on one state's rows."""
    st = t.state
    u, expm1_u, log_weights = st.prior.arrays
    counts = np.array((t.hits, t.others))
    hits = counts[0][:, None]
    grid = unpack(st.log_lr).reshape(len(t.hits), -1)
    grid = grid + hits * u - (hits + counts[1][:, None]) * np.log1p(1.0 * t.n_c / (1.0 * t.n_c + t.n_s) * expm1_u)
    weighted = grid + log_weights
    tops = weighted.max(axis=1)
    sums = np.exp(weighted - tops[:, None]).sum(axis=1).tolist()
    # A pair without errors this tick adds exactly zero (0·u, 0·cost), and keeps its previous log E.
    for row, a, b, top, total in zip(t.stats, t.hits, t.others, tops.tolist(), sums, strict=True):
        if a + b > 0:
            row[0] = top + math.log(total) if math.isfinite(top) else top
        row[1], row[2], row[3] = max(row[1], row[0]), row[2] + a, row[3] + b
    return _summary(st, t.stats, grid.tobytes(), t.n_c, t.n_s)


def scale_sequential_update(state: ScaleSequential, canary: Buckets, stable: Buckets) -> ScaleSequential:
    """Add one tick's (non-cumulative in time, cumulative over le) buckets of both arms."""
    tick = _prepare(state, canary, stable)
    return _step_one(tick) if isinstance(tick, _Tick) else tick


def scale_sequential_update_many(states: Sequence[ScaleSequential], canary: Sequence[Buckets],
                                 stable: Sequence[Buckets]) -> list[ScaleSequential]:
    """`scale_sequential_update` of each state with its own buckets: the same results, one grid pass for all
    the states on one prior (many canaries' tests at once)."""
    out: list[ScaleSequential] = []
    ready: dict[int, list[tuple[int, _Tick]]] = {}
    for i, (st, c, s) in enumerate(zip(states, canary, stable, strict=True)):
        tick = _prepare(st, c, s)
        out.append(tick if isinstance(tick, ScaleSequential) else st)
        if isinstance(tick, _Tick):
            ready.setdefault(id(tick.state.prior), []).append((i, tick))
    for group in ready.values():
        for (i, _), new in zip(group, _grid_step([t for _, t in group]), strict=True):
            out[i] = new
    return out


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
