"""The overdispersion-aware error-ratio test and the bucket-edge latency test, on their own."""

from __future__ import annotations

import math

import numpy as np

from canaryd.analysis.dispersion import estimate, history_rows, robust_ratio_start, robust_ratio_update
from canaryd.analysis.judge import weighted_holm
from canaryd.analysis.latency import edge_pairs, quantile_bucket, surely_above, too_coarse
from simulation import PROM_DEFAULT_BUCKETS


def _run(rng: np.random.Generator, ticks: int, n_c: float, n_s: float, p_c: float, p_s: float,
         burst_shape: float | None = None):
    state = robust_ratio_start(2.0)
    for _ in range(ticks):
        g_c = g_s = 1.0
        if burst_shape is not None:
            g_c, g_s = rng.gamma(burst_shape, 1 / burst_shape, 2)
        state = robust_ratio_update(state, rng.binomial(int(n_c), min(p_c * g_c, 1.0)), n_c,
                                    rng.binomial(int(n_s), min(p_s * g_s, 1.0)), n_s)
    return state


def test_anytime_valid_on_binomial_traffic_at_the_null_boundary():
    # Canary at exactly 2× stable (the boundary of H0), many errors a tick, judged at every tick.
    rng = np.random.default_rng(11)
    runs = 300
    rejected = sum(_run(rng, 40, 7500, 22500, 0.01, 0.005).p_value <= 0.05 for _ in range(runs))
    assert rejected / runs <= 0.05 + 1.96 * math.sqrt(0.05 * 0.95 / runs)


def test_bursts_are_detected_and_discounted_and_binomial_is_not():
    rng = np.random.default_rng(5)
    bursty = _run(rng, 12, 7500, 22500, 0.005, 0.005, burst_shape=2.0)
    assert bursty.detected and bursty.phi > 3
    plain = _run(rng, 12, 7500, 22500, 0.005, 0.005)
    assert not plain.detected and plain.phi == 1.0


def test_a_steady_ratio_is_not_dispersion():
    ticks = tuple((75.0 * f, 112.5 * f, 7500.0 * f, 22500.0 * f) for f in (1, 1.2, 0.8, 1.1, 0.9, 1.0))
    est = estimate(ticks, 2.0)
    assert est.p_value > 0.5 and est.v == 0.0


def test_weighted_holm_gives_each_metric_its_share_of_alpha():
    adj = weighted_holm({"a": 0.03, "b": 0.5}, {"a": 0.75, "b": 0.25})
    assert math.isclose(adj["a"], 0.04) and math.isclose(adj["b"], 0.5)
    assert weighted_holm({}, {}) == {}


def test_bucket_edges_bound_quantiles_without_interpolation():
    counts = (0, 0, 0, 10, 80, 100, 100, 100, 100, 100, 100, 100)  # cumulative
    buckets = tuple(zip(PROM_DEFAULT_BUCKETS, map(float, counts), strict=True))
    assert quantile_bucket(0.95, buckets) == (0.1, 0.25)
    assert too_coarse((0.1, 0.25), 1.5) and not too_coarse((0.1, 0.125), 1.5)
    assert surely_above(buckets, 0.2) == (0.0, 100.0)  # nothing is surely above 200 ms
    assert surely_above(buckets, 0.05) == (90.0, 100.0)
    assert surely_above(buckets, 0.06) == (20.0, 100.0)  # those above 100 ms
    pairs = edge_pairs(PROM_DEFAULT_BUCKETS, 1.5)
    assert (3, 4) in pairs  # 50 ms for stable, 100 ms (>= 75 ms) for the canary


def _history(rng: np.random.Generator, ticks: int, n: float, p: float, burst_shape: float | None = None):
    return [(float(rng.binomial(int(n), min(p * (rng.gamma(burst_shape, 1 / burst_shape) if burst_shape else 1.0),
                                               1.0))), n) for _ in range(ticks)]


def test_a_binomial_history_lets_the_first_tick_count_in_full():
    rng = np.random.default_rng(3)
    tick = (75.0, 140.0, 1500.0, 28500.0)  # a canary 5x stable at 0.5 %, one tick of 1000 rps at 5 %
    unread = robust_ratio_update(robust_ratio_start(2.0), tick[0], tick[2], tick[1], tick[3])
    plain = robust_ratio_start(2.0, history=_history(rng, 20, 30000, 0.005))
    read = robust_ratio_update(plain, tick[0], tick[2], tick[1], tick[3])
    assert unread.phi > 1.5 and read.phi == 1.0 and read.log_e > unread.log_e
    bursty = robust_ratio_start(2.0, history=_history(rng, 20, 30000, 0.005, burst_shape=2.0))
    discounted = robust_ratio_update(bursty, tick[0], tick[2], tick[1], tick[3])
    assert discounted.phi > unread.phi  # stable's bursts say more than the prior's guess


def test_a_short_or_unusable_history_is_the_prior():
    few = robust_ratio_start(2.0, history=[(15.0, 3000.0)] * 4)
    junk = robust_ratio_start(2.0, history=[(None, 3000.0), (1.0, 0.0), (math.nan, 5.0)] * 5)
    assert history_rows(junk.history) == []
    for start in (few, junk):
        after = robust_ratio_update(start, 20.0, 150.0, 15.0, 2850.0)
        assert after.phi == robust_ratio_update(robust_ratio_start(2.0), 20.0, 150.0, 15.0, 2850.0).phi > 1.0


def test_anytime_valid_at_the_null_boundary_with_a_binomial_history():
    rng = np.random.default_rng(17)
    runs = 300
    rejected = 0
    for _ in range(runs):
        state = robust_ratio_start(2.0, history=_history(rng, 20, 30000, 0.005))
        for _ in range(40):
            state = robust_ratio_update(state, rng.binomial(1500, 0.01), 1500, rng.binomial(28500, 0.005), 28500)
        rejected += state.p_value <= 0.05
    assert rejected / runs <= 0.05 + 1.96 * math.sqrt(0.05 * 0.95 / runs)


def test_the_judge_takes_stable_history_at_start():
    from canaryd.analysis import judge
    from canaryd.analysis.snapshot import ArmSnapshot

    s = judge.JudgeSettings()
    history = [ArmSnapshot(requests=3000.0, errors=15.0)] * 6 + [ArmSnapshot(requests=3000.0)]
    assert history_rows(judge.start(s, 0.0, history=history).sequentials.error_ratio.history) == [(15.0, 3000.0)] * 6
    assert judge.start(s, 0.0).sequentials.error_ratio.history is None


def test_history_read_after_the_start_is_taken_until_the_first_tick():
    from canaryd.analysis import judge
    from canaryd.analysis.snapshot import ArmSnapshot, Snapshot

    s = judge.JudgeSettings()
    history = [ArmSnapshot(requests=3000.0, errors=15.0)] * 6
    state = judge.with_history(judge.start(s, 0.0), s, history)
    assert history_rows(state.sequentials.error_ratio.history) == [(15.0, 3000.0)] * 6
    zero = Snapshot(t=0.0, canary=ArmSnapshot(requests=0.0, errors=0.0), stable=ArmSnapshot(requests=0.0, errors=0.0))
    one = Snapshot(t=30.0, canary=ArmSnapshot(requests=150.0, errors=3.0), stable=ArmSnapshot(requests=2850.0, errors=14.0))
    _, ticked = judge.observe(judge.start(s, 0.0, baseline=zero), one, s)
    assert judge.with_history(ticked, s, history) is ticked
