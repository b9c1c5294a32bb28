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
from scipy import special

from .counts import RatioSequential, ratio_sequential_start, ratio_sequential_update

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


@dataclass(frozen=True)
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


def _pooled_ratio(ticks: tuple[Tick, ...]) -> float:
    x_c, x_s, n_c, n_s = (sum(t[i] for t in ticks) for i in range(4))
    return ((x_c + 0.5) / n_c) / ((x_s + 0.5) / n_s)


def _inflate(k: int) -> float:
    """A V from few ticks is itself uncertain, and underestimating it gives false rollbacks: lean high."""
    return 1.0 + 1.5 / math.sqrt(k)


def estimate(ticks: tuple[Tick, ...], r0: float,
             history: tuple[StableTick, ...] | None = None) -> DispersionEstimate:
    """V by moments, sum((x − m·q)² − v) / sum(v²), leaning high while there are few ticks.

    `history`: stable's ticks before the rollout; with at least MIN_HISTORY of them they replace the prior.
    """
    k = len(ticks)
    informed = history is not None and len(history) >= MIN_HISTORY
    prior = 0.0 if informed or k > PRIOR_TICKS else PRIOR_V * PRIOR_DECAY ** max(k - 1, 0)
    arr = np.asarray(ticks, dtype=float).reshape(k, 4)
    stable = np.concatenate([np.asarray(history or (), dtype=float).reshape(-1, 2), arr[:, [1, 3]]])
    v_stable = 0.0
    if informed or k >= MIN_TICKS:
        v_stable = _stable_v(stable[:, 0], stable[:, 1]) * _inflate(len(stable))
    if k == 0:
        return DispersionEstimate(v=max(prior, v_stable), v_bar=0.0, chi2=0.0, df=0, p_value=1.0)
    x_c, m, n_c, n_s = arr[:, 0], arr[:, 0] + arr[:, 1], arr[:, 2], arr[:, 3]
    q0 = r0 * n_c / (r0 * n_c + n_s)
    v0 = m * q0 * (1.0 - q0)
    v_bar = float((v0 * v0).sum() / max(v0.sum(), 1e-12))
    if k < MIN_TICKS:
        return DispersionEstimate(v=max(prior, v_stable), v_bar=v_bar, chi2=0.0, df=0, p_value=1.0)
    rho = _pooled_ratio(ticks)
    q = rho * n_c / (rho * n_c + n_s)
    v = np.maximum(m * q * (1.0 - q), 1e-9)
    r2 = (x_c - m * q) ** 2 * k / (k - 1)  # one degree of freedom went to the pooled ratio
    df = k - 1
    chi2 = float((r2 / v).sum()) * (k - 1) / k
    p_value = float(special.chdtrc(df, chi2))
    v_hat = max(0.0, float((r2 - v).sum() / (v * v).sum()))
    # Binomial ticks give a noisy positive V half the time, and discounting them would only slow detection:
    # the data's V counts once the share (or stable's rate) is visibly overdispersed.
    v_use = max(v_hat * _inflate(k) if p_value < GATE_P else 0.0, v_stable)
    return DispersionEstimate(v=max(prior, v_use), v_bar=v_bar, chi2=chi2, df=df, p_value=p_value)


def _stable_v(x_s: np.ndarray, n_s: np.ndarray) -> float:
    """V from stable's own tick-to-tick rate, doubled (bursts in each arm alike), once visibly not binomial.

    Stable's many errors show bursts a tick or two before the canary's share can; a burst shared by both
    arms (which the share does not see) only makes the test more careful than it needs to be.
    """
    k = len(x_s)
    if k < 2 or not x_s.sum() > 0:
        return 0.0
    mean = x_s.sum() / n_s.sum() * n_s
    r2 = (x_s - mean) ** 2 * k / (k - 1)
    if float(special.chdtrc(k - 1, float(((x_s - mean) ** 2 / mean).sum()))) >= GATE_P:
        return 0.0
    return 2.0 * max(0.0, float((r2 - mean).sum() / (mean * mean).sum()))


@dataclass(frozen=True)
class RobustRatio:
    """The anytime-valid error-ratio test allowing for overdispersion (see the module doc)."""

    binomial: RatioSequential  # the untempered evidence, per prior component
    ticks: tuple[Tick, ...] = ()  # the latest HISTORY ticks that had errors
    history: tuple[StableTick, ...] | None = None  # stable's ticks before the rollout, when read
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


def robust_ratio_start(r0: float = 2.0, *,
                       history: Sequence[tuple[float | None, float | None]] | None = None) -> RobustRatio:
    """A new test. `history`: stable's (errors, requests) per interval before the rollout, oldest first;
    intervals with a missing, negative or non-finite count, or no requests, are left out."""
    kept = None
    if history is not None:
        kept = tuple((float(x), float(n)) for x, n in history
                     if x is not None and n is not None and 0 <= x < math.inf and 0 < n < math.inf)[-HISTORY:]
    return RobustRatio(binomial=ratio_sequential_start(r0), history=kept)


def robust_ratio_update(state: RobustRatio, dx_c: float, dn_c: float, dx_s: float, dn_s: float) -> RobustRatio:
    """Add one tick's increments; the dispersion is re-estimated and all the evidence re-read through it."""
    binomial = ratio_sequential_update(state.binomial, dx_c, dn_c, dx_s, dn_s)
    if binomial is state.binomial or binomial.ticks == state.binomial.ticks:
        return state
    ticks = state.ticks
    if dx_c + dx_s > 0 and dn_c > 0 and dn_s > 0:
        ticks = (*ticks, (float(dx_c), float(dx_s), float(dn_c), float(dn_s)))[-HISTORY:]
    est = estimate(ticks, binomial.r0, state.history)
    phi = max(1.0, est.phi)
    prior = binomial.prior
    weighted = np.asarray(binomial.log_lr) / phi + np.asarray(prior.log_weights)
    top = float(weighted.max())
    log_e = top + math.log(float(np.exp(weighted - top).sum()))
    return RobustRatio(binomial=binomial, ticks=ticks, history=state.history, log_e=log_e, max_log_e=max(state.max_log_e, log_e),
                       phi=phi, detected=est.detected)
