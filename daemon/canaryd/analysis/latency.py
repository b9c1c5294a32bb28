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

from .counts import DEFAULT_RATIO_PRIOR, MixturePrior, RatioSequential, log_sum_exp_rows, pack_floats, unpack
from .distribution import WellFormed, bucket_counts
from .frozen import slot_init
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


@slot_init
@dataclass(frozen=True, slots=True)
class ScaleSequential:
    """State of the anytime-valid test of H0: canary latency <= limit × stable's (see the module doc).

    Each edge pair is a rate-ratio test with r0 = 1 on one prior; the pairs share the tick's request counts,
    so all of them are one grid, updated in one pass and kept packed (see counts.pack): a row per pair.
    Each pair's log E, their average and the best pair are read from the grid when asked; a tick computes
    them only when the grid's maximum, their bound, may raise a running maximum (see _finish).
    """

    limit: float
    les: tuple[float, ...] = ()
    pairs: tuple[tuple[int, int], ...] = ()
    prior: MixturePrior = DEFAULT_RATIO_PRIOR
    log_lr: bytes = b""  # pairs × grid points: each pair's log L(rho) / L(1), packed float64
    pair_stats: bytes = b""  # pairs × (max log E, canary above e, stable above b), packed float64
    n_c: float = 0.0  # requests over the ticks that were used, shared by the pairs
    n_s: float = 0.0
    ticks: int = 0
    max_log_e: float = 0.0

    @property
    def p_value(self) -> float:
        return min(1.0, math.exp(-self.max_log_e))

    @property
    def pair_log_e(self) -> list[float]:
        """Each pair's log E now."""
        if not self.pairs:
            return []
        return log_sum_exp_rows(unpack(self.log_lr).reshape(len(self.pairs), -1) + self.prior.arrays[2])

    @property
    def log_e(self) -> float:
        """The pairs' e-values averaged with equal weights."""
        return _average(self.pair_log_e)

    @property
    def best(self) -> int:
        """The pair with the most evidence, for the verdict's words; -1 without pairs."""
        logs = self.pair_log_e
        return logs.index(max(logs)) if logs else -1

    @property
    def tests(self) -> tuple[RatioSequential, ...]:
        """Each pair's test as the RatioSequential that one `ratio_sequential_update` per tick would give."""
        if not self.pairs:
            return ()
        grid = unpack(self.log_lr).reshape(len(self.pairs), -1)
        stats = unpack(self.pair_stats).reshape(len(self.pairs), _STATS).tolist()
        return tuple(RatioSequential(r0=1.0, prior=self.prior, log_lr=row.tobytes(), log_e=e, max_log_e=top,
                                     x_c=x_c, n_c=self.n_c, x_s=x_s, n_s=self.n_s, ticks=self.ticks)
                     for row, e, (top, x_c, x_s) in zip(grid, self.pair_log_e, stats, strict=True))


_STATS = 3  # columns of ScaleSequential.pair_stats


def _average(logs: list[float]) -> float:
    if not logs:
        return 0.0
    top = max(logs)
    return top + math.log(sum([math.exp(v - top) for v in logs]) / len(logs))


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


@dataclass(slots=True)  # made every tick and never kept
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
    if not (0.0 < n_c < math.inf and 0.0 < n_s < math.inf):
        return state  # a tick without requests in an arm (or unusable) carries nothing
    stats = unpack(state.pair_stats).reshape(len(state.pairs), _STATS).tolist()
    return _Tick(state, stats, [above_c[e] for _, e in state.pairs], [above_s[b] for b, _ in state.pairs],
                 n_c, n_s)


def _finish(t: _Tick, grid: np.ndarray, bounds: list[float]) -> ScaleSequential:
    """The state after the tick, from its new grid and each row's maximum.

    A pair's log E, log Σ w·exp(row), is at most its row's maximum (the weights sum to one), and the
    average of the pairs' e-values at most the largest. Where no stepped pair's bound reaches its running
    maximum and no bound reaches the test's, no maximum can change and the mixtures are left unread.
    """
    st, stats = t.state, t.stats
    top = st.max_log_e
    if max(bounds) > top or _may_raise(t, bounds):
        logs = log_sum_exp_rows(grid + st.prior.arrays[2])
        for row, a, b, e in zip(stats, t.hits, t.others, logs, strict=True):
            if a + b > 0 and e > row[0]:  # a stepped pair's running maximum
                row[0] = e
        top = max(top, _average(logs))
    flat: list[float] = []
    for row, a, b in zip(stats, t.hits, t.others, strict=True):
        flat += (row[0], row[1] + a, row[2] + b)
    # The fields in order (limit, les, pairs, prior, log_lr, pair_stats, n_c, n_s, ticks, max_log_e): a state
    # made every tick is given them by position, as keywords cost ~35 ns each.
    return ScaleSequential(st.limit, st.les, st.pairs, st.prior, grid.tobytes(), pack_floats(flat),
                           st.n_c + t.n_c, st.n_s + t.n_s, st.ticks + 1, top)


def _may_raise(t: _Tick, bounds: list[float]) -> bool:
    """Whether a stepped pair's bound reaches its running maximum (a loop: any() of a generator costs more)."""
    for a, b, bound, row in zip(t.hits, t.others, bounds, t.stats, strict=True):
        if bound > row[0] and a + b > 0:
            return True
    return False


def _rows(ticks: list[_Tick]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The ticks' pairs as rows, one above the other: canary hits and trials (a column each), the grids so far,
    and each row's null cost log(1 + q0·(e^u − 1)). One tick's (a canary judged alone) without stacking."""
    expm1_u = ticks[0].state.prior.arrays[1]
    if len(ticks) == 1:
        t = ticks[0]
        return (np.array(t.hits)[:, None], np.array([h + o for h, o in zip(t.hits, t.others, strict=True)])[:, None],
                unpack(t.state.log_lr).reshape(len(t.hits), -1),
                np.log1p(1.0 * t.n_c / (1.0 * t.n_c + t.n_s) * expm1_u))
    hits = np.array([h for t in ticks for h in t.hits])[:, None]
    trials = np.array([h + o for t in ticks for h, o in zip(t.hits, t.others, strict=True)])[:, None]
    q0 = np.array([1.0 * t.n_c / (1.0 * t.n_c + t.n_s) for t in ticks for _ in t.hits])[:, None]
    return (hits, trials, np.vstack([unpack(t.state.log_lr).reshape(len(t.hits), -1) for t in ticks]),
            np.log1p(q0 * expm1_u))


def _stepped(u: np.ndarray, hits: np.ndarray, trials: np.ndarray, old: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """(old + hits·u) − trials·cost, hits and trials a column per row, computed in place. A pair without errors
    this tick adds exactly zero (0·u, 0·cost), and keeps its previous log E."""
    grid = hits * u
    grid += old
    grid -= trials * cost
    return grid


def _grid_step(ticks: list[_Tick]) -> list[ScaleSequential]:
    """Each tick's pairs added to its grid, all the rows of all the ticks (one prior) in one pass."""
    grid = _stepped(ticks[0].state.prior.arrays[0], *_rows(ticks))
    bounds = np.maximum.reduce(grid, axis=1).tolist()
    out, start = [], 0
    for t in ticks:
        end = start + len(t.hits)
        out.append(_finish(t, grid[start:end], bounds[start:end]))
        start = end
    return out


def scale_sequential_update(state: ScaleSequential, canary: Buckets, stable: Buckets) -> ScaleSequential:
    """Add one tick's (non-cumulative in time, cumulative over le) buckets of both arms."""
    t = _prepare(state, canary, stable)
    if not isinstance(t, _Tick):
        return t
    grid = _stepped(t.state.prior.arrays[0], *_rows([t]))  # _grid_step of one tick, without its slicing
    return _finish(t, grid, np.maximum.reduce(grid, axis=1).tolist())


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
