"""Gates as transitions of the pure rollout state machine (rollout.py, rollout_gates.py): pre_rollout,
confirm_promotion, post_rollout and on_rollback; windows holding an advance."""

from __future__ import annotations

from dataclasses import replace

from canaryd import rollout as ro
from canaryd.rollout_gates import gate_done
from canaryd.windows import parse_windows
from test_rollout import rollout, started, tick


def test_a_restart_while_the_pre_rollout_gate_runs_keeps_the_weight_at_0_until_it_passes() -> None:
    r = replace(rollout(), gates=frozenset({"pre_rollout"}))
    r, effects = ro.start(r, 0.0)
    assert (r.weight, r.gate) == (0, "pre_rollout") and effects == [ro.SetWeight(0), ro.RunGate("pre_rollout")]
    back = ro.resume(rollout(), r.persisted(), 50.0)
    assert (back.gate, back.weight, back.analysis) == ("pre_rollout", 0, None)
    assert ro.judge_tick(back, 60.0)[1] == []  # nothing judged, nothing advanced
    passed, effects = gate_done(back, 70.0, "pre_rollout", True, "smoke tests passed")
    assert (passed.weight, passed.gate, effects) == (5, None, [ro.SetWeight(5)])



def test_a_failed_pre_rollout_rolls_back_with_on_rollback_told_and_no_weight() -> None:
    r = replace(rollout(), gates=frozenset({"pre_rollout", "on_rollback"}))
    r, _ = ro.start(r, 0.0)
    out, effects = gate_done(r, 5.0, "pre_rollout", False, "HTTP 500")
    assert out.phase is ro.Phase.ROLLED_BACK and out.weight == 0 and out.gate is None
    assert [type(e) for e in effects] == [ro.Rollback, ro.Notify, ro.RunGate] and effects[2].name == "on_rollback"
    assert out.last_decision["trigger"] == "gate"


def test_confirm_promotion_holds_the_last_step_and_a_late_outcome_changes_nothing() -> None:
    r = started(replace(rollout(), gates=frozenset({"confirm_promotion"}), steps=(5, 25), auto_promote=True))
    now = 0.0
    while r.gate is None:
        now += 5.0
        r, effects = tick(r, now)[:2]
        assert now < 2000
    assert effects == [ro.SetWeight(25), ro.RunGate("confirm_promotion")]
    held, effects = gate_done(r, now + 1, "confirm_promotion", False, "HTTP 503")
    assert (held.phase, held.weight, held.gate, effects) == (ro.Phase.PROGRESSING, 25, "confirm_promotion", [])
    promoted, effects = gate_done(held, now + 2, "confirm_promotion", True, "HTTP 200")
    assert promoted.phase is ro.Phase.PROMOTING and effects == [ro.Promote()]
    assert gate_done(promoted, now + 3, "confirm_promotion", True, "late")[0] is promoted


def test_outside_a_window_an_advance_is_a_hold_with_the_reason() -> None:
    sunday_noon = 1795953600.0  # 2026-11-29 12:00 UTC
    r = started(replace(rollout(), windows=parse_windows(["Mon-Fri 02:00-05:00 UTC"])), now=sunday_noon)
    now = sunday_noon
    for _ in range(200):
        now += 5.0
        r = tick(r, now)[0]
    assert (r.step, r.weight) == (0, r.steps[0])
    assert "outside the rollout windows" in r.last_decision["reasons"][0]
