"""Multiple testing across the rollback metrics: Holm's step-down, weighted by each test's share of alpha."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["ALPHA_WEIGHTS", "holm", "weighted_holm"]


# How much of alpha each rollback metric's test may spend (weighted Holm, renormalised over the metrics
# that have data). The error ratio is the test that usually decides and gets the most: its threshold is
# log(1 + 1/(alpha·0.85)) = 3.2 nats of evidence, against the 3.0 of a single test at alpha. The latency
# ratio compares whole histograms, where a real slowdown gives evidence fast; an absolute limit is crossed
# by far in the cases that matter. A smaller share costs those tests little time (log 2 = 0.7 nats for
# half the share), while every 0.1 nat is worth up to a tick to the error ratio at 100 rps.
ALPHA_WEIGHTS = {"error_ratio": 0.85, "latency_ratio": 0.1, "error_rate": 0.02, "success_rate": 0.015,
                 "latency_p99": 0.015}


def weighted_holm(p_values: Mapping[str, float], weights: Mapping[str, float]) -> dict[str, float]:
    """Weighted Holm (Holm 1979): step down in order of p/w; each adjusted p is p·(remaining weight)/w."""
    ps = list(p_values.values())
    if all(p >= 1.0 for p in ps):
        return dict.fromkeys(p_values, 1.0)  # the usual tick of a healthy canary: nothing to order
    names = list(p_values)
    w = [weights.get(name, 1.0) for name in names]
    keys = [p / wt for p, wt in zip(ps, w, strict=True)]
    remaining = sum(w)
    adjusted: dict[str, float] = {}
    running = 0.0
    for i in sorted(range(len(names)), key=keys.__getitem__):  # stable: ties keep the given order
        running = max(running, min(1.0, ps[i] * remaining / w[i]))
        adjusted[names[i]] = running
        remaining -= w[i]
    return adjusted


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm's step-down adjusted p-values: reject where adjusted <= alpha (family-wise error <= alpha)."""
    ordered = sorted(p_values.items(), key=lambda kv: kv[1])
    m = len(ordered)
    adjusted: dict[str, float] = {}
    running = 0.0
    for i, (name, p) in enumerate(ordered):
        running = max(running, min(1.0, (m - i) * p))
        adjusted[name] = running
    return adjusted
