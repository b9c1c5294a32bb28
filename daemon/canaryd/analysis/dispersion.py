"""Extra-binomial variance of the canary's share of errors, and the error-ratio test that allows for it.

Given one tick's errors m = x_c + x_s, the ratio test treats x_c as Bin(m, q) with q = ρ·n_c / (ρ·n_c + n_s).
Real errors come in bursts: when each arm's rate is multiplied tick by tick by its own factor (variance V_c,
V_s relative to 1), the share varies too, and to first order

    Var(x_c | m) ≈ v·(1 + V·v),   v = m·q·(1 − q),   V ≈ V_c + V_s,

so a tick with many errors carries far less information than a binomial tick. A burst that hits both arms
alike leaves the share alone, and so does a canary that is steadily different (per-pod rates): only the
tick-to-tick variation of the share counts. V is estimated by moments from the ticks' residuals against the
pooled ratio, and the binomial log likelihood ratio of every tick so far is divided by φ = 1 + V·v̄
(quasi-likelihood; v̄ is the ticks' information-weighted v).

Validity on binomial traffic, whatever φ >= 1 the data picks: with L(u) the binomial log likelihood ratio
of the ticks so far, exp(L/φ) <= max(1, exp(L)) <= 1 + exp(L), so the tempered mixture E satisfies
E − 1 <= the binomial mixture martingale, and P(sup (E − 1) >= 1/alpha) <= alpha by Ville's inequality.
The test's p-value is therefore 1 / max(E − 1): one unit of evidence is the price of choosing φ from the
data, which lets the evidence of early ticks, discounted while the dispersion was unknown, count in full
once the ticks show none.

The first tick cannot show its own dispersion. Given stable's own ticks from before the rollout (its errors
and requests over the last intervals, `history`), stable's tick-to-tick rate says whether the service's errors
come in bursts: binomial-looking history lets the first ticks count in full, a bursty one discounts them from
the start (by stable's V, doubled for the canary's own bursts). Without a history the first ticks are read as
if a little bursty (PRIOR_V). Either way φ >= 1, so the validity argument above holds unchanged: the history
only chooses φ, and any choice of φ is paid for by the same unit of evidence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import scalar
from .counts import (
    RatioSequential,
    _log_sum_exp,
    pack,
    pack_floats,
    ratio_sequential_start,
    ratio_sequential_update,
    ratio_sequential_update_each,
    unpack,
)
from .frozen import slot_init

HISTORY = 40  # ticks kept for the estimate: enough to be stable, small enough to keep the state light
MIN_TICKS = 2  # below this no estimate from the data, only the prior
# Until the ticks can show it, assume some burstiness: V = PRIOR_V on the first tick, × PRIOR_DECAY on the
# next, none after PRIOR_TICKS. Without it the first tick, which cannot show its own dispersion, would be read
# as binomial (and its peak kept for good); kept longer, it would slow detections at high traffic (large v).
PRIOR_V = 0.3
PRIOR_DECAY = 0.3
PRIOR_TICKS = 2
GATE_P = 0.01  # the data's V is used once the share's chi-square says "not binomial" at this level
DETECT_P = 0.01  # dispersion is reported when the share's chi-square over the ticks is this significant
# Stable's ticks before the rollout: fewer than MIN_HISTORY say too little to replace the prior; HISTORY kept.
MIN_HISTORY = 5

Tick = tuple[float, float, float, float]  # x_c, x_s, n_c, n_s
StableTick = tuple[float, float]  # stable's errors and requests over one interval before the rollout


@dataclass(slots=True)  # made every tick and never kept: not frozen, whose __init__ costs µs per field
class DispersionEstimate:
    v: float  # V above: extra variance of the share, relative
    v_bar: float  # the ticks' information-weighted v = m·q·(1 − q)
    chi2: float  # Pearson chi-square of the share over the ticks
    df: int
    p_value: float  # against "binomial": small means overdispersed

    @property
    def detected(self) -> bool:
        return self.df >= 1 and self.p_value < DETECT_P

    @property
    def phi(self) -> float:
        """The variance inflation of a typical tick: how much each tick's evidence is discounted."""
        return 1.0 + self.v * self.v_bar


def _sums(rows: list[list[float]], r0: float) -> tuple[float, float]:
    """(the pooled ratio, the ticks' information-weighted v = m·q0·(1 − q0) at the null's q0), in one pass."""
    x_c = x_s = n_c = n_s = total = squares = 0.0
    for a, b, c, d in rows:
        x_c += a
        x_s += b
        n_c += c
        n_s += d
        q0 = r0 * c / (r0 * c + d)
        v0 = (a + b) * q0 * (1.0 - q0)
        total += v0
        squares += v0 * v0
    return ((x_c + 0.5) / n_c) / ((x_s + 0.5) / n_s), squares / max(total, 1e-12)


def _moments(rows: list[list[float]], rho: float) -> tuple[float, float]:
    """(Pearson chi-square of the share against the pooled ratio, V by moments)."""
    k = len(rows)
    chi2 = excess = squares = 0.0
    for x_c, x_s, n_c, n_s in rows:  # the loop runs every tick on up to HISTORY ticks: kept to plain arithmetic
        m = x_c + x_s
        a = rho * n_c
        q = a / (a + n_s)
        v = m * q * (1.0 - q)
        if v < 1e-9:
            v = 1e-9
        d = x_c - m * q
        r2 = d * d * k / (k - 1)  # one degree of freedom went to the pooled ratio
        chi2 += r2 / v
        excess += r2 - v
        squares += v * v
    return chi2 * (k - 1) / k, max(0.0, excess / squares)


def _inflate(k: int) -> float:
    """A V from few ticks is itself uncertain, and underestimating it gives false rollbacks: lean high."""
    return 1.0 + 1.5 / math.sqrt(k)


def estimate(ticks: tuple[Tick, ...] | np.ndarray, r0: float,
             history: Sequence[StableTick] | None = None) -> DispersionEstimate:
    """V by moments, sum((x − m·q)² − v) / sum(v²), leaning high while there are few ticks.

    `history`: stable's ticks before the rollout; with at least MIN_HISTORY of them they replace the prior.
    On plain floats: at most HISTORY ticks are faster in Python than in numpy's per-call overhead.
    """
    k = len(ticks)
    informed = history is not None and len(history) >= MIN_HISTORY
    prior = 0.0 if informed or k > PRIOR_TICKS else PRIOR_V * PRIOR_DECAY ** max(k - 1, 0)
    rows = ticks.tolist() if isinstance(ticks, np.ndarray) else [[float(v) for v in t] for t in ticks]
    v_stable = _stable_v_with(rows, history) if informed or k >= MIN_TICKS else 0.0
    if k == 0:
        return DispersionEstimate(v=max(prior, v_stable), v_bar=0.0, chi2=0.0, df=0, p_value=1.0)
    rho, v_bar = _sums(rows, r0)
    if k < MIN_TICKS:
        return DispersionEstimate(v=max(prior, v_stable), v_bar=v_bar, chi2=0.0, df=0, p_value=1.0)
    df = k - 1
    chi2, v_hat = _moments(rows, rho)
    p_value = scalar.chdtrc(df, chi2)
    # Binomial ticks give a noisy positive V half the time, and discounting them would only slow detection:
    # the data's V counts once the share (or stable's rate) is visibly overdispersed.
    v_use = max(v_hat * _inflate(k) if p_value < GATE_P else 0.0, v_stable)
    return DispersionEstimate(v=max(prior, v_use), v_bar=v_bar, chi2=chi2, df=df, p_value=p_value)


def _stable_v_with(rows: list[list[float]], history: Sequence[StableTick] | None) -> float:
    """_stable_v over stable's history before the rollout and its ticks since, leaning high."""
    x_s = [t[1] for t in rows]
    n_s = [t[3] for t in rows]
    if history:
        x_s = [*(x for x, _ in history), *x_s]
        n_s = [*(n for _, n in history), *n_s]
    return _stable_v(x_s, n_s) * _inflate(len(x_s))


def _stable_v(x_s: list[float], n_s: list[float]) -> float:
    """V from stable's own tick-to-tick rate, doubled (bursts in each arm alike), once visibly not binomial.

    Stable's many errors show bursts a tick or two before the canary's share can; a burst shared by both
    arms (which the share does not see) only makes the test more careful than it needs to be.
    """
    k = len(x_s)
    if k < 2:
        return 0.0
    rate = sum(x_s) / sum(n_s)
    chi2 = 0.0
    for a, b in zip(x_s, n_s, strict=True):  # every tick, on up to HISTORY ticks and the history: plain arithmetic
        mu = rate * b
        if not mu > 0:
            return 0.0
        chi2 += (a - mu) * (a - mu) / mu
    if scalar.chdtrc(k - 1, chi2) >= GATE_P:
        return 0.0  # the usual tick: V is read only once the rate is visibly not binomial
    excess = squares = 0.0
    for a, b in zip(x_s, n_s, strict=True):
        mu = rate * b
        excess += (a - mu) * (a - mu) * k / (k - 1) - mu
        squares += mu * mu
    return 2.0 * max(0.0, excess / squares)


@slot_init
@dataclass(frozen=True, slots=True)
class RobustRatio:
    """The anytime-valid error-ratio test allowing for overdispersion (see the module doc)."""

    binomial: RatioSequential  # the untempered evidence, per prior component
    ticks: bytes = b""  # the latest HISTORY ticks that had errors, as packed float64 Ticks (see tick_array)
    history: bytes | None = None  # stable's ticks before the rollout, when read, as packed StableTicks
    log_e: float = 0.0  # log E of the tempered mixture now
    max_log_e: float = 0.0
    phi: float = 1.0
    detected: bool = False

    @property
    def r0(self) -> float:
        return self.binomial.r0

    @property
    def e_value(self) -> float:
        return math.exp(min(self.log_e, 709.0))

    @property
    def max_e_value(self) -> float:
        return math.exp(min(self.max_log_e, 709.0))

    @property
    def p_value(self) -> float:
        """1 / max(E − 1): valid at every look on binomial traffic, non-increasing over time."""
        e = math.exp(min(self.max_log_e, 700.0))
        return 1.0 if e <= 2.0 else min(1.0, 1.0 / (e - 1.0))


_TICK_BYTES = 4 * 8


def tick_array(ticks: bytes) -> np.ndarray:
    """RobustRatio.ticks as a (ticks × 4) read-only array of x_c, x_s, n_c, n_s."""
    return unpack(ticks).reshape(-1, 4)


def history_rows(history: bytes | None) -> list[StableTick] | None:
    return None if history is None else [(x, n) for x, n in unpack(history).reshape(-1, 2).tolist()]


def robust_ratio_start(r0: float = 2.0, *,
                       history: Sequence[tuple[float | None, float | None]] | None = None) -> RobustRatio:
    """A new test. `history`: stable's (errors, requests) per interval before the rollout, oldest first;
    intervals with a missing, negative or non-finite count, or no requests, are left out."""
    kept = None
    if history is not None:
        rows = [(float(x), float(n)) for x, n in history
                if x is not None and n is not None and 0 <= x < math.inf and 0 < n < math.inf][-HISTORY:]
        kept = pack(np.array(rows, dtype=float).reshape(-1, 2))
    return RobustRatio(binomial=ratio_sequential_start(r0), history=kept)


def robust_ratio_update(state: RobustRatio, dx_c: float, dn_c: float, dx_s: float, dn_s: float) -> RobustRatio:
    """Add one tick's increments; the dispersion is re-estimated and all the evidence re-read through it."""
    binomial = ratio_sequential_update(state.binomial, dx_c, dn_c, dx_s, dn_s)
    return _reread(state, binomial, dx_c, dn_c, dx_s, dn_s)


def robust_ratio_update_many(states: Sequence[RobustRatio], dx_c: Sequence[float], dn_c: Sequence[float],
                             dx_s: Sequence[float], dn_s: Sequence[float]) -> list[RobustRatio]:
    """`robust_ratio_update` of each state with its own increments: the binomial grids in one pass."""
    binomials = ratio_sequential_update_each([st.binomial for st in states], dx_c, dn_c, dx_s, dn_s)
    return [_reread(st, b, *inc) for st, b, *inc in zip(states, binomials, dx_c, dn_c, dx_s, dn_s, strict=True)]


def _reread(state: RobustRatio, binomial: RatioSequential, dx_c: float, dn_c: float, dx_s: float,
            dn_s: float) -> RobustRatio:
    if binomial is state.binomial or binomial.ticks == state.binomial.ticks:
        return state
    ticks = state.ticks
    if dx_c + dx_s > 0 and dn_c > 0 and dn_s > 0:
        ticks = (ticks + pack_floats([dx_c, dx_s, dn_c, dn_s]))[-HISTORY * _TICK_BYTES:]
    elif state.binomial.ticks:
        # A tick without errors leaves the kept ticks, and so the estimate, and the grid as they were: the
        # tempered evidence is the previous tick's (re-reading it would give the same numbers).
        return RobustRatio(binomial, ticks, state.history, state.log_e, state.max_log_e, state.phi,  # in order
                           state.detected)
    est = estimate(tick_array(ticks), binomial.r0, history_rows(state.history))
    phi = max(1.0, est.phi)
    if phi == 1.0 and math.isfinite(binomial.log_e):
        log_e = binomial.log_e  # untempered: the binomial mixture's own log E, the same sum of the same grid
    else:
        log_e = _log_sum_exp(unpack(binomial.log_lr) / phi + binomial.prior.arrays[2])  # the log weights
    # The fields in order (binomial, ticks, history, log_e, max_log_e, phi, detected): a state made every tick
    # is given them by position, as keywords cost ~35 ns each.
    return RobustRatio(binomial, ticks, state.history, log_e, max(state.max_log_e, log_e), phi, est.detected)
