"""The judge's fast paths give the results of the plain ones (within 1e-9) on seeded corpora.

`ratio_sequential_update_many` against one `ratio_sequential_update` per state, `scale_sequential_update`
against the per-pair loop it replaced, on whole and fractional counts (the daemon's `increase()` values)
and on the awkward increments (zero, negative, NaN, infinite); `judge.observe_many` against one `observe`
per canary; and the whole judge (both entry points) against the revision before the speed work, exported
with git archive, when the repository has it.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from canaryd.analysis.counts import (
    RatioSequential,
    ratio_sequential_start,
    ratio_sequential_update,
    ratio_sequential_update_many,
    unpack,
)
from canaryd.analysis.distribution import bucket_counts
from canaryd.analysis.latency import (
    edge_pairs,
    scale_sequential_start,
    scale_sequential_update,
)
from simulation import PROM_DEFAULT_BUCKETS, Arm, TickSource, Traffic

ROOT = os.path.join(os.path.dirname(__file__), "..")
TOL = 1e-9


def _close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b) or math.isinf(a) or math.isinf(b):
        return a == b or (math.isnan(a) and math.isnan(b))
    return abs(a - b) <= TOL * max(1.0, abs(a), abs(b))


def _same(a: RatioSequential, b: RatioSequential) -> None:
    assert (a.r0, a.prior, a.ticks) == (b.r0, b.prior, b.ticks)
    for x, y in zip((a.log_e, a.max_log_e, a.x_c, a.n_c, a.x_s, a.n_s, *unpack(a.log_lr).tolist()),
                    (b.log_e, b.max_log_e, b.x_c, b.n_c, b.x_s, b.n_s, *unpack(b.log_lr).tolist()), strict=True):
        assert _close(x, y), (x, y)


AWKWARD = (0.0, -1.0, math.nan, math.inf)


@pytest.mark.parametrize("seed", range(6))
def test_many_updates_match_one_at_a_time(seed: int) -> None:
    rng = np.random.default_rng(seed)
    states = [ratio_sequential_start(float(r0)) for r0 in (1.0,) * 12]
    for tick in range(60):
        scale = 1.0 if seed % 2 else float(rng.uniform(0.3, 3.0))  # fractional counts on even seeds
        n_c, n_s = float(rng.poisson(200)) * scale, float(rng.poisson(3000)) * scale
        x_c = [float(rng.binomial(int(n_c) + 1, 0.2)) * scale for _ in states]
        x_s = [float(rng.binomial(int(n_s) + 1, 0.1)) * scale for _ in states]
        if tick % 7 == 3:
            x_c[tick % len(states)] = AWKWARD[tick % 4]
        if tick % 11 == 5:
            n_c = AWKWARD[tick % 4]
        if tick % 13 == 4:
            x_c, x_s = [0.0] * len(states), [0.0] * len(states)
        fast = ratio_sequential_update_many(states, x_c, n_c, x_s, n_s)
        plain = [ratio_sequential_update(st, a, n_c, b, n_s) for st, a, b in zip(states, x_c, x_s, strict=True)]
        for f, p in zip(fast, plain, strict=True):
            _same(f, p)
        states = list(plain)


def test_many_updates_with_mixed_states_fall_back() -> None:
    states = [ratio_sequential_start(1.0), ratio_sequential_start(2.0)]
    fast = ratio_sequential_update_many(states, [3.0, 4.0], 100.0, [1.0, 2.0], 900.0)
    for f, st, a, b in zip(fast, states, (3.0, 4.0), (1.0, 2.0), strict=True):
        _same(f, ratio_sequential_update(st, a, 100.0, b, 900.0))
    assert ratio_sequential_update_many([], [], 1.0, [], 1.0) == ()


@dataclass(frozen=True)
class _PlainScale:
    """ScaleSequential as it was: a RatioSequential per edge pair."""

    limit: float
    les: tuple[float, ...] = ()
    pairs: tuple[tuple[int, int], ...] = ()
    tests: tuple[RatioSequential, ...] = ()
    log_e: float = 0.0
    max_log_e: float = 0.0
    best: int = -1


def _plain_scale_update(state: _PlainScale, canary, stable) -> _PlainScale:  # type: ignore[no-untyped-def]
    """scale_sequential_update as it was: one ratio update per pair, tails summed per pair."""
    les = tuple(float(le) for le, _ in canary)
    if not state.pairs:
        pairs = edge_pairs(les, state.limit)
        state = _PlainScale(limit=state.limit, les=les, pairs=pairs,
                            tests=tuple(ratio_sequential_start(1.0) for _ in pairs))
    c, s = np.asarray(bucket_counts(canary)), np.asarray(bucket_counts(stable))
    n_c, n_s = float(c.sum()), float(s.sum())
    tests = tuple(ratio_sequential_update(t, float(c[e + 1:].sum()), n_c, float(s[b + 1:].sum()), n_s)
                  for t, (b, e) in zip(state.tests, state.pairs, strict=True))
    logs = np.array([t.log_e for t in tests])
    top = float(logs.max())
    log_e = top + math.log(float(np.exp(logs - top).mean()))
    return _PlainScale(limit=state.limit, les=les, pairs=state.pairs, tests=tests, log_e=log_e,
                       max_log_e=max(state.max_log_e, log_e), best=int(np.argmax(logs)))


@pytest.mark.parametrize(("seed", "slow", "fractional"), [(1, 1.0, False), (2, 2.5, False), (3, 1.0, True),
                                                         (4, 2.5, True)])
def test_scale_update_matches_the_per_pair_loop(seed: int, slow: float, fractional: bool) -> None:
    stable = Arm(latency_median=0.05, latency_sigma=0.6)
    canary = Arm(latency_median=0.05 * slow, latency_sigma=0.6)
    traffic = Traffic(bounds=PROM_DEFAULT_BUCKETS, latency_swing=0.2)
    rng = np.random.default_rng(seed)
    source = TickSource(200.0, stable, canary, traffic, rng)
    fast, plain = scale_sequential_start(1.5), _PlainScale(limit=1.5)
    for _ in range(80):
        tick = source.tick(25.0, 30.0)
        k = float(rng.uniform(0.5, 1.5)) if fractional else 1.0
        c = tuple((le, n * k) for le, n in tick.canary.buckets)
        s = tuple((le, n * k) for le, n in tick.stable.buckets)
        fast, plain = scale_sequential_update(fast, c, s), _plain_scale_update(plain, c, s)
        assert (fast.best, fast.pairs, fast.les) == (plain.best, plain.pairs, plain.les)
        assert _close(fast.log_e, plain.log_e) and _close(fast.max_log_e, plain.max_log_e)
        for f, p in zip(fast.tests, plain.tests, strict=True):
            _same(f, p)


def _bench():  # type: ignore[no-untyped-def]
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import judge_speed

    return judge_speed


def _has_revision(rev: str) -> bool:
    probe = subprocess.run(["git", "-C", ROOT, "cat-file", "-e", f"{rev}^{{commit}}"], capture_output=True)
    return probe.returncode == 0


def test_whole_judge_matches_the_revision_before_the_speed_work() -> None:
    """observe and observe_many, each against the judge before the speed work."""
    if not _has_revision(_bench().DEFAULT_BASELINE):
        pytest.skip("the repository has no history back to the baseline revision")
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "judge_speed.py"), "--rollouts", "12",
                          "--ticks", "40", "--rounds", "1"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    for label in ("observe", "observe_many"):
        assert f"identical results, {label:<13} yes" in out.stdout, out.stdout


def test_observe_many_matches_observe_one_at_a_time() -> None:
    """Every rollout's tick judged in one observe_many call: the judgements and states of observe."""
    js = _bench()
    runs = js._snapshots(js.build_corpus(12, 24))
    _, one = js._judge_all(runs, keep=True)
    _, many, states = js._judge_batched(runs, keep=True)
    d = js.compare(one, many)
    assert (d.decisions, d.verdicts, d.shape) == (0, 0, 0) and d.max_abs <= TOL, d
    for plain, batched in zip(js._final_states(runs), states, strict=True):
        for name in ("error_ratio", "latency_ratio", "error_rate", "success_rate", "latency_p95", "latency_p99"):
            a, b = getattr(plain.sequentials, name), getattr(batched.sequentials, name)
            assert _close(a.max_log_e, b.max_log_e) and _close(a.log_e, b.log_e), name
        assert plain.seen == batched.seen and plain.last is batched.last


def test_observe_many_with_mixed_canaries() -> None:
    """First samples, canaries without histograms or 2xx counts, and other bucket layouts in one call."""
    from canaryd.analysis import judge
    from canaryd.analysis.settings import JudgeSettings
    from canaryd.analysis.snapshot import ArmSnapshot, Snapshot

    s = JudgeSettings()
    rng = np.random.default_rng(7)

    def arm(t: float, kind: int) -> ArmSnapshot:
        n = 200.0 * t
        buckets = None if kind == 1 else tuple((le, n * min(1.0, le / (0.3 + 0.1 * kind)))
                                               for le in ((0.1, 0.25, 0.5, 1.0, math.inf) if kind == 2 else
                                                          (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, math.inf)))
        return ArmSnapshot(requests=n, errors=float(rng.binomial(int(n), 0.01 * (1 + kind))),
                           successes=None if kind == 3 else n * 0.97, buckets=buckets, cpu=50.0)

    plain = [judge.start(s, 0.0, weight=25.0) for _ in range(5)]
    batched = list(plain)
    for t in range(1, 12):
        snaps = [Snapshot(t=30.0 * t, canary=arm(t, k % 4), stable=arm(t, 0 if k % 4 == 2 else k % 4), weight=25.0)
                 for k in range(5)]
        if t == 3:  # a canary that starts late: its first sample among others' ticks
            plain[4] = batched[4] = judge.start(s, 90.0, weight=25.0)
        results = judge.observe_many(batched, snaps, s)
        for k, (j, state) in enumerate(results):
            jp, plain[k] = judge.observe(plain[k], snaps[k], s)
            assert j.decision == jp.decision and j.reasons == jp.reasons
            for a, b in zip(j.metrics, jp.metrics, strict=True):
                assert (a.name, a.verdict, a.reason) == (b.name, b.verdict, b.reason)
                for x, y in ((a.p_value, b.p_value), (a.anytime_p_value, b.anytime_p_value)):
                    assert (x is None) == (y is None) and (x is None or _close(x, y)), (a.name, x, y)
            batched[k] = state
    assert judge.observe_many([], [], s) == []


def test_records_built_without_init_are_whole() -> None:
    """The records the judge builds without their __init__ (analysis.frozen) have every field, equal the
    ones their __init__ makes, and stay frozen."""
    import dataclasses

    from canaryd.analysis import judge
    from canaryd.analysis.frozen import complete
    from canaryd.analysis.settings import JudgeSettings

    js = _bench()
    s = JudgeSettings()
    state = judge.start(s, 0.0, weight=5.0)
    for snap, _ in js._snapshots(js.build_corpus(1, 6))[0]:
        j, state = judge.observe(state, snap, s)
    seq = state.sequentials
    built = [j, state, seq, seq.error_rate, seq.success_rate, seq.latency_p95, seq.latency_p99, seq.error_ratio,
             seq.error_ratio.binomial, seq.latency_ratio, *j.metrics]
    assert seq.error_ratio.binomial.ticks and seq.latency_ratio.ticks  # made by updates, not by start
    for obj in built:
        assert complete(obj), type(obj)
        assert type(obj)(**{f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}) == obj
        with pytest.raises(dataclasses.FrozenInstanceError):
            obj.__setattr__(dataclasses.fields(obj)[0].name, None)


def test_lazily_made_fields_read_as_values() -> None:
    """A judgement's reasons and each verdict's reason and evidence are made on first read (analysis.frozen.Lazy):
    every reader sees the values, copies and pickles hold them, and a record read once keeps them."""
    import copy
    import dataclasses
    import pickle

    from canaryd.analysis import judge
    from canaryd.analysis.settings import JudgeSettings
    from canaryd.analysis.verdicts import Judgement, MetricResult

    js = _bench()
    s = JudgeSettings()
    runs = js._snapshots(js.build_corpus(3, 12))
    for run in runs:
        state = judge.start(s, 0.0, weight=5.0)
        for snap, _ in run:
            j, state = judge.observe(state, snap, s)
            fresh = [pickle.loads(pickle.dumps(j)), copy.deepcopy(j), copy.copy(j)]
            as_dict = dataclasses.asdict(j)
            assert all(isinstance(r, str) for r in j.reasons) and j.reasons
            for m, d in zip(j.metrics, as_dict["metrics"], strict=True):
                assert isinstance(m.reason, str) and m.reason.startswith(m.name + ": ")
                assert isinstance(m.evidence, dict) and (m.reason, m.evidence) == (d["reason"], d["evidence"])
                assert dataclasses.replace(m) == m
                assert set(vars(m)) == {f.name for f in dataclasses.fields(MetricResult)}  # kept once read
            for other in fresh:
                assert other == j and other.to_json() == j.to_json()
                assert set(vars(other)) == {f.name for f in dataclasses.fields(Judgement)}
