"""A paused canary that still serves traffic is judged for failure only (rollout.judge_tick, paused)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from canaryd import rollout as ro
from canaryd.analysis import judge
from canaryd.analysis.judge import JudgeSettings
from canaryd.analysis.snapshot import ArmSnapshot
from canaryd.rollout import Phase, Rollback, Rollout, Trigger
from simulation import BUCKETS, Arm, Scenario, simulate

STEPS = (5, 25, 50, 100)
SETTINGS = JudgeSettings(min_requests=100, step_duration=10.0, max_step_duration=30.0)


def _increments(scenario: Scenario, weight: int, rng: np.random.Generator) -> tuple[ArmSnapshot, ArmSnapshot]:
    inc = simulate(replace(scenario, weight=float(weight), duration=scenario.tick), rng)

    def arm(n: np.ndarray, x: np.ndarray, b: np.ndarray) -> ArmSnapshot:
        return ArmSnapshot(requests=float(n[0]), errors=float(x[0]), successes=float(n[0] - x[0]),
                           buckets=tuple((le, float(c)) for le, c in zip(BUCKETS, np.cumsum(b[0]), strict=True)))

    return (arm(inc.canary_requests, inc.canary_errors, inc.canary_buckets),
            arm(inc.stable_requests, inc.stable_errors, inc.stable_buckets))


def _drive(r: Rollout, scenario_at: object, *, until: float, seed: int = 3, every: float = 5.0
           ) -> tuple[Rollout, list[tuple[float, ro.Effect]], list[tuple[float, Phase, object]]]:
    """Tick by tick, like the daemon: accumulate the increments, then judge."""
    rng = np.random.default_rng(seed)
    effects: list[tuple[float, ro.Effect]] = []
    seen: list[tuple[float, Phase, object]] = []
    t = 0.0
    while t < until and r.phase in (Phase.PROGRESSING, Phase.PAUSED):
        t += every
        if not ro.judged(r):
            break
        canary, stable = _increments(scenario_at(t), r.weight, rng)  # type: ignore[operator]
        before = r.phase
        r = ro.accumulate(r, t, canary, stable)
        r, eff, judgement = ro.judge_tick(r, t)
        effects.extend((t, e) for e in eff)
        seen.append((t, before, judgement))
    return r, effects, seen


def _bad(rps_after_pause: float) -> object:
    bad = Scenario(rps=4.0, stable=Arm(error_rate=0.005), canary=Arm(error_rate=0.1), tick=5.0)
    return lambda t: bad if t <= 40.0 else replace(bad, rps=rps_after_pause)


def test_a_bad_canary_paused_at_max_step_duration_is_judged_and_rolled_back() -> None:
    r, _ = ro.start(Rollout(steps=STEPS, settings=SETTINGS), 0.0)
    r, effects, seen = _drive(r, _bad(2000.0), until=300.0)
    paused = [(t, j) for t, phase, j in seen if phase is Phase.PAUSED]
    assert paused, "the canary never paused: too much traffic before max_step_duration"
    assert all(j is not None and j.decision is not judge.Decision.ADVANCE for _, j in paused)
    assert r.phase is Phase.ROLLED_BACK and r.weight == 0
    assert r.history[-1]["decision"] == "rollback" and r.history[-1]["trigger"] == Trigger.ANALYSIS.value
    kinds = [e for _, e in effects]
    assert any(isinstance(e, Rollback) for e in kinds)
    assert [e.trigger for e in kinds if isinstance(e, ro.Notify)] == [Trigger.ANALYSIS]
    # Paused holds are one compact entry in the history, not one an interval.
    holds = [h for h in r.history if (h.get("reasons") or [""])[0] == judge.PAUSED_REASON]
    assert len(holds) <= 1


def test_a_paused_healthy_canary_stays_paused_and_is_never_advanced() -> None:
    good = Scenario(rps=4.0, stable=Arm(error_rate=0.005), canary=Arm(error_rate=0.005), tick=5.0)
    r, _ = ro.start(Rollout(steps=STEPS, settings=SETTINGS), 0.0)
    r, effects, seen = _drive(r, lambda t: good if t <= 40.0 else replace(good, rps=2000.0), until=300.0)
    assert r.phase is Phase.PAUSED and r.step == 0 and r.weight == 5
    assert effects == []
    paused = [j for _, phase, j in seen if phase is Phase.PAUSED]
    assert len(paused) > 10 and all(j.reasons[0] == judge.PAUSED_REASON and not j.timed_out for j in paused)
    assert r.last_decision is not None and r.last_decision["reasons"][0] == judge.PAUSED_REASON
    assert r.last_decision["canary_requests"] > 0  # the report shows the failure-only judgement
    holds = [h for h in r.history if (h.get("reasons") or [""])[0] == judge.PAUSED_REASON]
    assert len(holds) == 1
    assert not ro.due(replace(r, last_judged_at=300.0), 300.5, 5.0) and ro.due(r, 305.0, 5.0)


def test_a_canary_awaiting_promotion_is_judged_and_one_paused_at_0_percent_is_not() -> None:
    r, _ = ro.start(Rollout(steps=STEPS, settings=SETTINGS), 0.0)
    waiting = replace(r, phase=Phase.PAUSED, awaiting_promotion=True, step=3, weight=100,
                      paused_reason="last step passed")
    assert ro.judged(waiting)
    waiting = ro.accumulate(waiting, 5.0, ArmSnapshot(requests=1000, errors=500, successes=500),
                            ArmSnapshot())
    out, effects, judgement = ro.judge_tick(waiting, 5.0)
    assert judgement is not None and judgement.decision is judge.Decision.ROLLBACK
    assert out.phase is Phase.ROLLED_BACK and any(isinstance(e, Rollback) for e in effects)
    at_zero = replace(r, phase=Phase.PAUSED, weight=0, preparing=True)
    assert not ro.judged(at_zero) and ro.judge_tick(at_zero, 5.0) == (at_zero, [], None)
    stage = replace(r, phase=Phase.PAUSED, weight=0)
    assert not ro.judged(stage) and not ro.due(stage, 100.0, 5.0)


def test_the_first_tick_after_a_start_judges_the_traffic_since() -> None:
    r, _ = ro.start(Rollout(steps=STEPS, settings=SETTINGS), 0.0)
    r = ro.accumulate(r, 5.0, ArmSnapshot(requests=500, errors=0, successes=500),
                      ArmSnapshot(requests=9500, errors=10, successes=9490))
    r, _, judgement = ro.judge_tick(r, 5.0)
    assert judgement is not None and judgement.canary_requests == 500 and judgement.stable_requests == 9500
    assert "first sample" not in " ".join(judgement.reasons)
