"""Synthetic canary traffic for the tests and bench/: cumulative snapshots as Prometheus would report them.

Used by the decision-quality benchmark, the tests and the examples. Requests are Poisson, 5xx are
binomial, latencies are lognormal and land in Prometheus-style buckets. Nothing here is statistics
of the product; it only makes data for it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from canaryd.analysis.snapshot import ArmSnapshot, Snapshot

# Typical HTTP server buckets, in seconds (finer than the client default around 100-500 ms).
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75,
                              1.0, 2.5, 5.0, math.inf)


@dataclass(frozen=True)
class Arm:
    error_rate: float = 0.005  # share of requests that are 5xx
    latency_median: float = 0.1  # seconds
    latency_sigma: float = 0.5  # lognormal shape

    def bucket_probabilities(self, bounds: Sequence[float] = BUCKETS) -> np.ndarray:
        finite = np.array([b for b in bounds if math.isfinite(b)])
        cdf = stats.lognorm.cdf(finite, s=self.latency_sigma, scale=self.latency_median)
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
