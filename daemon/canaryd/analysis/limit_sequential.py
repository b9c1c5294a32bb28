"""The anytime-valid test of one arm's rate against a fixed limit ("5xx above 5 %", "more than 1 % of requests
above 1 s"): the mixture SPRT of counts.py over the odds ratio against the limit, which is fixed, so the
state keeps the totals rather than a grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .counts import (
    DEFAULT_LIMIT_PRIOR,
    MixturePrior,
    _EValues,
    _increments,
    _limit,
    _log_sum_exp,
    log_sum_exp_rows,
)
from .frozen import slot_init


@slot_init
@dataclass(frozen=True, slots=True)
class LimitSequential(_EValues):
    """State of the anytime-valid test of H0: rate <= limit. Update with limit_sequential_update.

    The null's q0 is the fixed limit, so each component's log LR is x·u − n·log(1 + limit·(e^u − 1)) over
    the totals: the state keeps the totals, not the grid, and log E is read from them when asked. Only the
    running maximum (the p-value) is kept, and a tick computes the mixture only where it may raise it.
    """

    limit: float
    prior: MixturePrior
    max_log_e: float = 0.0
    x: float = 0.0
    n: float = 0.0
    ticks: int = 0

    @property
    def log_e(self) -> float:  # type: ignore[override]
        """log E of the mixture at the totals."""
        return _log_sum_exp(np.dot((self.x, self.n, 1.0), self.prior.limit_rows(self.limit)))

    @property
    def log_lr(self) -> tuple[float, ...]:
        """Per grid point: log L(odds ratio) / L(limit) over the ticks so far."""
        return tuple(self._grid().tolist())

    def _grid(self) -> np.ndarray:
        u, minus_cost, _ = self.prior.limit_rows(self.limit)
        return self.x * u + self.n * minus_cost


def limit_sequential_start(limit: float, *, prior: MixturePrior | None = None) -> LimitSequential:
    prior = prior or DEFAULT_LIMIT_PRIOR
    return LimitSequential(limit=_limit(limit), prior=prior)


def _may_exceed(x: float, n: float, q0: float, max_log_e: float) -> bool:
    """Whether log E at the totals (x of n) may be above `max_log_e`.

    Each component's log LR, x·u − n·log(1 + q0·(e^u − 1)), is concave in u and at most its value at the
    maximum-likelihood odds: 0 when x/n <= q0 (u <= 0 is off the grid), else n·KL(x/n ‖ q0). The weights
    sum to one, so log E is at most that bound. On a healthy canary it is far below the best so far, and
    the mixture need not be computed (the running maximum, all the p-value reads, cannot change).
    """
    p = x / n
    if p <= q0:
        return max_log_e < 0.0
    kl = x * math.log(p / q0) + (0.0 if p >= 1.0 else (n - x) * math.log((1.0 - p) / (1.0 - q0)))
    return kl > max_log_e


def limit_sequential_update(state: LimitSequential, dx: float, dn: float) -> LimitSequential:
    """Add one tick's increments (dx "bad" requests out of dn). Pure; negative or non-finite ignored.

    dx > dn (counters extrapolated differently) is treated as dx == dn.
    """
    inc = _increments(dx, dn)
    if inc is None or inc[1] == 0:
        return state
    dn = inc[1]
    dx = min(inc[0], dn)
    x, n, prior = state.x + dx, state.n + dn, state.prior
    top = state.max_log_e
    if _may_exceed(x, n, state.limit, top):
        top = max(top, _log_sum_exp(np.dot((x, n, 1.0), prior.limit_rows(state.limit))))
    return LimitSequential(state.limit, prior, top, x, n, state.ticks + 1)  # the fields in order, by position


def limit_sequential_update_many(states: Sequence[LimitSequential], dx: Sequence[float],
                                 dn: Sequence[float]) -> list[LimitSequential]:
    """`limit_sequential_update` of each state with its own increments (many tests at once): the same
    results within rounding, the grid arithmetic of the states on the first state's prior in one pass."""
    out = list(states)
    rows: list[int] = []  # the states whose mixture may raise their maximum, and their totals after this tick
    xs: list[float] = []
    ns: list[float] = []
    prior = states[0].prior if states else None
    for i, (st, a, b) in enumerate(zip(states, dx, dn, strict=True)):
        a, b = float(a), float(b)
        if not (0.0 <= a < math.inf and 0.0 < b < math.inf):  # as _increments, and no requests: no step
            continue
        if st.prior is not prior:
            out[i] = limit_sequential_update(st, a, b)
            continue
        x, n = st.x + min(a, b), st.n + b
        if _may_exceed(x, n, st.limit, st.max_log_e):
            rows.append(i)
            xs.append(x)
            ns.append(n)
        else:
            # The fields in order (limit, prior, max_log_e, x, n, ticks): a state made every tick is given
            # them by position, as keywords cost ~35 ns each.
            out[i] = LimitSequential(st.limit, prior, st.max_log_e, x, n, st.ticks + 1)
    if not rows:
        return out
    assert prior is not None
    u, _, log_weights = prior.arrays
    minus_cost = prior.limit_costs(tuple([states[i].limit for i in rows]))
    totals = np.array((xs, ns))
    weighted = totals[0][:, None] * u + totals[1][:, None] * minus_cost + log_weights
    for i, xi, ni, e in zip(rows, xs, ns, log_sum_exp_rows(weighted), strict=True):
        st = states[i]
        out[i] = LimitSequential(st.limit, prior, max(st.max_log_e, e), xi, ni, st.ticks + 1)  # in order
    return out
