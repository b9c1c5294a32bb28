"""A tick's checks settled: each metric's verdict (weighted Holm across the rollback metrics), then the decision.

The enum members are read as module constants: on Python 3.11 reading one off its class costs ~70 ns, and a
tick reads about a hundred of them here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from . import checks
from .checks import Check, Status
from .durations import format_duration
from .holm import ALPHA_WEIGHTS, weighted_holm
from .settings import JudgeSettings
from .verdicts import Action, Decision, MetricResult, Verdict

PAUSED_REASON = "paused: still judged for failure every interval"

_OK, _NO_DATA, _SKIPPED = Status.OK, Status.NO_DATA, Status.SKIPPED
_ROLLBACK, _WARN = Action.ROLLBACK, Action.WARN
_PASS, _FAIL, _WARNED, _INCONCLUSIVE = Verdict.PASS, Verdict.FAIL, Verdict.WARN, Verdict.INCONCLUSIVE

Reasons = Callable[[], list[str]]  # a judgement's reasons, made when they are first read


def duration(seconds: float) -> str:
    return format_duration(max(0, round(seconds)))  # reasons speak in whole seconds


def settle_all(raw: list[Check], seen: frozenset[str], s: JudgeSettings, *, canary_gate: bool,
               gates_met: bool) -> tuple[tuple[MetricResult, ...], set[str]]:
    """Every metric's verdict, and the metrics held only by the gates."""
    family: dict[str, float] = {}
    for i, ch in enumerate(raw):
        if ch.status is _OK:
            if ch.action is _ROLLBACK and ch.anytime_p_value is not None:
                family[ch.name] = ch.anytime_p_value
        elif ch.status is _NO_DATA and ch.name not in seen:
            # A metric that never had data has no source: shown as skipped, it does not block.
            raw[i] = checks.skipped(ch.name, ch.action, f"no data source ({ch.summary})", ch.unit)
    adjusted = weighted_holm(family, ALPHA_WEIGHTS)
    results: list[MetricResult] = []
    waiting: set[str] = set()
    alpha = s.alpha
    for ch in raw:
        result, held = _settle(ch, adjusted.get(ch.name), alpha, canary_gate, gates_met)
        results.append(result)
        if held:
            waiting.add(ch.name)
    return tuple(results), waiting


def _settle(check: Check, adjusted: float | None, alpha: float, canary_gate: bool,
            gates_met: bool) -> tuple[MetricResult, bool]:
    """The metric's verdict, and whether it is inconclusive only because the gates are not met yet."""
    significant = adjusted is not None and adjusted <= alpha and check.significant_ok
    verdict, tail, waiting = _verdict(check, significant, canary_gate, gates_met)
    result = object.__new__(MetricResult)  # frozen.build's way, the fields given as one dict
    object.__setattr__(result, "__dict__", {
        "_make_reason": lambda: _reason(check, tail, adjusted), "_make_evidence": check.evidence,
        "name": check.name, "verdict": verdict, "action": check.action, "p_value": check.p_value,
        "anytime_p_value": check.anytime_p_value, "adjusted_p_value": adjusted, "ratio": check.ratio,
        "ci": check.ci, "canary": check.canary, "stable": check.stable, "limit": check.limit, "unit": check.unit,
    })
    return result, waiting


def _verdict(check: Check, significant: bool, canary_gate: bool, gates_met: bool) -> tuple[Verdict, str, bool]:
    """(verdict, which words end its reason (see _reason), held only by the gates)."""
    status, action = check.status, check.action
    if status is _SKIPPED:
        return Verdict.SKIPPED, "skipped", False
    if status is _NO_DATA:
        return _INCONCLUSIVE, "no data", False
    if action is _ROLLBACK and significant and (canary_gate or not check.fail_needs_gate):
        return _FAIL, "fail", False
    if action is _WARN and check.exceeds and canary_gate:
        return _WARNED, "warn", False
    if check.passes and gates_met:
        return _PASS, "pass", False
    if check.passes or action is _WARN:
        # Nothing against this metric: only the gates keep it from passing, and they are reported once.
        return _INCONCLUSIVE, "waiting", True
    return _INCONCLUSIVE, "hold", False


def _p_text(check: Check, adjusted: float | None) -> str:
    if check.anytime_p_value is None:
        return ""
    text = f" (anytime p={checks.fmt_p(check.anytime_p_value)}"
    return text + (f", Holm-adjusted {checks.fmt_p(adjusted)})" if adjusted is not None else ")")


def _reason(check: Check, tail: str, adjusted: float | None) -> str:
    """The verdict's reason, formatted when it is first read."""
    summary = check.words("summary")
    if tail in ("skipped", "no data"):
        return f"{check.name}: {tail}, {summary}"
    if tail in ("fail", "hold"):
        end = check.words(tail) + _p_text(check, adjusted)
    else:
        end = {"warn": "exceeds the warning limit", "waiting": "waiting for the gates"}.get(tail) or check.words(tail)
    return f"{check.name}: {summary}; {end}"


def decide(results: Iterable[MetricResult], waiting: set[str], gates: list[Callable[[], str]], elapsed: float,
           s: JudgeSettings) -> tuple[Decision, Reasons, bool]:
    """(decision, its reasons, whether the step timed out)."""
    results = list(results)
    verdicts = [m.verdict for m in results]
    if _FAIL in verdicts:
        return Decision.ROLLBACK, lambda: [m.reason for m in results if m.verdict is _FAIL], False

    def warnings() -> list[str]:
        return [m.reason for m in results if m.verdict is _WARNED]

    if not gates and _INCONCLUSIVE not in verdicts:
        return Decision.ADVANCE, lambda: [_advance_head(results), *warnings()], False
    # Metrics held only by the gates are not repeated: the gate reasons say it once.
    return _hold_or_timeout(lambda: [*(gate() for gate in gates), *(
        m.reason for m in results if m.verdict is _INCONCLUSIVE and m.name not in waiting), *warnings()],
        elapsed, s)


def decide_paused(results: tuple[MetricResult, ...]) -> tuple[Decision, Reasons, bool]:
    """A paused rollout's decision: rollback or hold, never advance, and no timeout."""
    if any(m.verdict is _FAIL for m in results):
        return Decision.ROLLBACK, lambda: [m.reason for m in results if m.verdict is _FAIL], False
    return Decision.HOLD, lambda: [PAUSED_REASON, *(m.reason for m in results if m.verdict is _WARNED)], False


def _advance_head(results: list[MetricResult]) -> str:
    judged = [m.name for m in results if m.verdict in (_PASS, _WARNED)]
    return f"all judged metrics pass ({', '.join(judged)})" if judged else "no metric to judge"


def _hold_or_timeout(reasons: Reasons, elapsed: float, s: JudgeSettings) -> tuple[Decision, Reasons, bool]:
    if s.max_step_duration is None or elapsed < s.max_step_duration:
        return Decision.HOLD, reasons, False
    why = f"step held for {duration(elapsed)}, past max_step_duration {duration(s.max_step_duration)}"
    if s.timeout_rollback:
        return Decision.ROLLBACK, lambda: [why + ": rolling back", *reasons()], True
    return Decision.HOLD, lambda: [why + ": pausing", *reasons()], True
