"""Synthetic canary traffic for the tests and bench/: cumulative snapshots as Prometheus would report them.

Used by the decision-quality benchmark, the tests and the examples. Requests are Poisson, 5xx are
binomial, latencies are lognormal and land in Prometheus-style buckets. Nothing here is statistics
of the product; it only makes data for it.

`simulate` makes textbook traffic for a fixed weight schedule. `TickSource` makes one tick at a time at
whatever weight the rollout has reached, under a `Traffic` model of real traffic: common-mode or per-arm
bursts of the error rate (a Gamma multiplier per tick), per-pod error rates fixed for the run, and
whole-system latency swings.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from canaryd.analysis.snapshot import ArmSnapshot, Snapshot

# Prometheus client libraries' default buckets, in seconds.
PROM_DEFAULT_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, math.inf)
# Typical HTTP server buckets, in seconds (finer than the client default around 100-500 ms).
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75,
                              1.0, 2.5, 5.0, math.inf)


@dataclass(frozen=True)
class Arm:
    error_rate: float = 0.005  # share of requests that are 5xx
    latency_median: float = 0.1  # seconds
    latency_sigma: float = 0.5  # lognormal shape
    slow_share: float = 0.0  # a share of requests slow_factor × slower (a tail the median does not see)
    slow_factor: float = 1.0

    def bucket_probabilities(self, bounds: Sequence[float] = BUCKETS, scale: float = 1.0) -> np.ndarray:
        finite = np.array([b for b in bounds if math.isfinite(b)])
        median = self.latency_median * scale
        cdf = stats.lognorm.cdf(finite, s=self.latency_sigma, scale=median)
        if self.slow_share > 0:
            slow = stats.lognorm.cdf(finite, s=self.latency_sigma, scale=median * self.slow_factor)
            cdf = (1 - self.slow_share) * cdf + self.slow_share * slow
        cdf = np.append(cdf, 1.0)
        return np.diff(np.concatenate([[0.0], cdf]))


@dataclass(frozen=True)
class Scenario:
    rps: float  # total requests per second across both arms
    stable: Arm
    canary: Arm
    duration: float = 1800.0  # seconds
    tick: float = 10.0  # seconds between snapshots
    weight: Callable[[float], float] | float = 5.0  # the canary's percentage, constant or by time


def _weight(s: Scenario, t: float) -> float:
    return s.weight(t) if callable(s.weight) else float(s.weight)


@dataclass(frozen=True)
class Increments:
    """Per-tick counts for one run: arrays of shape (ticks,) and (ticks, buckets)."""

    t: np.ndarray
    weight: np.ndarray
    canary_requests: np.ndarray
    canary_errors: np.ndarray
    canary_buckets: np.ndarray  # per-bucket (not cumulative) counts
    stable_requests: np.ndarray
    stable_errors: np.ndarray
    stable_buckets: np.ndarray


def simulate(s: Scenario, rng: np.random.Generator, bounds: Sequence[float] = BUCKETS) -> Increments:
    ticks = int(round(s.duration / s.tick))
    t = s.tick * np.arange(1, ticks + 1)
    w = np.array([_weight(s, x - s.tick) for x in t]) / 100.0
    n_c = rng.poisson(s.rps * w * s.tick)
    n_s = rng.poisson(s.rps * (1 - w) * s.tick)
    x_c = rng.binomial(n_c, s.canary.error_rate)
    x_s = rng.binomial(n_s, s.stable.error_rate)
    p_c, p_s = s.canary.bucket_probabilities(bounds), s.stable.bucket_probabilities(bounds)
    b_c = rng.multinomial(n_c, p_c)
    b_s = rng.multinomial(n_s, p_s)
    return Increments(t=t, weight=100.0 * w, canary_requests=n_c, canary_errors=x_c, canary_buckets=b_c,
                      stable_requests=n_s, stable_errors=x_s, stable_buckets=b_s)


def _arm(requests: float, errors: float, per_bucket: np.ndarray, bounds: Sequence[float]) -> ArmSnapshot:
    cumulative = np.cumsum(per_bucket)
    return ArmSnapshot(requests=float(requests), errors=float(errors), successes=float(requests - errors),
                       buckets=tuple((float(le), float(c)) for le, c in zip(bounds, cumulative, strict=True)))


def snapshots(inc: Increments, bounds: Sequence[float] = BUCKETS, *, with_weight: bool = True) -> list[Snapshot]:
    """Cumulative snapshots, starting with all-zero counters at t=0."""
    zeros = np.zeros(len(bounds))
    out = [Snapshot(t=0.0, canary=_arm(0, 0, zeros, bounds), stable=_arm(0, 0, zeros, bounds),
                    weight=float(inc.weight[0]) if with_weight else None)]
    cn, cx, cb = np.cumsum(inc.canary_requests), np.cumsum(inc.canary_errors), np.cumsum(inc.canary_buckets, axis=0)
    sn, sx, sb = np.cumsum(inc.stable_requests), np.cumsum(inc.stable_errors), np.cumsum(inc.stable_buckets, axis=0)
    for i, t in enumerate(inc.t):
        out.append(Snapshot(
            t=float(t),
            canary=_arm(cn[i], cx[i], cb[i], bounds),
            stable=_arm(sn[i], sx[i], sb[i], bounds),
            weight=float(inc.weight[i]) if with_weight else None,
        ))
    return out


def to_replay_json(snaps: Sequence[Snapshot]) -> dict[str, object]:
    """The `canaryd analyze --input` format."""

    def arm(a: ArmSnapshot) -> dict[str, object]:
        out: dict[str, object] = {"requests": a.requests, "errors": a.errors}
        if a.successes is not None:
            out["successes"] = a.successes
        if a.buckets is not None:
            out["latency_buckets"] = {("+Inf" if math.isinf(le) else f"{le:g}"): c for le, c in a.buckets}
        return out

    samples = []
    for s in snaps:
        sample: dict[str, object] = {"t": s.t, "canary": arm(s.canary), "stable": arm(s.stable)}
        if s.weight is not None:
            sample["weight"] = s.weight
        samples.append(sample)
    return {"samples": samples}


# ---------------------------------------------------------------------------------------------- real traffic


@dataclass(frozen=True)
class Traffic:
    """How real traffic departs from the textbook: the models of the decision-quality benchmark."""

    errors: str = "binomial"  # binomial | common (one burst multiplier for both arms) | independent | pods
    burst_shape: float = 2.0  # Gamma shape of the per-tick multiplier (mean 1)
    canary_pods: int = 2
    stable_pods: int = 20
    pod_sigma: float = 0.3  # each pod's rate is the arm's × LogNormal(0, pod_sigma), fixed for the run
    latency_swing: float = 0.0  # per tick, both arms' latencies × Uniform(1 − swing, 1 + swing)
    bounds: tuple[float, ...] = BUCKETS


@dataclass(frozen=True)
class Tick:
    canary: ArmSnapshot  # this tick's increments, buckets cumulative over le
    stable: ArmSnapshot


class TickSource:
    """One tick of traffic at a time, at the weight the rollout is at (mutable: it holds the RNG)."""

    def __init__(self, rps: float, stable: Arm, canary: Arm, traffic: Traffic, rng: np.random.Generator) -> None:
        self.rps, self.stable, self.canary, self.traffic, self.rng = rps, stable, canary, traffic, rng
        pods = traffic.errors == "pods"
        self.pod_rates = {
            "canary": canary.error_rate * (rng.lognormal(0.0, traffic.pod_sigma, traffic.canary_pods) if pods else
                                           np.ones(1)),
            "stable": stable.error_rate * (rng.lognormal(0.0, traffic.pod_sigma, traffic.stable_pods) if pods else
                                           np.ones(1)),
        }

    def _multipliers(self) -> tuple[float, float]:
        k, rng = self.traffic.burst_shape, self.rng
        if self.traffic.errors == "common":
            g = float(rng.gamma(k, 1.0 / k))
            return g, g
        if self.traffic.errors == "independent":
            return float(rng.gamma(k, 1.0 / k)), float(rng.gamma(k, 1.0 / k))
        return 1.0, 1.0

    def _errors(self, n: int, rates: np.ndarray, g: float) -> int:
        split = self.rng.multinomial(n, np.full(rates.size, 1.0 / rates.size))  # even load balancing
        return int(self.rng.binomial(split, np.minimum(rates * g, 1.0)).sum())

    def tick(self, weight: float, seconds: float) -> Tick:
        w = min(max(weight, 0.0), 100.0) / 100.0
        rng, tr = self.rng, self.traffic
        n_c, n_s = int(rng.poisson(self.rps * w * seconds)), int(rng.poisson(self.rps * (1 - w) * seconds))
        g_c, g_s = self._multipliers()
        scale = 1.0 + float(rng.uniform(-tr.latency_swing, tr.latency_swing)) if tr.latency_swing else 1.0
        out = []
        for n, arm, rates, g in ((n_c, self.canary, self.pod_rates["canary"], g_c),
                                 (n_s, self.stable, self.pod_rates["stable"], g_s)):
            x = self._errors(n, rates, g)
            per_bucket = rng.multinomial(n, arm.bucket_probabilities(tr.bounds, scale))
            out.append(_arm(n, x, per_bucket, tr.bounds))
        return Tick(canary=out[0], stable=out[1])
