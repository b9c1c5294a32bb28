"""Per-metric verdicts composed into one decision: advance, hold or rollback.

The judge is a pure function of (state, snapshot, settings) -> (judgement, new state). The state
carries what continuous monitoring needs: the counters at the start of the step (for the step's
window) and at the previous tick (for the anytime-valid tests, which see every tick's increment).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from . import checks, latency_checks
from .checks import Check, Status, limit_fraction
from .dispersion import RobustRatio, robust_ratio_start, robust_ratio_update, robust_ratio_update_many
from .frozen import build, slot_init
from .holm import ALPHA_WEIGHTS, holm, weighted_holm  # noqa: F401 - public here too
from .latency import (
    ScaleSequential,
    scale_sequential_start,
    scale_sequential_update,
    scale_sequential_update_many,
    surely_above,
)
from .limit_sequential import (
    LimitSequential,
    limit_sequential_start,
    limit_sequential_update_many,
)
from .settings import JudgeSettings
from .settle import (  # noqa: F401 - PAUSED_REASON public here too
    PAUSED_REASON,
    decide,
    decide_paused,
    duration,
    settle_all,
)
from .snapshot import ArmSnapshot, Snapshot
from .verdicts import Action, Decision, Judgement
from .windows import ArmWindow, arm_window, fill_snapshot_baseline

METRICS = ("error_ratio", "latency_ratio", "error_rate", "success_rate", "latency_p95", "latency_p99",
           "cpu", "memory")


@slot_init
@dataclass(frozen=True, slots=True)
class Sequentials:
    """The anytime-valid tests; they run for the whole rollout, across steps."""

    error_ratio: RobustRatio | None
    latency_ratio: ScaleSequential | None
    error_rate: LimitSequential | None
    success_rate: LimitSequential | None
    latency_p95: LimitSequential | None
    latency_p99: LimitSequential | None

    def p(self, name: str) -> float:
        seq = getattr(self, name, None)
        return 1.0 if seq is None else seq.p_value


@slot_init
@dataclass(frozen=True, slots=True)
class AnalysisState:
    step_started_at: float
    weight: float | None
    baseline: Snapshot | None  # counters at the start of the step
    last: Snapshot | None  # counters at the previous tick
    sequentials: Sequentials
    seen: frozenset[str] = field(default_factory=frozenset)  # metrics that have ever had data


def start(settings: JudgeSettings, t: float, *, weight: float | None = None,
          baseline: Snapshot | None = None, history: Sequence[ArmSnapshot] | None = None) -> AnalysisState:
    """A new rollout. Without a baseline, the first observed snapshot becomes it.

    `history`: stable's increments over the intervals before the rollout, oldest first (errors and requests
    each). They show whether the service's errors come in bursts before the first tick can, so a first tick
    on binomial-looking traffic counts in full (see dispersion.py); without them it is read as a little bursty.
    """
    return AnalysisState(step_started_at=t, weight=weight, baseline=baseline, last=baseline,
                         sequentials=_fresh_sequentials(settings, history))


def with_history(state: AnalysisState, settings: JudgeSettings, history: Sequence[ArmSnapshot]) -> AnalysisState:
    """`start(..., history=)` for a state made before stable's history was read (the daemon reads it while
    the rollout starts). Once the error-ratio test has read a tick the state is kept: its evidence is not
    thrown away for a better first tick."""
    seq = state.sequentials
    if seq.error_ratio is None or seq.error_ratio.binomial.ticks or settings.error_ratio is None:
        return state
    fresh = _fresh_sequentials(settings, history).error_ratio
    return replace(state, sequentials=replace(seq, error_ratio=fresh))


def next_step(state: AnalysisState, t: float, *, weight: float | None = None) -> AnalysisState:
    """The traffic moved to the next step: a new window begins, the anytime tests carry on."""
    baseline = state.last
    if baseline is not None:
        baseline = replace(baseline, t=t, weight=weight)
    return replace(state, step_started_at=t, weight=weight, baseline=baseline)


def _fresh_sequentials(s: JudgeSettings, history: Sequence[ArmSnapshot] | None = None) -> Sequentials:
    def lim(limit_pct: float | None) -> LimitSequential | None:
        return None if limit_pct is None else limit_sequential_start(limit_fraction(limit_pct))

    return Sequentials(
        error_ratio=None if s.error_ratio is None else robust_ratio_start(
            s.error_ratio, history=None if history is None else [(a.errors, a.requests) for a in history]),
        latency_ratio=None if s.latency_ratio is None else scale_sequential_start(s.latency_ratio),
        error_rate=lim(s.error_rate),
        success_rate=lim(None if s.success_rate is None else 100.0 - s.success_rate),
        latency_p95=None if s.latency_p95_ms is None else limit_sequential_start(0.05),
        latency_p99=None if s.latency_p99_ms is None else limit_sequential_start(0.01),
    )


# ---------------------------------------------------------------------------------------------- ticks


def _update_sequentials(seq: Sequentials, inc_c: ArmWindow, inc_s: ArmWindow, s: JudgeSettings, *,
                        has_successes: bool) -> Sequentials:
    inputs = _sequential_inputs(seq, inc_c, inc_s, s, has_successes=has_successes)
    if not inputs:
        return seq
    updates: dict[str, object] = {}
    args = inputs.get("error_ratio")
    if args is not None:
        updates["error_ratio"] = robust_ratio_update(seq.error_ratio, *args)  # type: ignore[arg-type]
    args = inputs.get("latency_ratio")
    if args is not None:
        updates["latency_ratio"] = scale_sequential_update(seq.latency_ratio, *args)  # type: ignore[arg-type]
    limits = [name for name in _LIMITS if name in inputs]
    if limits:  # the canary's limit tests in one pass over their grids
        new = limit_sequential_update_many([getattr(seq, name) for name in limits],
                                           [inputs[name][0] for name in limits],  # type: ignore[misc]
                                           [inputs[name][1] for name in limits])  # type: ignore[misc]
        updates.update(zip(limits, new, strict=True))
    return _with_updates(seq, updates)


def _update_sequentials_many(seqs: Sequence[Sequentials], incs: Sequence[tuple[ArmWindow, ArmWindow, bool]],
                             s: JudgeSettings) -> list[Sequentials]:
    """`_update_sequentials` of many canaries: each kind of test updated for all of them in one pass."""
    inputs = [_sequential_inputs(seq, c, st, s, has_successes=has) for seq, (c, st, has) in zip(seqs, incs, strict=True)]
    updates: list[dict[str, object]] = [{} for _ in seqs]
    for kind, update_many in _UPDATE_MANY.items():
        which = [(i, name) for i, given in enumerate(inputs) for name in given if _KIND[name] == kind]
        if not which:
            continue
        columns = zip(*(inputs[i][name] for i, name in which), strict=True)
        new = update_many([getattr(seqs[i], name) for i, name in which], *columns)  # type: ignore[operator]
        for (i, name), state in zip(which, new, strict=True):
            updates[i][name] = state
    return [_with_updates(seq, u) for seq, u in zip(seqs, updates, strict=True)]


_KIND = {"error_ratio": "robust", "latency_ratio": "scale", "error_rate": "limit", "success_rate": "limit",
         "latency_p95": "limit", "latency_p99": "limit"}
_LIMITS = tuple(name for name, kind in _KIND.items() if kind == "limit")
_UPDATE_MANY = {"robust": robust_ratio_update_many, "scale": scale_sequential_update_many,
                "limit": limit_sequential_update_many}


def _with_updates(seq: Sequentials, updates: dict[str, object]) -> Sequentials:
    if not updates:
        return seq
    get = updates.get  # not dataclasses.replace: it costs more than the tests it carries
    return Sequentials(error_ratio=get("error_ratio", seq.error_ratio),  # type: ignore[arg-type]
                       latency_ratio=get("latency_ratio", seq.latency_ratio),  # type: ignore[arg-type]
                       error_rate=get("error_rate", seq.error_rate),  # type: ignore[arg-type]
                       success_rate=get("success_rate", seq.success_rate),  # type: ignore[arg-type]
                       latency_p95=get("latency_p95", seq.latency_p95),  # type: ignore[arg-type]
                       latency_p99=get("latency_p99", seq.latency_p99))  # type: ignore[arg-type]


def _sequential_inputs(seq: Sequentials, inc_c: ArmWindow, inc_s: ArmWindow, s: JudgeSettings, *,
                       has_successes: bool) -> dict[str, tuple[object, ...]]:
    """What each anytime test is updated with this tick; a test without the data it needs is left out."""
    inputs = _count_inputs(seq, inc_c, inc_s, has_successes=has_successes)
    if inc_c.buckets is not None:
        _add_latency_inputs(inputs, seq, inc_c, inc_s, s)
    return inputs


def _not_2xx(inc_c: ArmWindow, *, has_successes: bool) -> float | None:
    """Not-2xx this tick: from the 2xx counter when the arm reports one, else (it never does) the 5xx."""
    if inc_c.requests is None:
        return None
    if inc_c.successes is not None:
        return max(0.0, inc_c.requests - inc_c.successes)
    return inc_c.errors if not has_successes else None


def _count_inputs(seq: Sequentials, inc_c: ArmWindow, inc_s: ArmWindow, *,
                  has_successes: bool) -> dict[str, tuple[object, ...]]:
    inputs: dict[str, tuple[object, ...]] = {}
    if (seq.error_ratio is not None and None not in (inc_c.errors, inc_c.requests, inc_s.errors, inc_s.requests)):
        inputs["error_ratio"] = (inc_c.errors, inc_c.requests, inc_s.errors, inc_s.requests)
    if seq.error_rate is not None and inc_c.errors is not None and inc_c.requests is not None:
        inputs["error_rate"] = (inc_c.errors, inc_c.requests)
    bad = _not_2xx(inc_c, has_successes=has_successes)
    if seq.success_rate is not None and bad is not None and inc_c.requests is not None:
        inputs["success_rate"] = (bad, inc_c.requests)
    return inputs


def _add_latency_inputs(inputs: dict[str, tuple[object, ...]], seq: Sequentials, inc_c: ArmWindow,
                        inc_s: ArmWindow, s: JudgeSettings) -> None:
    buckets = inc_c.buckets
    assert buckets is not None
    if seq.latency_p95 is not None and s.latency_p95_ms is not None:
        inputs["latency_p95"] = surely_above(buckets, s.latency_p95_ms / 1000.0)
    if seq.latency_p99 is not None and s.latency_p99_ms is not None:
        inputs["latency_p99"] = surely_above(buckets, s.latency_p99_ms / 1000.0)
    if seq.latency_ratio is not None and inc_s.buckets is not None:
        inputs["latency_ratio"] = (buckets, inc_s.buckets)


def _checks(c: ArmWindow, st: ArmWindow, seq: Sequentials, s: JudgeSettings, *, stable_expected: bool) -> list[Check]:
    """Every metric's check; one that cannot be computed becomes no-data with the error, never a crash."""
    out: list[Check] = []
    for name, action, setting, comparison, compute in _PLAN:
        if getattr(s, setting) is None:
            out.append(checks.skipped(name, action, "disabled in the config"))
        elif comparison and not stable_expected:
            out.append(checks.skipped(name, action, "no stable arm to compare with at 100 % canary weight"))
        else:
            try:
                out.append(compute(c, st, seq, s))
            except (ValueError, ArithmeticError) as e:
                out.append(checks.no_data(name, action, f"cannot be computed: {e}"))
    return out


Compute = Callable[[ArmWindow, ArmWindow, Sequentials, JudgeSettings], Check]
_R, _W, _OK = Action.ROLLBACK, Action.WARN, Status.OK  # enum members read off their class cost ~70 ns
# (metric, action, the setting that enables it, whether it compares with stable, its check): not closures each tick.
_PLAN: tuple[tuple[str, Action, str, bool, Compute], ...] = (
    ("error_ratio", _R, "error_ratio", True, lambda c, st, seq, s: checks.error_ratio(
        c, st, r0=s.error_ratio, alpha=s.alpha, tolerance_pp=s.tolerance_pp, anytime_p=seq.p("error_ratio"),
        dispersion=_dispersion(seq), strict=s.strict)),
    ("latency_ratio", _R, "latency_ratio", True, lambda c, st, seq, s: latency_checks.latency_ratio(
        c, st, max_ratio=s.latency_ratio, alpha=s.alpha, sequential=seq.latency_ratio)),
    ("error_rate", _R, "error_rate", False, lambda c, st, seq, s: checks.rate_limit(
        "error_rate", _R, c.errors, c.requests, limit_pct=s.error_rate, alpha=s.alpha,
        anytime_p=seq.p("error_rate"), what="5xx")),
    ("success_rate", _R, "success_rate", False, lambda c, st, seq, s: checks.rate_limit(
        "success_rate", _R, c.non_successes, c.requests, limit_pct=100.0 - s.success_rate, alpha=s.alpha,
        anytime_p=seq.p("success_rate"), what="non-2xx", shown_as_success=True)),
    ("latency_p95", _W, "latency_p95_ms", False, lambda c, st, seq, s: checks.latency_limit(
        "latency_p95", _W, c, st, quantile=0.95, limit_ms=s.latency_p95_ms, alpha=s.alpha,
        anytime_p=seq.p("latency_p95"))),
    ("latency_p99", _R, "latency_p99_ms", False, lambda c, st, seq, s: checks.latency_limit(
        "latency_p99", _R, c, st, quantile=0.99, limit_ms=s.latency_p99_ms, alpha=s.alpha,
        anytime_p=seq.p("latency_p99"))),
    ("cpu", _W, "cpu", False, lambda c, st, seq, s: checks.utilisation("cpu", c, st, limit_pct=s.cpu)),
    ("memory", _W, "memory", False, lambda c, st, seq, s: checks.utilisation("memory", c, st, limit_pct=s.memory)),
)


def _dispersion(seq: Sequentials) -> tuple[bool, float] | None:
    """(overdispersion detected, the variance inflation the step's counts are discounted by).

    The pass rule discounts only dispersion the data shows, not the anytime test's caution before it can.
    """
    r = seq.error_ratio
    return None if r is None or not r.ticks else (r.detected, r.phi if r.detected else 1.0)


def _gate_reasons(c: ArmWindow, st: ArmWindow, elapsed: float, s: JudgeSettings, *,
                  stable_expected: bool, weight: float | None) -> tuple[list[Callable[[], str]], bool]:
    """The gates not met yet, each as the maker of its reason (formatted when the judgement's are read)."""
    reasons: list[Callable[[], str]] = []
    canary_gate = c.requests is not None and c.requests >= s.min_requests
    if elapsed < s.step_duration:
        reasons.append(lambda: f"step running {duration(elapsed)} of its minimum {duration(s.step_duration)}")
    if c.requests is None:
        reasons.append(lambda: "no request counts for the canary")
    elif not canary_gate:
        reasons.append(lambda: f"canary has {c.requests:.0f} of the {s.min_requests} requests needed")
    if stable_expected:
        if st.requests is None:
            reasons.append(lambda: "no request counts for stable")
        elif st.requests < s.min_requests:
            reasons.append(lambda: f"stable has {st.requests:.0f} of the {s.min_requests} requests needed")
    if weight is not None and 0 < weight < 100 and c.requests is not None and st.requests is not None:
        total = c.requests + st.requests
        share = 100.0 * c.requests / total if total > 0 else 0.0
        # Only once there is enough traffic for the share to mean something.
        if total >= max(100.0, s.min_requests / 10) and share < weight * s.min_traffic_share:
            reasons.append(lambda: f"canary not receiving traffic: it served {share:.2f} % of requests "
                                   f"while its weight is {weight:g} %")
    return reasons, canary_gate


def observe(state: AnalysisState, snap: Snapshot, settings: JudgeSettings, *,
            paused: bool = False) -> tuple[Judgement, AnalysisState]:
    """Judge one tick. `snap` holds cumulative counters; the state knows the step start and last tick.

    `paused`: the rollout is paused (or timed out) while the canary still serves traffic. The tick is
    judged for failure only: the decision is rollback or hold, never advance, and no timeout.
    """
    if state.baseline is None:
        return _first_sample(state, snap)
    w = _windows(state, snap)
    seq = _update_sequentials(state.sequentials, w.inc_c, w.inc_s, settings,
                              has_successes=snap.canary.successes is not None)
    return _judge_tick(state, snap, settings, w, seq, paused=paused)


def observe_many(states: Sequence[AnalysisState], snaps: Sequence[Snapshot], settings: JudgeSettings, *,
                 paused: bool = False) -> list[tuple[Judgement, AnalysisState]]:
    """`observe` of many canaries on the same settings, one snapshot each: the same judgements and states,
    with each kind of anytime test updated for all the canaries in one vectorised pass."""
    out: list[tuple[Judgement, AnalysisState] | None] = [None] * len(states)
    ticks: list[tuple[int, _Windows]] = []
    for i, (state, snap) in enumerate(zip(states, snaps, strict=True)):
        if state.baseline is None:
            out[i] = _first_sample(state, snap)
        else:
            ticks.append((i, _windows(state, snap)))
    seqs = _update_sequentials_many(
        [states[i].sequentials for i, _ in ticks],
        [(w.inc_c, w.inc_s, snaps[i].canary.successes is not None) for i, w in ticks], settings)
    for (i, w), seq in zip(ticks, seqs, strict=True):
        out[i] = _judge_tick(states[i], snaps[i], settings, w, seq, paused=paused)
    return out  # type: ignore[return-value]


def _first_sample(state: AnalysisState, snap: Snapshot) -> tuple[Judgement, AnalysisState]:
    state = replace(state, baseline=snap, last=snap, step_started_at=min(state.step_started_at, snap.t))
    return (Judgement(decision=Decision.HOLD, at=snap.t, reasons=("first sample: collecting a baseline",),
                      metrics=(), gates_met=False), state)


class _Windows(NamedTuple):
    baseline: Snapshot  # the step's start, filled in
    c: ArmWindow  # the step's window of each arm
    st: ArmWindow
    inc_c: ArmWindow  # this tick's increment of each arm
    inc_s: ArmWindow


def _windows(state: AnalysisState, snap: Snapshot) -> _Windows:
    assert state.baseline is not None
    baseline = fill_snapshot_baseline(state.baseline, snap)
    # The previous tick as it was, not filled in: a counter that appears only now has no increment yet
    # this tick. Filling it would pair a whole tick of requests with zero 2xx (or 5xx): a false signal.
    last = state.last or baseline
    return _Windows(baseline, arm_window(snap.canary, baseline.canary), arm_window(snap.stable, baseline.stable),
                    arm_window(snap.canary, last.canary), arm_window(snap.stable, last.stable))


def _judge_tick(state: AnalysisState, snap: Snapshot, s: JudgeSettings, w: _Windows, seq: Sequentials, *,
                paused: bool) -> tuple[Judgement, AnalysisState]:
    c, st = w.c, w.st
    weight = snap.weight if snap.weight is not None else state.weight
    stable_expected = weight is None or weight < 100
    elapsed = snap.t - state.step_started_at

    raw = _checks(c, st, seq, s, stable_expected=stable_expected)
    judged = {ch.name for ch in raw if ch.status is _OK}
    seen = state.seen if judged <= state.seen else state.seen | judged  # the same set kept, once all were seen
    gate_reasons, canary_gate = _gate_reasons(c, st, elapsed, s, stable_expected=stable_expected, weight=weight)
    gates_met = not gate_reasons
    results, waiting = settle_all(raw, seen, s, canary_gate=canary_gate, gates_met=gates_met)

    if paused:
        decision, reasons, timed_out = decide_paused(results)
    else:
        decision, reasons, timed_out = decide(results, waiting, gate_reasons, elapsed, s)
    judgement = build(Judgement, _make_reasons=lambda: tuple(reasons()), decision=decision, at=snap.t,
                      metrics=results,
                      gates_met=gates_met, timed_out=timed_out, canary_requests=c.requests or 0.0,
                      stable_requests=st.requests or 0.0, elapsed=elapsed)
    # The fields in order (step_started_at, weight, baseline, last, sequentials, seen), by position as in the
    # tests' states: keywords cost ~35 ns each.
    new_state = AnalysisState(state.step_started_at, weight, w.baseline, snap, seq, seen)
    return judgement, new_state


def observe_failure_only(state: AnalysisState, snap: Snapshot,
                         settings: JudgeSettings) -> tuple[Judgement, AnalysisState]:
    """`observe(..., paused=True)`: a paused canary with traffic is still rolled back when it fails."""
    return observe(state, snap, settings, paused=True)
