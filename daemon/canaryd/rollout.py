"""One canary's rollout as a pure state machine: phases, steps, timers, promotion and rollback.

Every transition is a function (rollout, input) -> (rollout, effects). The controller performs the
effects (traffic writes, promotion, notifications) and reports them; nothing here does I/O, so the
whole life of a rollout can be tested without a clock or a cluster.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .analysis import judge
from .analysis.judge import AnalysisState, JudgeSettings
from .analysis.snapshot import ArmSnapshot, Snapshot
from .analysis.verdicts import Decision, Judgement
from .arm_totals import add_arm, zero_snapshot
from .report import timeline
from .rollout_types import (
    ACTIVE,
    HISTORY,
    ROLLBACK_CAUSES,
    AlreadyDone,
    Effect,
    History,
    HistoryEntry,
    LastDecision,
    Notify,
    Phase,
    Promote,
    Rollback,
    RunGate,
    SavedState,
    SetWeight,
    TransitionError,
    Trigger,
)
from .windows import Window, closed_reason

__all__ = ["ACTIVE", "HISTORY", "ROLLBACK_CAUSES", "AlreadyDone", "Effect", "Notify", "Phase", "Promote", "Rollback",
           "Rollout", "RunGate", "SavedState", "SetWeight", "TransitionError", "Trigger"]


# ---------------------------------------------------------------------------------------------- state


@dataclass(frozen=True, slots=True)  # ~0.1 kB less a canary than an instance dict
class Rollout:
    steps: tuple[int, ...]
    settings: JudgeSettings
    auto_promote: bool = False
    phase: Phase = Phase.IDLE
    step: int = -1  # index into steps; -1 before a rollout
    weight: int = 0
    step_started_at: float | None = None
    started_at: float | None = None
    paused_reason: str | None = None
    awaiting_promotion: bool = False
    last_decision: Mapping[str, Any] | None = None
    history: Sequence[Mapping[str, Any]] = ()
    analysis: AnalysisState | None = field(default=None, repr=False)
    counters: Snapshot | None = field(default=None, repr=False)  # cumulative since the rollout began
    last_judged_at: float | None = None
    preparing: bool = False  # progressing at 0 % until the canary's pods are available
    preparing_since: float | None = None
    version: str | None = None  # the canary pod template being judged (kube.template_hash)
    source_down_since: float | None = None  # Prometheus unreadable since; the step timer stops meanwhile
    stages: tuple[str, ...] = ()  # match-only stages: the first len(stages) steps, weight 0, by match route
    gates: frozenset[str] = frozenset()  # the gates configured (pre_rollout, confirm_promotion, ...)
    gate: str | None = None  # the gate the rollout waits for now
    windows: tuple[Window, ...] = field(default=(), repr=False)  # when it may advance; (): any time
    # The report page's per-tick numbers, the last timeline.TICKS of them; in memory only, not in the API.
    ticks: tuple[timeline.TickEntry, ...] = field(default=(), repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase.value,
            "weight": self.weight,
            "step": self.step,
            "steps": list(self.steps),
            "step_started_at": self.step_started_at,
            "started_at": self.started_at,
            "paused_reason": self.paused_reason,
            "awaiting_promotion": self.awaiting_promotion,
            "auto_promote": self.auto_promote,
            "last_decision": None if self.last_decision is None else dict(self.last_decision),
            "history": [dict(h) for h in self.history],
            "preparing": self.preparing,
            "version": self.version,
            "stage": self.stage,
            "stages": list(self.stages),
            "gate": self.gate,
        }

    @property
    def stage(self) -> str | None:
        """The match-only stage the rollout is in (the name of its match route), None at a weighted step."""
        return self.stages[self.step] if 0 <= self.step < len(self.stages) else None

    def persisted(self) -> dict[str, Any]:
        """What goes in the route's state annotation: enough to resume after a restart."""
        return self.saved().to_json()

    def saved(self) -> SavedState:
        last = self.last_decision or {}
        # Every saved field is the rollout's own of that name; of the last decision only its summary.
        own = {f.name: getattr(self, f.name) for f in fields(SavedState) if f.name != "last_decision"}
        return SavedState(**own, last_decision={k: last.get(k) for k in ("decision", "trigger", "at", "reasons")}
                          if last else None)


def resume(r: Rollout, saved: Mapping[str, Any], now: float) -> Rollout:
    """Rebuild a rollout from its annotation. Analysis restarts within the same step, never at step 0."""
    st = SavedState.from_json(saved)
    phase, weight = st.phase, st.weight
    step = min(st.step, len(r.steps) - 1)
    started = st.step_started_at
    out = replace(r, phase=phase, step=step, weight=weight, step_started_at=started, started_at=st.started_at,
                  paused_reason=st.paused_reason, awaiting_promotion=st.awaiting_promotion,
                  last_decision=st.last_decision, history=st.history, preparing=st.preparing,
                  preparing_since=now if st.preparing else None, version=st.version, gate=st.gate)
    if phase is Phase.PROMOTING:
        # Nothing finishes a promotion cut short by a restart: wait for POST .../promote to run it again.
        out = replace(out, phase=Phase.PAUSED, awaiting_promotion=True,
                      paused_reason="a promotion was interrupted by a restart; POST .../promote to finish it")
    if judged(out) and st.gate != "pre_rollout":  # no analysis before the gate passes
        # The counters before the restart are gone; the step keeps its start time, the evidence restarts.
        out = replace(out, **_fresh_analysis(r.settings, now, weight))
        out = replace(out, analysis=replace(out.analysis, step_started_at=started if started is not None else now))
    return out


def _fresh_analysis(settings: JudgeSettings, now: float, weight: int) -> dict[str, Any]:
    """A new analysis from the counters at `now` (zero increments so far): the first tick judges what came
    since, rather than only collecting a baseline (the reader is primed at that moment, see controller)."""
    return {"analysis": judge.start(settings, now, weight=weight, baseline=zero_snapshot(now, weight)),
            "counters": zero_snapshot(now, weight)}


def with_history(r: Rollout, history: Sequence[ArmSnapshot]) -> Rollout:
    """Stable's counts over the intervals before the analysis began, for its first ticks (judge.with_history)."""
    if r.analysis is None or r.last_judged_at is not None or not history:
        return r
    return replace(r, analysis=judge.with_history(r.analysis, r.settings, history))


def _counted_from_start(analysis: AnalysisState, snap: Snapshot) -> AnalysisState:
    """An analysis whose baseline is still the empty start (every counter unknown): its counters were 0 at
    the start, since they are this rollout's sums of increments. Without it the judge would take the first
    tick's counters as the baseline, and the first tick would see no traffic."""
    base = analysis.baseline
    if base is None or base.canary != ArmSnapshot() or base.stable != ArmSnapshot():
        return analysis
    zero = replace(base, canary=_zeros(snap.canary), stable=_zeros(snap.stable))
    return replace(analysis, baseline=zero, last=zero)


def _zeros(arm: ArmSnapshot) -> ArmSnapshot:
    """0 for each counter the arm has (all at the same moment), unknown for the others."""
    les = None if arm.buckets is None else tuple(le for le, _ in arm.buckets)
    return _zero_arm(arm.requests is not None, arm.errors is not None, arm.successes is not None, les)


@functools.lru_cache(maxsize=64)
def _zero_arm(requests: bool, errors: bool, successes: bool, les: tuple[float, ...] | None) -> ArmSnapshot:
    """One shared (frozen) zero arm per kind: every canary's analysis keeps one as its baseline, and
    with its histogram's pairs it is ~1.3 kB."""
    return ArmSnapshot(requests=0.0 if requests else None, errors=0.0 if errors else None,
                       successes=0.0 if successes else None,
                       buckets=None if les is None else tuple((le, 0.0) for le in les))


def judged(r: Rollout) -> bool:
    """Whether the canary's traffic is judged each interval: while progressing, and while paused (or timed
    out, or awaiting promotion) with the canary still serving traffic, for failure only."""
    if r.preparing:
        return False
    return r.phase is Phase.PROGRESSING or (r.phase is Phase.PAUSED and r.weight > 0)


# ---------------------------------------------------------------------------------------------- records


def _record(r: Rollout, *, at: float, decision: str, trigger: Trigger, reasons: tuple[str, ...] | list[str],
            judgement: Judgement | None = None, compact: bool = False) -> Rollout:
    """`compact`: replace the previous entry if it was a compact one too (a paused canary's failure-only
    holds, one each interval, would otherwise push every other decision out of the history)."""
    entry = HistoryEntry(at, decision, trigger.value, r.step, r.weight, tuple(reasons))
    last = LastDecision(entry)
    if judgement is not None:
        last = LastDecision(entry, [m.to_json() for m in judgement.metrics],
                            {"gates_met": judgement.gates_met, "canary_requests": judgement.canary_requests,
                             "stable_requests": judgement.stable_requests})
    tick = timeline.entry(at=at, decision=decision, trigger=trigger.value, step=r.step, weight=r.weight,
                          reasons=reasons, judgement=judgement)
    history = r.history if isinstance(r.history, History) else History(r.history)
    if compact and history and (history[-1].get("reasons") or [None])[0] == judge.PAUSED_REASON:
        history = history.without_last()
    return replace(r, last_decision=last, history=history.appended(entry), ticks=timeline.appended(r.ticks, tick))


# ---------------------------------------------------------------------------------------------- transitions


def start(r: Rollout, now: float, *, step: int = 0, reason: str | None = None,
          waiting: str | None = None, version: str | None = None) -> tuple[Rollout, list[Effect]]:
    """`waiting`: why the canary's pods are not available yet; the rollout then holds at 0 % until
    `pods_ready`."""
    if r.phase is Phase.PROGRESSING:
        raise AlreadyDone(f"already progressing at {r.weight} %")
    if r.phase in ACTIVE:
        raise TransitionError(f"a rollout is already {r.phase.value} at {r.weight} %")
    step = max(0, min(step, len(r.steps) - 1))
    weight = r.steps[step]
    out = replace(r, phase=Phase.PROGRESSING, step=step, weight=weight, step_started_at=now, started_at=now,
                  paused_reason=None, awaiting_promotion=False, history=(), last_decision=None, ticks=(),
                  **_fresh_analysis(r.settings, now, weight), last_judged_at=None, preparing=False, preparing_since=None, version=version or r.version,
                  source_down_since=None, gate=None)
    out = _record(out, at=now, decision="start", trigger=Trigger.START,
                  reasons=[reason or f"rollout started at step {step + 1} of {len(r.steps)}: {weight} %"])
    if waiting is not None:  # the state is saved at 0 %: every replica, and a restart, see it waiting
        return _await_pods(out, now, waiting), [SetWeight(0)]
    return _first_weight(out, now, [SetWeight(weight)])


def _first_weight(r: Rollout, now: float, effects: list[Effect]) -> tuple[Rollout, list[Effect]]:
    """With a pre_rollout gate, no weight before it passes: the match routes go in at 0 %, the gate runs
    (rollout_gates.gate_done decides then)."""
    if "pre_rollout" not in r.gates:
        return r, effects
    out = replace(r, weight=0, gate="pre_rollout", analysis=None, counters=None)
    out = _record(out, at=now, decision="hold", trigger=Trigger.GATE,
                  reasons=["no weight until the pre_rollout gate passes; it runs now"])
    return out, [SetWeight(0), RunGate("pre_rollout")]


def _await_pods(r: Rollout, now: float, why: str) -> Rollout:
    out = replace(r, weight=0, preparing=True, preparing_since=now, analysis=None, counters=None)
    return _record(out, at=now, decision="hold", trigger=Trigger.START,
                   reasons=[f"no traffic until the canary's pods are available: {why}"])


def pods_ready(r: Rollout, now: float, why: str) -> tuple[Rollout, list[Effect]]:
    """The canary's pods are available: its step's weight is written and the analysis starts now."""
    if not r.preparing or r.phase is not Phase.PROGRESSING:
        return r, []
    weight = r.steps[r.step]
    out = replace(r, weight=weight, preparing=False, preparing_since=None, step_started_at=now,
                  **_fresh_analysis(r.settings, now, weight), last_judged_at=None, source_down_since=None)
    out = _record(out, at=now, decision="resume", trigger=Trigger.START,
                  reasons=[f"canary pods available ({why}); step {r.step + 1} of {len(r.steps)}: {weight} %"])
    return _first_weight(out, now, [SetWeight(weight)])


def pods_late(r: Rollout, now: float, deadline: float, why: str) -> Rollout:
    """The canary's pods did not become available within progress_deadline: hold (paused), no traffic."""
    reason = (f"the canary's pods are not available after progress_deadline {deadline:g}s ({why}); "
              "no traffic was sent to it; POST .../resume to wait again, or roll back")
    out = replace(r, phase=Phase.PAUSED, paused_reason=reason)
    return _record(out, at=now, decision="hold", trigger=Trigger.TIMEOUT, reasons=[reason])


def restart(r: Rollout, now: float, version: str, reason: str) -> tuple[Rollout, list[Effect]]:
    """A new canary version during a rollout: traffic back to 0 % until its pods are available, then
    the first step, judged afresh (what was judged so far was another version)."""
    if r.phase not in (Phase.PROGRESSING, Phase.PAUSED) or version == r.version:
        return r, []
    out = replace(r, phase=Phase.PROGRESSING, step=0, paused_reason=None, awaiting_promotion=False,
                  version=version, last_judged_at=None, source_down_since=None, step_started_at=now, gate=None)
    out = _record(out, at=now, decision="restart", trigger=Trigger.START, reasons=[reason])
    return _await_pods(out, now, "a new canary version is rolling out"), [
        SetWeight(0), Notify("restart", Trigger.START, (reason,))]


def accumulate(r: Rollout, now: float, canary: ArmSnapshot, stable: ArmSnapshot) -> Rollout:
    """Add one tick's increments to the rollout's cumulative counters."""
    base = r.counters or zero_snapshot(now, r.weight)
    return replace(r, counters=Snapshot(t=now, canary=add_arm(base.canary, canary), stable=add_arm(base.stable, stable),
                                        weight=r.weight))


def _counters_at(counters: Snapshot, now: float, weight: int) -> Snapshot:
    """The counters as read at `now` at `weight`: the rollout's own when they say so already (the tick's
    accumulate made them), which the analysis then keeps as its last, rather than an equal copy (~0.3 kB)."""
    if counters.t == now and counters.weight == weight:
        return counters
    return replace(counters, t=now, weight=weight)


def judge_tick(r: Rollout, now: float) -> tuple[Rollout, list[Effect], Judgement | None]:
    """Judge the counters accumulated so far, and act on the decision."""
    if r.phase is Phase.PAUSED and judged(r):
        return _judge_paused(r, now)
    if r.phase is not Phase.PROGRESSING or r.preparing or r.analysis is None or r.counters is None:
        return r, [], None
    r = data_back(r, now)
    snap = _counters_at(r.counters, now, r.weight)
    judgement, analysis = judge.observe(_counted_from_start(r.analysis, snap), snap, r.settings)
    r = replace(r, analysis=analysis, last_judged_at=now)
    d = judgement.decision
    if d is Decision.ROLLBACK:
        trigger = Trigger.TIMEOUT if judgement.timed_out else Trigger.ANALYSIS
        r = _record(r, at=now, decision="rollback", trigger=trigger, reasons=judgement.reasons, judgement=judgement)
        r2, effects = _rollback(r, trigger, judgement.reasons)
        return r2, effects, judgement
    if d is Decision.HOLD:
        r = _record(r, at=now, decision="hold", trigger=Trigger.ANALYSIS, reasons=judgement.reasons,
                    judgement=judgement)
        if judgement.timed_out:
            r = replace(r, phase=Phase.PAUSED, paused_reason=judgement.reasons[0])
        return r, [], judgement
    closed = closed_reason(r.windows, now)
    if closed is not None:  # healthy, but not now: hold where it is (a failure still rolls back, above)
        r = _record(r, at=now, decision="hold", trigger=Trigger.ANALYSIS, reasons=[closed], judgement=judgement)
        return r, [], judgement
    r = _record(r, at=now, decision="advance", trigger=Trigger.ANALYSIS, reasons=judgement.reasons,
                judgement=judgement)
    if r.step + 1 < len(r.steps):
        step = r.step + 1
        weight = r.steps[step]
        r = replace(r, step=step, weight=weight, step_started_at=now,
                    analysis=judge.next_step(r.analysis, now, weight=weight))
        return r, [SetWeight(weight)], judgement
    if "confirm_promotion" in r.gates:
        return (*_confirm(r, now), judgement)
    if r.auto_promote:
        r2, effects = _promote(r, Trigger.AUTO, now)
        return r2, effects, judgement
    reason = "last step passed; waiting for POST .../promote (auto_promote is off)"
    return replace(r, phase=Phase.PAUSED, awaiting_promotion=True, paused_reason=reason), [], judgement


def _judge_paused(r: Rollout, now: float) -> tuple[Rollout, list[Effect], Judgement | None]:
    """A paused canary that still serves traffic: judged for failure only (judge.observe, paused), rolled
    back on a failure, else it stays paused; its holds are recorded compactly and notify nobody."""
    if r.analysis is None or r.counters is None:  # paused before any analysis: it starts from now
        return replace(r, **_fresh_analysis(r.settings, now, r.weight), last_judged_at=now), [], None
    snap = _counters_at(r.counters, now, r.weight)
    judgement, analysis = judge.observe(_counted_from_start(r.analysis, snap), snap, r.settings, paused=True)
    r = replace(r, analysis=analysis, last_judged_at=now, source_down_since=None)
    if judgement.decision is Decision.ROLLBACK:
        r = _record(r, at=now, decision="rollback", trigger=Trigger.ANALYSIS, reasons=judgement.reasons,
                    judgement=judgement)
        r2, effects = _rollback(r, Trigger.ANALYSIS, judgement.reasons)
        return r2, effects, judgement
    r = _record(r, at=now, decision="hold", trigger=Trigger.ANALYSIS, reasons=judgement.reasons,
                judgement=judgement, compact=True)
    return r, [], judgement


def _confirm(r: Rollout, now: float) -> tuple[Rollout, list[Effect]]:
    """The last step has passed: the confirm_promotion gate decides (it runs until it passes; the
    rollout stays at its last step, still judged, meanwhile)."""
    if r.gate == "confirm_promotion":
        return _record(r, at=now, decision="hold", trigger=Trigger.GATE,
                       reasons=["last step passed; waiting for the confirm_promotion gate"]), []
    out = replace(r, gate="confirm_promotion")
    out = _record(out, at=now, decision="hold", trigger=Trigger.GATE,
                  reasons=["last step passed; the confirm_promotion gate runs now"])
    return out, [SetWeight(r.weight), RunGate("confirm_promotion")]


def source_down(r: Rollout, now: float, reason: str) -> Rollout:
    """Prometheus could not be read: hold, visibly, and never count it toward anything."""
    if r.phase is not Phase.PROGRESSING:
        return r
    return _record(r, at=now, decision="hold", trigger=Trigger.SOURCE, reasons=[f"no data: {reason}"])


def data_missing(r: Rollout, now: float) -> Rollout:
    """Mark the start of a data outage (kept at its first moment)."""
    if r.phase is not Phase.PROGRESSING or r.source_down_since is not None:
        return r
    return replace(r, source_down_since=now)


def data_back(r: Rollout, now: float) -> Rollout:
    """Data again after an outage: the step's timers (ours and the judge's) move forward by the gap, so
    that time without data counts neither toward step_duration nor toward max_step_duration."""
    since = r.source_down_since
    if since is None:
        return r
    gap = max(0.0, now - since)
    started = None if r.step_started_at is None else r.step_started_at + gap
    analysis = None if r.analysis is None else replace(r.analysis, step_started_at=r.analysis.step_started_at + gap)
    return replace(r, source_down_since=None, step_started_at=started, analysis=analysis)


def _rollback(r: Rollout, trigger: Trigger, reasons: tuple[str, ...] | list[str], *,
              emergency: bool = False) -> tuple[Rollout, list[Effect]]:
    out = replace(r, phase=Phase.ROLLED_BACK, weight=0, paused_reason=None, awaiting_promotion=False, gate=None)
    more: list[Effect] = [RunGate("on_rollback")] if "on_rollback" in r.gates else []
    return out, [Rollback(emergency=emergency), Notify("rollback", trigger, tuple(reasons)), *more]


def _promote(r: Rollout, trigger: Trigger, now: float) -> tuple[Rollout, list[Effect]]:
    out = replace(r, phase=Phase.PROMOTING, paused_reason=None, awaiting_promotion=False, gate=None)
    out = _record(out, at=now, decision="promote", trigger=trigger,
                  reasons=["promoting: stable takes the canary's version"])
    return out, [Promote()]


def promoted(r: Rollout, now: float, trigger: Trigger) -> tuple[Rollout, list[Effect]]:
    """The promotion procedure finished: stable runs the new version, the canary is scaled down."""
    out = replace(r, phase=Phase.SUCCEEDED, weight=0)
    reasons = ("promoted: stable runs the canary's version, canary scaled to 0",)
    out = _record(out, at=now, decision="promoted", trigger=trigger, reasons=reasons)
    more: list[Effect] = [RunGate("post_rollout")] if "post_rollout" in r.gates else []
    return out, [Notify("promotion", trigger, reasons), *more]


def promotion_failed(r: Rollout, now: float, error: str) -> Rollout:
    """The promotion stopped (for instance the stable rollout timed out): the canary keeps serving."""
    reason = f"promotion stopped, canary still serving: {error}"
    out = replace(r, phase=Phase.PAUSED, paused_reason=reason, awaiting_promotion=True)
    return _record(out, at=now, decision="hold", trigger=Trigger.MANUAL, reasons=[reason])


def retune(r: Rollout, settings: JudgeSettings, now: float) -> Rollout:
    """New limits (a reload): the anytime tests start again with them, from the next tick's counters;
    the step keeps its start time."""
    if settings == r.settings or r.analysis is None:
        return replace(r, settings=settings)
    fresh = replace(judge.start(settings, now, weight=r.analysis.weight), step_started_at=r.analysis.step_started_at)
    out = replace(r, settings=settings, analysis=fresh)
    return _record(out, at=now, decision="hold", trigger=Trigger.MANUAL,
                   reasons=["config reloaded with new limits: the analysis of this step starts again with them"])


def step_for_weight(steps: tuple[int, ...], weight: int) -> int:
    """The step an operator's hand-set weight corresponds to: the last step not above it."""
    below = [i for i, w in enumerate(steps) if w <= weight]
    return below[-1] if below else 0


# The phase each verb leads to: asking for it again is a no-op (AlreadyDone), not an error.
_ALREADY: Mapping[str, tuple[Phase, ...]] = {
    "start": (Phase.PROGRESSING,),
    "promote": (Phase.PROMOTING, Phase.SUCCEEDED),
    "rollback": (Phase.ROLLED_BACK,),
    "pause": (Phase.PAUSED,),
    "resume": (Phase.PROGRESSING,),
}


def command(r: Rollout, verb: str, now: float, *, trigger: Trigger = Trigger.MANUAL,
            reason: str | None = None, emergency: bool = False, step: int = 0) -> tuple[Rollout, list[Effect]]:
    """A manual command or an alert's action: start, promote, rollback, pause, resume."""
    if verb not in _ALREADY:
        raise TransitionError(f"unknown command {verb!r}; allowed: start, promote, rollback, pause, resume")
    if r.phase in _ALREADY[verb]:
        raise AlreadyDone(f"already {r.phase.value}" + (f" at {r.weight} %" if r.phase is Phase.PROGRESSING else ""))
    why = reason or f"{trigger.value} {verb}"
    if verb == "start":
        return start(r, now, step=step, reason=reason)
    if verb == "rollback":
        if r.phase not in ACTIVE:
            raise TransitionError(f"nothing to roll back: the canary is {r.phase.value}")
        r = _record(r, at=now, decision="rollback", trigger=trigger, reasons=[why])
        return _rollback(r, trigger, (why,), emergency=emergency)
    if verb == "promote":
        if r.phase not in (Phase.PROGRESSING, Phase.PAUSED):
            raise TransitionError(f"cannot promote: the canary is {r.phase.value}")
        return _promote(r, trigger, now)
    if verb == "pause":
        if r.phase is not Phase.PROGRESSING:
            raise TransitionError(f"cannot pause: the canary is {r.phase.value}")
        r = _record(r, at=now, decision="pause", trigger=trigger, reasons=[why])
        return replace(r, phase=Phase.PAUSED, paused_reason=why), []
    return _resume(r, now, trigger, why)


def _resume(r: Rollout, now: float, trigger: Trigger, why: str) -> tuple[Rollout, list[Effect]]:
    if r.phase is not Phase.PAUSED:
        raise TransitionError(f"cannot resume: the canary is {r.phase.value}")
    if r.awaiting_promotion:
        raise TransitionError("the last step has passed: promote it, or roll it back")
    if r.preparing:  # still no traffic: wait for the canary's pods again, for a new progress_deadline
        r = replace(r, phase=Phase.PROGRESSING, paused_reason=None, preparing_since=now)
        return _record(r, at=now, decision="resume", trigger=trigger, reasons=[why]), []
    # A new window at the same step: the step's timer restarts, the anytime evidence carries on.
    analysis = r.analysis or judge.start(r.settings, now, weight=r.weight)
    if r.counters is None:
        r = replace(r, counters=zero_snapshot(now, r.weight))
    analysis = judge.next_step(analysis, now, weight=r.weight)
    r = replace(r, phase=Phase.PROGRESSING, paused_reason=None, step_started_at=now, analysis=analysis)
    return _record(r, at=now, decision="resume", trigger=trigger, reasons=[why]), []


def due(r: Rollout, now: float, interval: float) -> bool:
    """Whether this canary's analysis interval has elapsed since it was last judged."""
    if not judged(r):
        return False
    last = r.last_judged_at if r.last_judged_at is not None else r.step_started_at
    # 10 % slack: ticks arrive on a schedule that jitters, and a canary read in slots gets one tick an
    # interval; a strict comparison would skip every other one.
    return last is None or now - last >= 0.9 * interval
