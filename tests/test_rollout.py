"""The rollout state machine (rollout.py): pure, so every path runs without a clock or a cluster."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from canaryd import rollout as ro
from canaryd.analysis.judge import JudgeSettings
from canaryd.analysis.snapshot import ArmSnapshot
from canaryd.rollout import Phase, Promote, Rollback, Rollout, SetWeight, TransitionError, Trigger
from simulation import Arm, Scenario, simulate

STEPS = (5, 25, 50, 100)
SETTINGS = JudgeSettings(min_requests=100, step_duration=10.0, max_step_duration=30.0)
BOUNDS = (0.05, 0.1, 0.25, 0.5, 1.0, math.inf)
FAST = (0.5, 0.9, 1.0, 1.0, 1.0, 1.0)  # cumulative share of requests at or below each bound


def arm(n: float, error_rate: float = 0.0, shares: tuple[float, ...] = FAST) -> ArmSnapshot:
    """One tick's increment for one arm."""
    return ArmSnapshot(requests=n, errors=n * error_rate, successes=n * (1 - error_rate),
                       buckets=tuple((le, n * f) for le, f in zip(BOUNDS, shares, strict=True)))


def rollout(**kw: object) -> Rollout:
    return Rollout(steps=STEPS, settings=kw.pop("settings", SETTINGS), **kw)  # type: ignore[arg-type]


def started(r: Rollout | None = None, now: float = 0.0) -> Rollout:
    r, _ = ro.start(r or rollout(), now)
    return r


def tick(r: Rollout, now: float, *, canary: ArmSnapshot | None = None, stable: ArmSnapshot | None = None,
         ) -> tuple[Rollout, list[ro.Effect], object]:
    r = ro.accumulate(r, now, canary if canary is not None else arm(500), stable if stable is not None else arm(500))
    return ro.judge_tick(r, now)


def run(r: Rollout, *, until: float, every: float = 5.0, start: float = 0.0, error_rate: float = 0.0,
        n: float = 500) -> tuple[Rollout, list[tuple[float, ro.Effect]]]:
    """Feed ticks every `every` seconds up to `until` (or until the rollout stops progressing)."""
    effects: list[tuple[float, ro.Effect]] = []
    t = start
    while t + every <= until + 1e-9 and r.phase is Phase.PROGRESSING:
        t += every
        r, eff, _ = tick(r, t, canary=arm(n, error_rate), stable=arm(n))
        effects.extend((t, e) for e in eff)
    return r, effects


# ---------------------------------------------------------------------------------------------- start


def test_start_sets_the_first_step() -> None:
    r, effects = ro.start(rollout(), 100.0)
    assert effects == [SetWeight(5)]
    assert (r.phase, r.step, r.weight, r.step_started_at, r.started_at) == (Phase.PROGRESSING, 0, 5, 100.0, 100.0)
    assert [h["decision"] for h in r.history] == ["start"]
    assert r.history[0]["trigger"] == "start"
    assert r.to_json()["phase"] == "progressing"


def test_a_fresh_rollout_is_idle_and_not_judged() -> None:
    r = rollout()
    assert (r.phase, r.step, r.weight) == (Phase.IDLE, -1, 0)
    same, effects, judgement = ro.judge_tick(ro.accumulate(r, 5.0, arm(500), arm(500)), 5.0)
    assert (same.phase, effects, judgement) == (Phase.IDLE, [], None)
    assert not ro.due(r, 1000.0, 1.0)


# ---------------------------------------------------------------------------------------------- steps


def test_steps_advance_only_on_an_advance_decision_after_the_step_duration() -> None:
    r = started()
    weights = [5]
    t = 0.0
    while r.phase is Phase.PROGRESSING and t < 100:
        before = r.step
        t += 5.0
        r, effects, judgement = tick(r, t)
        assert judgement is not None
        if judgement.decision.value == "advance":
            assert r.step == before + 1 or r.phase is not Phase.PROGRESSING
        else:
            assert r.step == before and effects == []  # a hold never moves traffic
        for e in effects:
            if isinstance(e, SetWeight):
                weights.append(e.weight)
    assert weights == [5, 25, 50, 100]
    # Each step lasted at least step_duration: advances are >= 10 s apart.
    advances = [h["at"] for h in r.history if h["decision"] == "advance"]
    assert len(advances) == 4
    assert all(b - a >= SETTINGS.step_duration for a, b in zip(advances, advances[1:], strict=False))
    # auto_promote is off: paused at 100 % awaiting promotion, no promotion effect.
    assert r.phase is Phase.PAUSED and r.awaiting_promotion and r.weight == 100
    assert "promote" in (r.paused_reason or "")


def test_a_step_never_passes_before_its_duration_even_with_plenty_of_traffic() -> None:
    r = started()
    r, _, _ = tick(r, 1.0, canary=arm(10_000), stable=arm(10_000))  # baseline
    for t in (2.0, 4.0, 6.0, 8.0, 9.9):
        r, effects, judgement = tick(r, t, canary=arm(10_000), stable=arm(10_000))
        assert judgement is not None and judgement.decision.value == "hold" and effects == []
        assert any("minimum" in reason for reason in judgement.reasons)
    assert r.step == 0


def test_auto_promote_promotes_after_the_last_step() -> None:
    r, effects = run(started(rollout(auto_promote=True)), until=100)
    assert r.phase is Phase.PROMOTING
    assert [e for _, e in effects if isinstance(e, Promote)] == [Promote()]
    assert r.history[-1]["decision"] == "promote" and r.history[-1]["trigger"] == "auto"
    done, more = ro.promoted(r, 200.0, Trigger.AUTO)
    assert (done.phase, done.weight) == (Phase.SUCCEEDED, 0)
    assert [type(e) for e in more] == [ro.Notify] and more[0].kind == "promotion"
    assert done.history[-1]["decision"] == "promoted"
    # Nothing is judged once it is over.
    assert ro.judge_tick(ro.accumulate(done, 205.0, arm(500), arm(500)), 205.0)[1] == []


def test_waiting_for_promotion_accepts_promote_and_rollback_but_not_resume() -> None:
    r, _ = run(started(), until=100)
    assert r.phase is Phase.PAUSED and r.awaiting_promotion
    with pytest.raises(TransitionError, match="promote it"):
        ro.command(r, "resume", 200.0)
    promoted, effects = ro.command(r, "promote", 200.0)
    assert promoted.phase is Phase.PROMOTING and effects == [Promote()] and not promoted.awaiting_promotion
    rolled, effects = ro.command(r, "rollback", 200.0)
    assert rolled.phase is Phase.ROLLED_BACK and isinstance(effects[0], Rollback)


def test_a_bad_canary_is_rolled_back_by_analysis() -> None:
    r, effects = run(started(), until=100, error_rate=0.10)
    assert r.phase is Phase.ROLLED_BACK and r.weight == 0
    kinds = [type(e) for _, e in effects]
    assert kinds == [Rollback, ro.Notify]
    notify = effects[1][1]
    assert isinstance(notify, ro.Notify) and notify.kind == "rollback" and notify.trigger is Trigger.ANALYSIS
    last = r.last_decision
    assert last is not None and last["decision"] == "rollback" and last["trigger"] == "analysis"
    verdicts = {m["name"]: m["verdict"] for m in last["metrics"]}
    assert verdicts["error_rate"] == "fail"
    assert r.history[-1]["step"] == 0 and r.history[-1]["weight"] == 5  # where it was when judged
    # Rolled back: ticks are ignored.
    assert ro.judge_tick(ro.accumulate(r, 200.0, arm(500), arm(500)), 200.0)[1] == []


def test_too_little_traffic_holds_then_times_out_into_pause() -> None:
    r, effects = run(started(), until=100, n=5)
    assert effects == []  # never moved traffic
    assert r.phase is Phase.PAUSED and r.step == 0 and r.weight == 5
    assert "max_step_duration" in (r.paused_reason or "")
    assert not r.awaiting_promotion
    # resume: the same step, a new window, its timer restarted.
    resumed, effects = ro.command(r, "resume", 500.0)
    assert effects == []
    assert (resumed.phase, resumed.step, resumed.weight, resumed.step_started_at) == (Phase.PROGRESSING, 0, 5, 500.0)
    assert resumed.history[-1]["decision"] == "resume"
    # ...and with enough traffic it now advances.
    resumed, effects = run(resumed, start=500.0, until=520.0)
    assert [e for _, e in effects][:1] == [SetWeight(25)]


def test_timeout_rolls_back_when_the_policy_says_so() -> None:
    r, effects = run(started(rollout(settings=replace(SETTINGS, timeout_rollback=True))), until=100, n=5)
    assert r.phase is Phase.ROLLED_BACK
    notify = [e for _, e in effects if isinstance(e, ro.Notify)]
    assert notify and notify[0].trigger is Trigger.TIMEOUT
    assert r.history[-1]["trigger"] == "timeout"


def test_source_down_holds_visibly_and_never_counts() -> None:
    r = started()
    r, _, _ = tick(r, 5.0)
    for t in range(10, 200, 5):  # far past max_step_duration
        r = ro.source_down(r, float(t), "Prometheus unreachable")
    assert (r.phase, r.step, r.weight) == (Phase.PROGRESSING, 0, 5)
    assert r.history[-1]["decision"] == "hold" and r.history[-1]["trigger"] == "source"
    assert "Prometheus unreachable" in r.history[-1]["reasons"][0]
    # Not progressing: nothing recorded.
    idle = rollout()
    assert ro.source_down(idle, 1.0, "x") is idle


# ---------------------------------------------------------------------------------------------- commands


@pytest.mark.parametrize(("verb", "match"), [
    ("promote", "cannot promote: the canary is idle"),
    ("rollback", "nothing to roll back: the canary is idle"),
    ("pause", "cannot pause: the canary is idle"),
    ("resume", "cannot resume: the canary is idle"),
    ("restart", "unknown command 'restart'; allowed: start, promote, rollback, pause, resume"),
])
def test_commands_that_do_not_apply_to_an_idle_canary(verb: str, match: str) -> None:
    with pytest.raises(TransitionError, match=match):
        ro.command(rollout(), verb, 1.0)


def test_start_twice_changes_nothing() -> None:
    with pytest.raises(ro.AlreadyDone, match="already progressing at 5 %"):
        ro.command(started(), "start", 1.0)


@pytest.mark.parametrize("verb", ["promote", "rollback", "pause", "resume"])
def test_finished_rollouts_refuse_commands(verb: str) -> None:
    done, _ = ro.command(started(), "rollback", 1.0)
    with pytest.raises(TransitionError) as refused:
        ro.command(done, verb, 2.0)
    # Rolling back again is the one repeated verb here: a no-op; the others do not apply.
    assert isinstance(refused.value, ro.AlreadyDone) == (verb == "rollback")


def test_start_after_a_rollback_begins_again_at_the_first_step() -> None:
    done, _ = ro.command(started(), "rollback", 1.0)
    again, effects = ro.command(done, "start", 10.0)
    assert effects == [SetWeight(5)] and again.step == 0 and again.phase is Phase.PROGRESSING
    assert [h["decision"] for h in again.history] == ["start"]


def test_pause_and_resume() -> None:
    r = started()
    paused, effects = ro.command(r, "pause", 3.0, reason="operator looks at it")
    assert effects == [] and paused.phase is Phase.PAUSED and paused.paused_reason == "operator looks at it"
    with pytest.raises(ro.AlreadyDone, match="already paused"):  # a repeated verb: a no-op, not an error
        ro.command(paused, "pause", 4.0)
    # Paused: ticks are not judged and do not move anything.
    assert ro.judge_tick(ro.accumulate(paused, 50.0, arm(500), arm(500)), 50.0)[1] == []
    with pytest.raises(ro.AlreadyDone, match="already progressing"):
        ro.command(r, "resume", 5.0)
    resumed, _ = ro.command(paused, "resume", 60.0)
    assert resumed.phase is Phase.PROGRESSING and resumed.step_started_at == 60.0 and resumed.paused_reason is None


def test_rollback_records_its_trigger_and_emergency() -> None:
    r = started()
    out, effects = ro.command(r, "rollback", 7.0, trigger=Trigger.ALERT, reason="alert CanaryHighErrorRate firing",
                              emergency=True)
    assert out.phase is Phase.ROLLED_BACK and out.weight == 0
    assert effects[0] == Rollback(emergency=True)
    assert isinstance(effects[1], ro.Notify) and effects[1].trigger is Trigger.ALERT
    assert out.last_decision is not None and out.last_decision["trigger"] == "alert"
    assert out.last_decision["reasons"] == ["alert CanaryHighErrorRate firing"]


def test_manual_promote_mid_rollout() -> None:
    out, effects = ro.command(started(), "promote", 3.0)
    assert out.phase is Phase.PROMOTING and effects == [Promote()]
    with pytest.raises(ro.AlreadyDone, match="already promoting"):
        ro.command(out, "promote", 4.0)
    failed = ro.promotion_failed(out, 5.0, "stable rollout timed out")
    assert failed.phase is Phase.PAUSED and failed.awaiting_promotion and "timed out" in (failed.paused_reason or "")
    assert ro.command(failed, "promote", 6.0)[0].phase is Phase.PROMOTING  # and it can be retried


# ---------------------------------------------------------------------------------------------- history


def test_history_keeps_the_last_50_decisions() -> None:
    r = started()
    for t in range(1, 120):
        r = ro.source_down(r, float(t), f"outage {t}")
    assert len(r.history) == ro.HISTORY == 50
    assert r.history[-1]["reasons"] == ["no data: outage 119"]
    assert r.history[0]["reasons"] == ["no data: outage 70"]  # the start entry and older holds were dropped
    assert len(r.to_json()["history"]) == 50


# ---------------------------------------------------------------------------------------------- persistence


def _roundtrip(r: Rollout) -> dict[str, object]:
    return json.loads(json.dumps(r.persisted()))  # the annotation is JSON


def test_resume_continues_the_same_step_and_never_restarts_at_5_percent() -> None:
    r, _ = run(started(rollout(auto_promote=True)), until=22)  # past the second advance
    assert (r.step, r.weight) == (2, 50)
    saved = _roundtrip(r)
    assert saved["phase"] == "progressing" and saved["step"] == 2 and saved["weight"] == 50

    fresh = ro.resume(rollout(auto_promote=True), saved, now=1000.0)
    assert (fresh.phase, fresh.step, fresh.weight) == (Phase.PROGRESSING, 2, 50)
    assert fresh.step_started_at == r.step_started_at  # the step keeps its start time
    assert fresh.last_decision is not None and fresh.last_decision["decision"] == r.last_decision["decision"]
    assert fresh.history == r.history  # the history of decisions is part of the saved state

    fresh, effects = run(fresh, start=1000.0, until=1100.0)
    weights = [e.weight for _, e in effects if isinstance(e, SetWeight)]
    assert weights == [100]  # from 50 % on: never back to 5 %
    assert fresh.phase is Phase.PROMOTING


def test_resume_of_a_paused_rollout_awaiting_promotion() -> None:
    r, _ = run(started(), until=100)
    fresh = ro.resume(rollout(), _roundtrip(r), now=500.0)
    assert fresh.phase is Phase.PAUSED and fresh.awaiting_promotion and fresh.weight == 100
    assert ro.command(fresh, "promote", 501.0)[0].phase is Phase.PROMOTING


def test_resume_of_an_interrupted_promotion_waits_for_promote() -> None:
    """A daemon that died while promoting must not stay 'promoting' forever: nothing would finish it."""
    r, _ = run(started(rollout(auto_promote=True)), until=100)
    assert r.phase is Phase.PROMOTING
    fresh = ro.resume(rollout(auto_promote=True), _roundtrip(r), now=500.0)
    assert fresh.phase is Phase.PAUSED and fresh.awaiting_promotion
    assert "promot" in (fresh.paused_reason or "")
    out, effects = ro.command(fresh, "promote", 501.0)
    assert out.phase is Phase.PROMOTING and effects == [Promote()]


def test_resume_clamps_to_fewer_steps_and_rejects_foreign_state() -> None:
    saved = {"phase": "progressing", "step": 3, "weight": 100, "step_started_at": 5.0}
    fresh = ro.resume(Rollout(steps=(10, 50), settings=SETTINGS), saved, now=10.0)
    assert fresh.step == 1
    for bad in ({}, {"phase": "flying"}, {"phase": "progressing", "step": "two"}):
        with pytest.raises(ValueError, match="state annotation is not canaryd's"):
            ro.resume(rollout(), bad, now=1.0)


def test_resumed_idle_or_finished_rollouts_stay_put() -> None:
    for phase in ("idle", "succeeded", "rolled_back"):
        fresh = ro.resume(rollout(), {"phase": phase, "step": 1, "weight": 0}, now=1.0)
        assert fresh.phase.value == phase
        assert not ro.due(fresh, 100.0, 1.0)


# ---------------------------------------------------------------------------------------------- plumbing


def test_accumulate_adds_increments_and_restarts_on_a_new_bucket_layout() -> None:
    r = started()
    r = ro.accumulate(r, 1.0, arm(100, 0.1), arm(200))
    r = ro.accumulate(r, 2.0, arm(100, 0.1), ArmSnapshot())  # stable had no data this tick
    assert r.counters is not None
    assert (r.counters.canary.requests, r.counters.canary.errors) == (200.0, 20.0)
    assert r.counters.stable.requests == 200.0
    assert r.counters.canary.buckets is not None and r.counters.canary.buckets[-1] == (math.inf, 200.0)
    other = ArmSnapshot(requests=10, errors=0, buckets=((0.1, 5.0), (math.inf, 10.0)))
    r = ro.accumulate(r, 3.0, other, ArmSnapshot())
    assert r.counters.canary.buckets == ((0.1, 5.0), (math.inf, 10.0))


def test_due_follows_the_interval() -> None:
    r = started(now=100.0)
    assert not ro.due(r, 100.5, 1.0)
    assert ro.due(r, 101.0, 1.0)
    judged = replace(r, last_judged_at=105.0)
    # 10 % slack for a jittering schedule: a tick a little early still counts.
    assert not ro.due(judged, 105.8, 1.0) and ro.due(judged, 105.95, 1.0) and ro.due(judged, 106.0, 1.0)


# ---------------------------------------------------------------------------------------------- simulated traffic


def _simulated(canary_error_rate: float, seed: int) -> tuple[Rollout, list[ro.Effect]]:
    """A whole rollout on simulated traffic (Poisson requests, binomial 5xx, lognormal latencies),
    with the weight following the rollout's own steps as it would in a cluster."""
    scenario = Scenario(rps=400.0, stable=Arm(error_rate=0.005), canary=Arm(error_rate=canary_error_rate),
                        duration=5.0, tick=5.0)
    rng = np.random.default_rng(seed)
    settings = JudgeSettings(min_requests=500, step_duration=60.0, max_step_duration=600.0)
    r = started(Rollout(steps=STEPS, settings=settings, auto_promote=True))
    effects: list[ro.Effect] = []
    t = 0.0
    while r.phase is Phase.PROGRESSING and t < 2000:
        t += 5.0
        inc = simulate(replace(scenario, weight=float(r.weight)), rng)
        canary = ArmSnapshot(requests=float(inc.canary_requests[0]), errors=float(inc.canary_errors[0]),
                             successes=float(inc.canary_requests[0] - inc.canary_errors[0]),
                             buckets=_cumulative(inc.canary_buckets[0]))
        stable = ArmSnapshot(requests=float(inc.stable_requests[0]), errors=float(inc.stable_errors[0]),
                             successes=float(inc.stable_requests[0] - inc.stable_errors[0]),
                             buckets=_cumulative(inc.stable_buckets[0]))
        r = ro.accumulate(r, t, canary, stable)
        r, eff, _ = ro.judge_tick(r, t)
        effects.extend(eff)
    return r, effects


def _cumulative(per_bucket: np.ndarray) -> tuple[tuple[float, float], ...]:
    from simulation import BUCKETS
    return tuple((le, float(c)) for le, c in zip(BUCKETS, np.cumsum(per_bucket), strict=True))


def test_simulated_healthy_canary_walks_every_step_and_is_promoted() -> None:
    r, effects = _simulated(0.005, seed=1)
    assert [e.weight for e in effects if isinstance(e, SetWeight)] == [25, 50, 100]
    assert r.phase is Phase.PROMOTING and Promote() in effects


def test_simulated_failing_canary_is_rolled_back_at_the_first_step() -> None:
    r, effects = _simulated(0.08, seed=2)
    assert r.phase is Phase.ROLLED_BACK
    assert [e for e in effects if isinstance(e, SetWeight)] == []
    assert r.history[-1]["trigger"] == "analysis" and r.history[-1]["weight"] == 5


# ---------------------------------------------------------------------------------------------- regressions


def test_a_first_tick_without_counts_does_not_skew_the_baseline() -> None:
    """The controller's first read after a start only sets its baseline: that tick's increment has no
    counters. Judged at once, it must not leave a baseline with requests but no 2xx, which made the
    next tick read a 0 % success rate and roll back a healthy canary."""
    r = started()
    r = ro.accumulate(r, 1.0, ArmSnapshot(), ArmSnapshot())
    r, effects, judgement = ro.judge_tick(r, 1.0)
    assert judgement is not None and judgement.decision.value == "hold" and effects == []
    for t in (2.0, 3.0, 4.0):
        r, effects, judgement = tick(r, t)
        assert judgement is not None and judgement.decision.value == "hold", judgement.reasons
        verdicts = {m.name: m.verdict.value for m in judgement.metrics}
        assert verdicts.get("success_rate") != "fail"
    assert r.phase is Phase.PROGRESSING


def test_a_counter_without_a_query_is_no_data_not_zero() -> None:
    """`queries.errors: null` skips the error checks: the rollout must not count it as 0 errors."""
    r = started()
    no_errors = ArmSnapshot(requests=500, successes=500)
    for t in (5.0, 10.0, 15.0):
        r = ro.accumulate(r, t, no_errors, no_errors)
        r, _, judgement = ro.judge_tick(r, t)
    assert judgement is not None
    verdicts = {m.name: m.verdict.value for m in judgement.metrics}
    assert verdicts["error_rate"] == "skipped" and verdicts["error_ratio"] == "skipped"


# ---------------------------------------------------------------------------------------------- pods, versions, outages


def test_a_start_waiting_for_pods_writes_0_then_the_first_step_once_they_are_available() -> None:
    r, effects = ro.start(rollout(), 0.0, waiting="0 of 2 updated replicas are available", version="v1")
    assert (r.phase, r.weight, r.preparing, r.version, effects) == (Phase.PROGRESSING, 0, True, "v1", [SetWeight(0)])
    assert ro.judge_tick(ro.accumulate(r, 50.0, arm(500), arm(500)), 50.0)[1] == []  # nothing judged meanwhile
    r, effects = ro.pods_ready(r, 60.0, "2 of 2 available")
    assert (r.weight, r.preparing, r.step_started_at, effects) == (5, False, 60.0, [SetWeight(5)])
    saved = ro.SavedState.from_json(json.loads(json.dumps(r.persisted())))
    assert (saved.preparing, saved.version) == (False, "v1")


def test_pods_late_holds_with_no_traffic_and_resume_waits_again() -> None:
    r, _ = ro.start(rollout(), 0.0, waiting="0 of 2")
    late = ro.pods_late(r, 600.0, 600.0, "0 of 2")
    assert (late.phase, late.weight) == (Phase.PAUSED, 0) and "progress_deadline" in (late.paused_reason or "")
    again, effects = ro.command(late, "resume", 700.0)
    assert (again.phase, again.preparing, again.preparing_since, effects) == (Phase.PROGRESSING, True, 700.0, [])


def test_a_new_version_restarts_from_0_and_the_first_step() -> None:
    r, _ = ro.start(rollout(), 0.0, version="v1")
    r = replace(r, step=2, weight=50)
    out, effects = ro.restart(r, 100.0, "v2", "new image")
    assert (out.step, out.weight, out.preparing, out.version) == (0, 0, True, "v2")
    assert effects[0] == SetWeight(0) and effects[1].kind == "restart"  # type: ignore[union-attr]
    assert ro.restart(out, 101.0, "v2", "same again") == (out, [])


def test_outage_time_moves_the_step_timers_forward() -> None:
    r = started()
    r = ro.data_missing(r, 5.0)
    assert ro.data_missing(r, 9.0).source_down_since == 5.0  # the first moment is kept
    back = ro.data_back(r, 40.0)
    assert back.source_down_since is None and back.step_started_at == 35.0
    assert back.analysis is not None and back.analysis.step_started_at == 35.0


def test_a_rollout_s_position_is_its_saved_state_s() -> None:
    """worker.py compares positions at every judgement without building the saved state: the same triple."""
    from canaryd.rollout_types import rollout_position, saved_position

    r = rollout()
    seen = [r]
    r, _ = ro.start(r, 0.0)
    seen.append(r)
    r, _ = ro.command(r, "pause", 10.0, trigger=Trigger.MANUAL, reason="hold on")
    seen.append(r)
    r, _ = ro.command(r, "rollback", 20.0, trigger=Trigger.MANUAL, reason="bad")
    seen.append(r)
    for one in seen:
        assert rollout_position(one) == saved_position(one.persisted())
    assert len({rollout_position(one) for one in seen}) == len(seen)
