"""The outcome of a gate (gates.py) as a transition of the rollout state machine; pure, like rollout.py.

- pre_rollout passed: the first step's weight is written and its analysis starts; failed: rollback,
  with no weight ever written.
- confirm_promotion passed: promotion (auto_promote) or awaiting POST .../promote; failed: the rollout
  stays at its last step, still judged, the failure in its status, and the gate runs again.
- post_rollout and on_rollback: their outcome is recorded in the history; nothing else changes.
"""

from __future__ import annotations

from dataclasses import replace

from .analysis import judge
from .arm_totals import zero_snapshot
from .rollout import Effect, Phase, Rollout, SetWeight, Trigger, _promote, _record, _rollback


def gate_done(r: Rollout, now: float, name: str, passed: bool, detail: str) -> tuple[Rollout, list[Effect]]:
    if name in ("post_rollout", "on_rollback"):
        outcome = "passed" if passed else "failed"
        return _record(r, at=now, decision=f"gate_{outcome}", trigger=Trigger.GATE,
                       reasons=[f"{name} gate {outcome}: {detail}"]), []
    if r.gate != name or r.phase is not Phase.PROGRESSING:
        return r, []  # no longer waited for (a rollback, a promote or a restart came first)
    if name == "pre_rollout":
        return _pre_rollout(r, now, passed, detail)
    if not passed:
        return _record(r, at=now, decision="hold", trigger=Trigger.GATE,
                       reasons=[f"confirm_promotion gate failed: {detail}; holding at the last step, "
                                "it runs again"]), []
    out = _record(replace(r, gate=None), at=now, decision="gate_passed", trigger=Trigger.GATE,
                  reasons=[f"confirm_promotion gate passed: {detail}"])
    if out.auto_promote:
        return _promote(out, Trigger.AUTO, now)
    reason = "last step passed and confirm_promotion passed; waiting for POST .../promote (auto_promote is off)"
    out = replace(out, phase=Phase.PAUSED, awaiting_promotion=True, paused_reason=reason)
    return out, [SetWeight(out.weight)]


def _pre_rollout(r: Rollout, now: float, passed: bool, detail: str) -> tuple[Rollout, list[Effect]]:
    if not passed:
        reasons = [f"pre_rollout gate failed: {detail}; no traffic was sent to the canary"]
        out = _record(replace(r, gate=None), at=now, decision="rollback", trigger=Trigger.GATE, reasons=reasons)
        return _rollback(out, Trigger.GATE, reasons)
    weight = r.steps[r.step]
    out = replace(r, gate=None, weight=weight, step_started_at=now,
                  analysis=judge.start(r.settings, now, weight=weight), counters=zero_snapshot(now, weight),
                  last_judged_at=None, source_down_since=None)
    out = _record(out, at=now, decision="gate_passed", trigger=Trigger.GATE,
                  reasons=[f"pre_rollout gate passed ({detail}); step {r.step + 1} of {len(r.steps)}: {weight} %"])
    return out, [SetWeight(weight)]
