"""canaryd.analysis.counts: exact tests against scipy, edge cases, coverage and anytime validity."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats

from canaryd.analysis.counts import (
    LimitSequential,
    RatioSequential,
    limit_sequential_start,
    limit_sequential_update,
    limit_sequential_update_many,
    rate_limit_test,
    rate_ratio_test,
    ratio_sequential_start,
    ratio_sequential_update,
    upper_bound,
)

SPLIT = (0.05,) * 10 + (0.25,) * 10 + (0.5,) * 10  # canary share per tick: 5 % -> 25 % -> 50 %


def rel_err(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


# ---------------------------------------------------------------------------------------- fixed horizon


def test_rate_ratio_p_value_equals_binomtest_on_random_integers() -> None:
    rng = np.random.default_rng(20240601)
    compared = 0
    for _ in range(400):
        n_c = int(rng.integers(1, 100_000))
        n_s = int(rng.integers(1, 1_000_000))
        x_c = int(rng.integers(0, 300))
        x_s = int(rng.integers(0, 600)) if rng.random() > 0.1 else 0
        r0 = float(rng.choice([1.0, 1.5, 2.0, 3.0]))
        res = rate_ratio_test(x_c, n_c, x_s, n_s, r0=r0)
        if x_c + x_s == 0:
            assert res.p_value == 1.0
            continue
        assert res.p0 == pytest.approx(r0 * n_c / (r0 * n_c + n_s), rel=1e-15)
        expected = stats.binomtest(x_c, x_c + x_s, res.p0, alternative="greater").pvalue
        assert rel_err(res.p_value, expected) <= 1e-9, (x_c, n_c, x_s, n_s, r0)
        compared += 1
    assert compared > 350


def test_rate_limit_p_value_equals_binomtest_on_random_integers() -> None:
    rng = np.random.default_rng(7)
    for i in range(400):
        n = int(rng.integers(1, 50_000))
        limit = float(rng.choice([0.001, 0.01, 0.05, 0.2]))
        x = int(rng.binomial(n, min(limit * rng.uniform(0.2, 3.0), 1.0)))
        res = rate_limit_test(x, n, limit)
        expected = stats.binomtest(x, n, limit, alternative="greater")
        assert rel_err(res.p_value, expected.pvalue) <= 1e-9, (x, n, limit)
        assert res.rate == x / n
        if i % 10:
            continue  # scipy's interval is a slow root search: check a sample
        ci = stats.binomtest(x, n, limit).proportion_ci(confidence_level=0.95, method="exact")
        assert res.lower == pytest.approx(ci.low, rel=1e-6, abs=1e-12)
        assert res.upper == pytest.approx(ci.high, rel=1e-6)


def test_upper_bound_is_the_one_sided_clopper_pearson_bound() -> None:
    for x, n in [(0, 10), (3, 10), (10, 10), (17, 4000), (250, 1000)]:
        ci = stats.binomtest(x, n, 0.5, alternative="less").proportion_ci(0.95, method="exact")
        assert upper_bound(x, n, 0.05) == pytest.approx(ci.high, rel=1e-6)
    assert upper_bound(5, 0) == 1.0
    assert upper_bound(12, 10) == 1.0  # x > n: treated as x == n


def test_zero_stable_errors() -> None:
    res = rate_ratio_test(4, 1000, 0, 19000, r0=2.0)
    assert res.ratio is not None and math.isfinite(res.ratio)
    assert res.ratio == pytest.approx((4.5 / 1000) / (0.5 / 19000))
    assert res.ci is not None and res.ci[1] == math.inf and res.ci[0] > 0
    # x_c == m: P(X >= m) = p0**m
    assert res.p_value == pytest.approx(res.p0**4, rel=1e-12)
    assert 0 < res.p_value < 1


def test_zero_requests_and_zero_errors() -> None:
    for args in [(0, 0, 3, 100), (0, 100, 3, 0), (0, 0, 0, 0)]:
        res = rate_ratio_test(*args)
        assert (res.p_value, res.ratio, res.ci, res.p0) == (1.0, None, None, None)
    res = rate_ratio_test(0, 500, 0, 9500)
    assert (
        res.p_value == 1.0 and res.ci == (0.0, math.inf) and res.ratio == pytest.approx(19.0)
    )  # +1/2 on both arms
    res = rate_ratio_test(0, 500, 7, 9500)
    assert res.p_value == 1.0 and res.ci is not None and res.ci[0] == 0.0
    lim = rate_limit_test(0, 0, 0.05)
    assert (lim.rate, lim.p_value, lim.lower, lim.upper) == (None, 1.0, 0.0, 1.0)
    lim = rate_limit_test(0, 100, 0.05)
    assert lim.p_value == 1.0 and lim.lower == 0.0 and lim.rate == 0.0


def test_non_integer_counts_are_monotone_and_between_integer_neighbours() -> None:
    for k in (0, 1, 5, 30):
        xs = k + np.linspace(0.0, 1.0, 21)
        ps = [rate_ratio_test(x, 3000.0, 40.0, 47000.5).p_value for x in xs]
        assert all(a >= b for a, b in zip(ps, ps[1:], strict=False))
        assert ps[0] == rate_ratio_test(k, 3000.0, 40.0, 47000.5).p_value
        assert ps[-1] == pytest.approx(rate_ratio_test(k + 1, 3000.0, 40.0, 47000.5).p_value, rel=1e-12)
        lims = [rate_limit_test(x, 700.0, 0.02).p_value for x in xs]
        assert all(a >= b for a, b in zip(lims, lims[1:], strict=False))
        assert lims[0] == rate_limit_test(k, 700, 0.02).p_value
        assert lims[-1] == pytest.approx(rate_limit_test(k + 1, 700, 0.02).p_value, rel=1e-12)
        uppers = [upper_bound(x, 700.0) for x in xs]
        assert all(a <= b for a, b in zip(uppers, uppers[1:], strict=False))
    # fractional everything still gives a sane interval
    res = rate_ratio_test(12.4, 1003.7, 30.2, 18999.1)
    assert res.ci is not None and 0 < res.ci[0] < res.ratio < res.ci[1] < math.inf
    assert 0 < res.p_value < 1


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="x_s"):
        rate_ratio_test(1, 10, -1, 10)
    with pytest.raises(ValueError, match="n_c"):
        rate_ratio_test(1, math.nan, 1, 10)
    with pytest.raises(ValueError, match="r0"):
        rate_ratio_test(1, 10, 1, 10, r0=0)
    with pytest.raises(ValueError, match="limit"):
        rate_limit_test(1, 10, 5)  # a percentage, not a fraction
    with pytest.raises(ValueError, match="alpha"):
        rate_limit_test(1, 10, 0.05, alpha=1.5)
    with pytest.raises(ValueError, match="limit"):
        limit_sequential_start(0.0)


def test_ratio_ci_covers_the_true_ratio() -> None:
    rng = np.random.default_rng(11)
    true_ratio, n_c, n_s, base = 3.0, 4000.0, 36000.0, 0.004
    hits = 0
    trials = 1000
    for x_c, x_s in zip(
        rng.poisson(n_c * base * true_ratio, trials), rng.poisson(n_s * base, trials), strict=True
    ):
        ci = rate_ratio_test(int(x_c), n_c, int(x_s), n_s).ci
        assert ci is not None
        hits += ci[0] <= true_ratio <= ci[1]
    # Clopper-Pearson is conservative: at least nominal, up to a few points over.
    assert 0.93 <= hits / trials <= 0.995


# ---------------------------------------------------------------------------------------- sequential


def simulate_ratio_arms(
    rng: np.random.Generator, sims: int, requests_per_tick: float, base_rate: float, rho: float
) -> list[tuple[np.ndarray, float, np.ndarray, float]]:
    """Per tick: (canary errors per sim, canary requests, stable errors per sim, stable requests)."""
    ticks = []
    for share in SPLIT:
        n_c, n_s = requests_per_tick * share, requests_per_tick * (1 - share)
        ticks.append((rng.poisson(n_c * base_rate * rho, sims), n_c, rng.poisson(n_s * base_rate, sims), n_s))
    return ticks


def ever_rejected_sequential(ticks, sims: int, r0: float, alpha: float = 0.05) -> np.ndarray:
    rejected = np.zeros(sims, dtype=bool)
    first = np.full(sims, -1)
    for i in range(sims):
        state = ratio_sequential_start(r0)
        last_p = 1.0
        for t, (xc, n_c, xs, n_s) in enumerate(ticks):
            state = ratio_sequential_update(state, xc[i], n_c, xs[i], n_s)
            assert state.p_value <= last_p  # read at every tick; never increases
            last_p = state.p_value
            if state.p_value <= alpha and not rejected[i]:
                rejected[i], first[i] = True, t
    return first


def test_ratio_sequential_is_anytime_valid_in_aa_tests() -> None:
    rng = np.random.default_rng(42)
    sims = 200
    ticks = simulate_ratio_arms(rng, sims, requests_per_tick=2000, base_rate=0.005, rho=1.0)
    assert np.mean(ever_rejected_sequential(ticks, sims, r0=2.0) >= 0) <= 0.08


def test_ratio_sequential_is_anytime_valid_at_the_null_boundary() -> None:
    rng = np.random.default_rng(43)
    sims = 200
    ticks = simulate_ratio_arms(rng, sims, requests_per_tick=4000, base_rate=0.005, rho=2.0)
    assert np.mean(ever_rejected_sequential(ticks, sims, r0=2.0) >= 0) <= 0.08


def test_naive_fixed_horizon_test_read_every_tick_inflates_type_one_error() -> None:
    # Why the sequential test exists: the exact test, valid once, exceeds alpha when read 30 times.
    rng = np.random.default_rng(43)
    sims = 200
    ticks = simulate_ratio_arms(rng, sims, requests_per_tick=4000, base_rate=0.005, rho=2.0)
    ever = np.zeros(sims, dtype=bool)
    cum = np.zeros((4, sims))
    for xc, n_c, xs, n_s in ticks:
        cum += np.stack([xc, np.full(sims, n_c), xs, np.full(sims, n_s)])
        for i in range(sims):
            ever[i] |= rate_ratio_test(*cum[:, i]).p_value <= 0.05
    assert ever.mean() > 0.08


def test_ratio_sequential_has_power_for_a_5x_ratio() -> None:
    rng = np.random.default_rng(44)
    sims = 100
    ticks = simulate_ratio_arms(rng, sims, requests_per_tick=2000, base_rate=0.005, rho=5.0)
    first = ever_rejected_sequential(ticks, sims, r0=2.0)
    assert np.mean(first >= 0) >= 0.95  # within the 30 ticks (15 min)
    assert np.median(first[first >= 0]) <= 12


def test_ratio_sequential_state_rules() -> None:
    s0 = ratio_sequential_start(2.0)
    assert (s0.e_value, s0.max_e_value, s0.p_value) == (1.0, 1.0, 1.0)
    assert isinstance(s0, RatioSequential)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s0.log_e = 3.0  # type: ignore[misc]
    # no information: same state back
    assert ratio_sequential_update(s0, 3, 0, 5, 100) is s0
    assert ratio_sequential_update(s0, 3, 100, 5, 0) is s0
    assert ratio_sequential_update(s0, -1, 100, 5, 100) is s0
    assert ratio_sequential_update(s0, math.nan, 100, 5, 100) is s0
    s1 = ratio_sequential_update(s0, 0, 100, 0, 1900)
    assert s1.e_value == 1.0 and s1.n_c == 100 and s1.ticks == 1
    # pure: the old state is untouched; errors piling up in the canary build evidence
    s2 = ratio_sequential_update(s1, 6, 100, 2, 1900)
    assert s1.e_value == 1.0 and s2.e_value > 1.0 and s2.x_c == 6
    # evidence can fall again, but the anytime p-value keeps the best moment
    s3 = ratio_sequential_update(s2, 0, 100, 40, 1900)
    assert s3.e_value < s2.e_value and s3.max_e_value == s2.e_value and s3.p_value == s2.p_value
    # fractional increments are accepted and land between their integer neighbours
    lo = ratio_sequential_update(s1, 6, 100, 2, 1900).log_e
    mid = ratio_sequential_update(s1, 6.5, 100, 2, 1900).log_e
    hi = ratio_sequential_update(s1, 7, 100, 2, 1900).log_e
    assert lo < mid < hi


def test_limit_sequential_is_anytime_valid_at_the_limit_and_has_power() -> None:
    rng = np.random.default_rng(45)
    sims = 200

    def run(rate: float, limit: float = 0.05) -> np.ndarray:
        first = np.full(sims, -1)
        per_tick = [int(2000 * share) for share in SPLIT]
        draws = [rng.binomial(n, rate, sims) for n in per_tick]
        for i in range(sims):
            state = limit_sequential_start(limit)
            for t, (n, x) in enumerate(zip(per_tick, draws, strict=True)):
                state = limit_sequential_update(state, x[i], n)
                if state.p_value <= 0.05:
                    first[i] = t
                    break
        return first

    assert np.mean(run(0.05) >= 0) <= 0.08
    assert np.mean(run(0.01, limit=0.01) >= 0) <= 0.08  # "P99 > threshold" at the boundary
    assert np.mean(run(0.02) >= 0) == 0.0  # far inside the null
    strong = run(0.10)
    assert np.mean(strong >= 0) >= 0.95 and np.median(strong) <= 8


def test_limit_sequential_state_rules() -> None:
    s0 = limit_sequential_start(0.05)
    assert isinstance(s0, LimitSequential) and s0.p_value == 1.0
    assert limit_sequential_update(s0, 1, 0) is s0
    assert limit_sequential_update(s0, -2, 100) is s0
    ok = limit_sequential_update(s0, 1, 1000)  # 0.1 % against 5 %: evidence for H0
    assert ok.e_value < 1.0 and ok.p_value == 1.0 and ok.n == 1000
    bad = limit_sequential_update(s0, 30, 100)
    assert bad.p_value < 0.05
    capped = limit_sequential_update(s0, 130, 100)  # x > n treated as x == n
    assert capped.x == 100


@pytest.mark.parametrize(("rate", "limit"), [(0.01, 0.05), (0.05, 0.05), (0.07, 0.05), (0.3, 0.05), (0.011, 0.01),
                                             (1.0, 0.05)])
def test_limit_sequential_keeps_the_maximum_of_every_ticks_mixture(rate: float, limit: float) -> None:
    """A tick computes the mixture only where its bound may exceed the maximum so far: the maximum (the
    p-value) is still that of every tick's log E, read from the totals, alone and in the batched update."""
    rng = np.random.default_rng(11)
    one = many = limit_sequential_start(limit)
    top = 0.0
    for _ in range(60):
        n = float(rng.integers(1, 3000)) * float(rng.choice((0.01, 1.0)))
        x = float(rng.binomial(int(n) + 1, rate))  # x > n now and then: read as x = n
        one = limit_sequential_update(one, x, n)
        (many,) = limit_sequential_update_many([many], [x], [n])
        top = max(top, one.log_e)
        assert one.max_log_e == pytest.approx(top, abs=1e-9) and many.max_log_e == pytest.approx(top, abs=1e-9)
        assert (one.x, one.n, one.ticks) == (many.x, many.n, many.ticks)
