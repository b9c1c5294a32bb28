"""The judge: gates, verdicts, Holm's correction and the one decision, on simulated and hand-made data."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from canaryd.analysis import judge
from canaryd.analysis.judge import JudgeSettings, holm
from canaryd.analysis.snapshot import ArmSnapshot, Snapshot
from canaryd.analysis.verdicts import Decision, Verdict
from simulation import Arm, Scenario, simulate, snapshots

S = JudgeSettings()
STABLE = Arm(error_rate=0.005)


def run(snaps, settings=S, every=1):
    """Judge snapshots tick by tick; stop at the first rollback. Returns the judgements."""
    state = judge.start(settings, snaps[0].t, weight=snaps[0].weight)
    out = []
    for i, snap in enumerate(snaps):
        if i % every and i != len(snaps) - 1:
            continue
        j, state = judge.observe(state, snap, settings)
        out.append(j)
        if j.decision is Decision.ROLLBACK:
            break
    return out


def sim(canary: Arm, *, rps=100.0, duration=600.0, tick=30.0, weight=5.0, seed=1, stable=STABLE):
    return snapshots(simulate(Scenario(rps, stable, canary, duration, tick, weight), np.random.default_rng(seed)))


def arm(requests, errors, buckets=None, **kw):
    return ArmSnapshot(requests=requests, errors=errors, buckets=buckets, **kw)


def test_healthy_canary_advances_only_after_the_step_duration_and_min_requests():
    js = run(sim(STABLE, duration=420.0))
    before = [j for j in js if j.at < S.step_duration]
    assert all(j.decision is Decision.HOLD for j in before)
    assert any("step running" in r for r in before[-1].reasons)
    final = js[-1]
    assert final.decision is Decision.ADVANCE, final.reasons
    assert final.canary_requests >= S.min_requests
    judged = {m.name: m.verdict for m in final.metrics}
    assert judged["error_ratio"] is Verdict.PASS
    assert judged["latency_ratio"] is Verdict.PASS
    # No CPU or memory anywhere in the data: skipped, and they do not block promotion.
    assert judged["cpu"] is Verdict.SKIPPED and judged["memory"] is Verdict.SKIPPED


def test_bad_canary_rolls_back_as_soon_as_the_evidence_is_there_not_at_the_step_end():
    js = run(sim(replace(STABLE, error_rate=0.10)))
    final = js[-1]
    assert final.decision is Decision.ROLLBACK
    assert final.at < S.step_duration  # well before the 5-minute step is over
    assert final.canary_requests < S.min_requests  # the comparison needs no gate to fail
    failed = [m for m in final.metrics if m.verdict is Verdict.FAIL]
    assert failed and failed[0].name == "error_ratio"
    assert failed[0].adjusted_p_value <= S.alpha
    assert "significant" in final.reasons[0]


def test_absolute_error_rate_fails_only_once_the_canary_has_min_requests():
    # Stable is as bad as the canary, so only the absolute 5 % threshold can fail it.
    bad = Arm(error_rate=0.12)
    js = run(sim(bad, stable=bad, rps=400.0))
    final = js[-1]
    assert final.decision is Decision.ROLLBACK
    assert final.metric("error_rate").verdict is Verdict.FAIL
    assert final.canary_requests >= S.min_requests
    assert all(j.metric("error_rate").verdict is not Verdict.FAIL for j in js[1:-1])


def test_zero_errors_in_stable_still_compares():
    buckets = ((0.1, 0.0), (math.inf, 0.0))
    base = Snapshot(t=0, canary=arm(0, 0, buckets), stable=arm(0, 0, buckets))
    later = Snapshot(t=60, canary=arm(500, 40, ((0.1, 500.0), (math.inf, 500.0))),
                     stable=arm(9500, 0, ((0.1, 9500.0), (math.inf, 9500.0))))
    j = run([base, later])[-1]
    ratio = j.metric("error_ratio")
    assert j.decision is Decision.ROLLBACK
    assert ratio.verdict is Verdict.FAIL
    assert ratio.ratio is not None and math.isfinite(ratio.ratio) and ratio.ratio > 2
    assert math.isinf(ratio.ci[1])


def test_zero_requests_and_no_errors_anywhere_hold_without_crashing():
    z = arm(0, 0)
    js = run([Snapshot(t=0, canary=z, stable=z), Snapshot(t=600, canary=z, stable=z)])
    assert js[-1].decision is Decision.HOLD
    assert any("0 of the 1000 requests" in r for r in js[-1].reasons)


def test_fractional_counts_from_increase_extrapolation():
    base = Snapshot(t=0, canary=arm(0.0, 0.0), stable=arm(0.0, 0.0))
    later = Snapshot(t=400, canary=arm(1500.7, 3.3), stable=arm(28000.2, 140.6))
    j = run([base, later])[-1]
    assert j.decision is Decision.ADVANCE, j.reasons
    assert 0 <= j.metric("error_ratio").p_value <= 1


def test_metric_that_had_data_and_lost_it_is_inconclusive_and_holds():
    base = Snapshot(t=0, canary=arm(0, 0, cpu=10.0), stable=arm(0, 0, cpu=10.0))
    mid = Snapshot(t=300, canary=arm(2000, 2, cpu=30.0), stable=arm(38000, 40, cpu=30.0))
    lost = Snapshot(t=360, canary=arm(2400, 2), stable=arm(45600, 48))
    js = run([base, mid, lost])
    assert js[1].decision is Decision.ADVANCE, js[1].reasons
    assert js[2].metric("cpu").verdict is Verdict.INCONCLUSIVE
    assert js[2].decision is Decision.HOLD
    assert any(r.startswith("cpu: no data") for r in js[2].reasons)


def test_warn_thresholds_warn_but_do_not_block():
    base = Snapshot(t=0, canary=arm(0, 0, memory=50.0), stable=arm(0, 0, memory=50.0))
    later = Snapshot(t=400, canary=arm(2000, 2, memory=91.0), stable=arm(38000, 40, memory=60.0))
    j = run([base, later])[-1]
    assert j.metric("memory").verdict is Verdict.WARN
    assert j.decision is Decision.ADVANCE
    assert any("memory" in r and "warning" in r for r in j.reasons)


def test_latency_shift_beyond_the_allowed_ratio_rolls_back_and_a_small_one_does_not():
    slow = run(sim(replace(STABLE, latency_median=0.2), rps=200.0))[-1]
    assert slow.decision is Decision.ROLLBACK
    m = slow.metric("latency_ratio")
    assert m.verdict is Verdict.FAIL and m.ratio > 1.5
    assert m.evidence["mann_whitney_effect"] > 0.5
    mild = run(sim(replace(STABLE, latency_median=0.11), rps=200.0))[-1]
    assert mild.decision is Decision.ADVANCE, mild.reasons


def test_p99_above_the_limit_is_a_rollback_and_p95_only_a_warning():
    slow_tail = Arm(latency_median=0.45, latency_sigma=0.5)  # P99 ≈ 1.4 s, P95 ≈ 1.0 s
    j = run(sim(slow_tail, stable=slow_tail, rps=400.0))[-1]
    assert j.decision is Decision.ROLLBACK
    assert j.metric("latency_p99").verdict is Verdict.FAIL
    assert j.metric("latency_p95").action.value == "warn"


def test_canary_not_receiving_traffic_is_flagged_and_holds():
    base = Snapshot(t=0, canary=arm(0, 0), stable=arm(0, 0), weight=25.0)
    later = Snapshot(t=400, canary=arm(1000, 1), stable=arm(60000, 60), weight=25.0)
    j = run([base, later])[-1]
    assert j.decision is Decision.HOLD
    assert any("canary not receiving traffic" in r for r in j.reasons)


def test_comparisons_are_skipped_at_full_weight():
    base = Snapshot(t=0, canary=arm(0, 0), stable=arm(0, 0), weight=100.0)
    later = Snapshot(t=400, canary=arm(30000, 30), stable=arm(0, 0), weight=100.0)
    j = run([base, later])[-1]
    assert j.metric("error_ratio").verdict is Verdict.SKIPPED
    assert j.decision is Decision.ADVANCE, j.reasons


def test_a_step_that_holds_too_long_times_out_to_the_configured_policy():
    z = arm(0, 0)
    snaps = [Snapshot(t=t, canary=z, stable=z) for t in (0, 300, 900)]
    paused = run(snaps)[-1]
    assert paused.decision is Decision.HOLD and paused.timed_out
    assert "max_step_duration" in paused.reasons[0]
    rolled = run(snaps, replace(S, timeout_rollback=True))[-1]
    assert rolled.decision is Decision.ROLLBACK and rolled.timed_out


def test_disabled_thresholds_are_skipped():
    settings = replace(S, cpu=None, error_ratio=None)
    j = run(sim(STABLE, duration=420.0), settings)[-1]
    assert j.metric("cpu").verdict is Verdict.SKIPPED
    assert j.metric("error_ratio").verdict is Verdict.SKIPPED
    assert "disabled" in j.metric("error_ratio").reason


def test_next_step_starts_a_new_window_and_keeps_the_anytime_evidence():
    snaps = sim(replace(STABLE, error_rate=0.02), duration=300.0, seed=3)
    state = judge.start(S, 0.0)
    for snap in snaps:
        _, state = judge.observe(state, snap, S)
    before = state.sequentials.error_ratio.max_e_value
    state = judge.next_step(state, 300.0, weight=25.0)
    assert state.baseline.t == 300.0 and state.step_started_at == 300.0
    assert state.sequentials.error_ratio.max_e_value == before


def test_holm_adjusted_p_values():
    adj = holm({"a": 0.01, "b": 0.04, "c": 0.03})
    assert adj["a"] == pytest.approx(0.03)
    assert adj["c"] == pytest.approx(0.06)
    assert adj["b"] == pytest.approx(0.06)  # monotone: never below an earlier adjusted value
    assert holm({}) == {}


def test_family_wise_false_rollbacks_stay_below_alpha_when_judged_every_tick():
    """200 A/A rollouts, judged at every 30 s tick for 20 minutes: the share ever rolled back is at
    most alpha plus sampling slack (3 binomial standard errors)."""
    rng = np.random.default_rng(2026)
    scenario = Scenario(100, STABLE, STABLE, duration=1200.0, tick=30.0, weight=5.0)
    rolled_back = 0
    for _ in range(200):
        snaps = snapshots(simulate(scenario, rng))
        if run(snaps)[-1].decision is Decision.ROLLBACK:
            rolled_back += 1
    slack = 3 * math.sqrt(S.alpha * (1 - S.alpha) / 200)
    assert rolled_back / 200 <= S.alpha + slack


def test_a_counter_that_appears_late_gives_no_false_signal():
    """2xx counts that show up a tick after the requests must not read as a tick of all-failed requests."""
    buckets = None
    snaps = [
        Snapshot(t=0, canary=ArmSnapshot(requests=0.0, errors=0.0), stable=ArmSnapshot(requests=0.0, errors=0.0)),
        Snapshot(t=30, canary=ArmSnapshot(requests=2000.0, errors=0.0, buckets=buckets),
                 stable=ArmSnapshot(requests=38000.0, errors=40.0)),
        Snapshot(t=60, canary=ArmSnapshot(requests=4000.0, errors=0.0, successes=2000.0),
                 stable=ArmSnapshot(requests=76000.0, errors=80.0, successes=38000.0)),
        Snapshot(t=90, canary=ArmSnapshot(requests=6000.0, errors=0.0, successes=4000.0),
                 stable=ArmSnapshot(requests=114000.0, errors=120.0, successes=76000.0)),
    ]
    js = run(snaps)
    assert all(j.decision is not Decision.ROLLBACK for j in js), [j.reasons for j in js]
    assert js[-1].metric("success_rate").verdict is not Verdict.FAIL
