"""One function per metric: the evidence for it this tick, before the verdicts are settled.

A check does not decide pass or fail by itself: failing needs the anytime-valid p-value to survive
Holm's correction across all metrics, which only the judge can see. So each check returns its
evidence and the two questions the judge asks: is the pass criterion met, and is the metric failing
if its p-value is significant.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from .counts import RatioTest, limit_p_value, rate_interval, rate_ratio_test, upper_bound
from .distribution import fraction_above
from .verdicts import Action
from .windows import ArmWindow


class Status(str, Enum):
    OK = "ok"  # judged this tick
    NO_DATA = "no_data"  # had data before (or should have), has none now: holds
    SKIPPED = "skipped"  # no source at all, disabled, or not applicable: does not block


# Enum members as constants for the checks made every tick: on Python 3.11 reading one off its class costs ~70 ns.
_OK, _ROLLBACK, _WARN = Status.OK, Action.ROLLBACK, Action.WARN


Words = Callable[[str], str]
"""A check's text, one part at a time: "summary" (what was measured, in words and numbers), and why it
"pass"es, "hold"s or "fail"s. Only the parts a verdict's reason needs are formatted, when it is read."""


@dataclass(slots=True)  # made every tick and never kept: not frozen, whose __init__ costs µs per field
class Check:
    name: str
    action: Action
    status: Status
    words: Words  # the text, formatted when a verdict's reason is read
    unit: str = ""
    limit: float | None = None
    canary: float | None = None
    stable: float | None = None
    p_value: float | None = None
    anytime_p_value: float | None = None
    ratio: float | None = None
    ci: tuple[float, float] | None = None
    passes: bool = False  # the pass criterion, given the gates
    exceeds: bool = False  # for warn metrics: the limit is exceeded
    significant_ok: bool = True  # extra condition a significant p-value needs before it fails
    fail_needs_gate: bool = False  # absolute thresholds fail only once the canary has min_requests
    evidence: Callable[[], dict[str, float | None]] = dict  # made when read, like the words

    @property
    def summary(self) -> str:
        return self.words("summary")


def _fixed(summary: str) -> Words:
    return lambda part: summary if part == "summary" else ""


def skipped(name: str, action: Action, why: str, unit: str = "") -> Check:
    return Check(name=name, action=action, status=Status.SKIPPED, words=_fixed(why), unit=unit)


def no_data(name: str, action: Action, why: str, unit: str = "") -> Check:
    return Check(name=name, action=action, status=Status.NO_DATA, words=_fixed(why), unit=unit)


def pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f} %"


def ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0f} ms"


def fmt_p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def limit_fraction(limit_pct: float) -> float:
    """A percentage limit as the open-interval fraction the tests need (0 % and 100 % are edge configs)."""
    return min(max(limit_pct / 100.0, 1e-6), 1.0 - 1e-6)


def _rate(x: float, n: float) -> float | None:
    return 100.0 * x / n if n > 0 else None


# ---------------------------------------------------------------------------------------------- counts


@dataclass(slots=True)
class _RatioPass:
    ratio_within: bool  # the ratio's upper bound is at most r0
    rate_within: bool  # the canary rate's upper bound is at most stable's + tolerance_pp
    worse: bool  # significantly worse than stable at all (the strict rule's extra condition)
    ub: float | None
    bound: float


def _ratio_pass(test: RatioTest, x_c: float, n_c: float, rate_s: float | None, *, phi: float, alpha: float,
                tolerance_pp: float) -> _RatioPass:
    any_errors = test.x_c + test.x_s > 0
    ub = 100.0 * upper_bound(x_c / phi, n_c / phi, alpha) if n_c > 0 else None
    bound = (rate_s or 0.0) + tolerance_pp
    return _RatioPass(ratio_within=test.ci is not None and any_errors and test.ci[1] <= test.r0,
                      rate_within=ub is not None and ub <= bound,
                      worse=test.ci is not None and any_errors and test.ci[0] > 1.0, ub=ub, bound=bound)


def error_ratio(canary: ArmWindow, stable: ArmWindow, *, r0: float, alpha: float, tolerance_pp: float,
                anytime_p: float, dispersion: tuple[bool, float] | None = None,
                strict: bool = False) -> Check:
    """Canary 5xx rate against stable's: fails when the ratio is significantly above r0.

    Passes when the canary is shown inside the user's limits: the ratio's upper bound is at most r0, or
    the canary rate's upper bound at most stable's + tolerance_pp (strict: and not significantly worse
    than stable at all). With overdispersed errors the counts are discounted by the variance inflation.
    """
    name, action = "error_ratio", _ROLLBACK
    if None in (canary.requests, canary.errors, stable.requests, stable.errors):
        return no_data(name, action, "no 5xx or request counts for one of the arms")
    x_c, n_c, x_s, n_s = canary.errors, canary.requests, stable.errors, stable.requests
    assert x_c is not None and n_c is not None and x_s is not None and n_s is not None
    detected, phi = dispersion if dispersion is not None else (False, 1.0)
    phi = max(1.0, phi)
    test = rate_ratio_test(x_c / phi, n_c / phi, x_s / phi, n_s / phi, r0=r0, alpha=alpha)
    rate_c, rate_s = _rate(x_c, n_c), _rate(x_s, n_s)
    ok = _ratio_pass(test, x_c, n_c, rate_s, phi=phi, alpha=alpha, tolerance_pp=tolerance_pp)
    # With no 5xx in either arm the +½ estimate is only the traffic split: show no ratio at all.
    ratio = test.ratio if x_c + x_s > 0 else None
    passes = n_c > 0 and n_s > 0 and (ok.ratio_within or ok.rate_within) and not (strict and ok.worse)

    def words(part: str) -> str:
        if part == "summary":
            summary = f"canary 5xx {pct(rate_c)} vs stable {pct(rate_s)}, ratio {_ratio_text(ratio, test.ci, alpha)}"
            return summary + (f"; errors overdispersed (tick-to-tick variance ×{phi:.1f} of binomial), "
                              "evidence discounted" if detected else "")
        if part == "pass":
            return (f"ratio upper bound within {r0:g}×" if ok.ratio_within and not ok.rate_within else
                    f"upper bound {pct(ok.ub)} within stable + {tolerance_pp:g} pp = {pct(ok.bound)}")
        if part == "hold":
            return _ratio_hold_why(ok.ub, ok.bound, r0, tolerance_pp, strict_worse=strict and ok.worse)
        return f"ratio above {r0:g}× is significant"

    return Check(
        name=name, action=action, status=_OK, words=words, unit="%", limit=r0,
        canary=rate_c, stable=rate_s, p_value=test.p_value, anytime_p_value=anytime_p,
        ratio=ratio, ci=test.ci, passes=passes,
        evidence=lambda: {"canary_errors": x_c, "canary_requests": n_c, "stable_errors": x_s,
                  "stable_requests": n_s, "upper_bound_pct": ok.ub, "p0": test.p0, "dispersion_phi": phi,
                  "dispersion_detected": float(detected)},
    )


def _ratio_hold_why(ub: float | None, bound: float, r0: float, tolerance_pp: float, *, strict_worse: bool) -> str:
    if strict_worse:
        return f"significantly worse than stable (strict), though not yet significantly above {r0:g}×"
    return (f"neither the ratio's upper bound within {r0:g}× nor the rate's upper bound {pct(ub)} within "
            f"stable + {tolerance_pp:g} pp = {pct(bound)}; not enough evidence either way yet")


def _ratio_text(ratio: float | None, ci: tuple[float, float] | None, alpha: float) -> str:
    text = "n/a (no 5xx in either arm)" if ratio is None else f"{ratio:.2f}×"
    if ci is not None:
        hi = "∞" if math.isinf(ci[1]) else f"{ci[1]:.2f}"
        text += f", {100 * (1 - alpha):.0f} % CI {ci[0]:.2f}–{hi}"
    return text


def rate_limit(name: str, action: Action, x: float | None, n: float | None, *, limit_pct: float,
               alpha: float, anytime_p: float, what: str, shown_as_success: bool = False) -> Check:
    """An absolute limit on a share of the canary's requests (5xx, or not-2xx for the success rate)."""
    if x is None or n is None:
        return no_data(name, action, f"no {what} counts for the canary", unit="%")
    p_value = limit_p_value(x, n, limit_fraction(limit_pct), alpha=alpha)
    rate = _rate(x, n)
    if shown_as_success:
        value = None if rate is None else 100.0 - rate
        limit = 100.0 - limit_pct
    else:
        value, limit = rate, limit_pct
    within = rate is not None and rate <= limit_pct

    def words(part: str) -> str:
        if part == "summary":
            if shown_as_success:
                return f"canary success rate {pct(value)} (limit ≥ {limit:g} %)"
            return f"canary {what} rate {pct(value)} (limit {limit:g} %)"
        if part == "pass":
            return f"within the limit over {n:.0f} requests"
        over = f"below {limit:g} %" if shown_as_success else f"above {limit:g} %"
        return f"{over} but not significantly so yet" if part == "hold" else f"significantly {over}"

    return Check(
        name=name, action=action, status=_OK, words=words, unit="%", limit=limit,
        canary=value, p_value=p_value, anytime_p_value=anytime_p, passes=within,
        exceeds=rate is not None and not within, fail_needs_gate=True,
        evidence=lambda: _limit_evidence(x, n, alpha),
    )


def _limit_evidence(x: float, n: float, alpha: float) -> dict[str, float | None]:
    lower, upper = rate_interval(x, n, alpha=alpha)  # rate_limit_test's interval, only when read
    return {"events": x, "requests": n, "lower_pct": 100 * lower, "upper_pct": 100 * upper}


# ---------------------------------------------------------------------------------------------- latency


def latency_limit(name: str, action: Action, canary: ArmWindow, stable: ArmWindow, *, quantile: float,
                  limit_ms: float, alpha: float, anytime_p: float) -> Check:
    """An absolute limit on a canary latency quantile: P99 > 1 s means more than 1 % of requests above 1 s."""
    if canary.buckets is None:
        return no_data(name, action, "no latency histogram for the canary", unit="ms")
    above, total = fraction_above(canary.buckets, limit_ms / 1000.0)
    q_c, q_s = canary.quantile(quantile), stable.quantile(quantile)
    value_c = None if q_c is None else 1000.0 * q_c
    value_s = None if q_s is None else 1000.0 * q_s
    p_value = limit_p_value(above, total, 1.0 - quantile, alpha=alpha)
    within = value_c is not None and value_c <= limit_ms

    def words(part: str) -> str:
        if part == "summary":
            return f"canary P{round(quantile * 100)} {ms(value_c)} vs stable {ms(value_s)} (limit {limit_ms:g} ms)"
        if part == "pass":
            return "within the limit"
        if part == "hold":
            return f"above {limit_ms:g} ms but not significantly so yet"
        return f"significantly above {limit_ms:g} ms ({100 * above / total if total else 0:.2f} % of requests over it)"

    return Check(
        name=name, action=action, status=_OK, unit="ms", limit=limit_ms, words=words,
        canary=value_c, stable=value_s, p_value=p_value, anytime_p_value=anytime_p,
        passes=within, exceeds=value_c is not None and not within, fail_needs_gate=True,
        evidence=lambda: {"requests_over_limit": above, "requests": total},
    )


# ---------------------------------------------------------------------------------------------- resources


def utilisation(name: str, canary: ArmWindow, stable: ArmWindow, *, limit_pct: float) -> Check:
    value = getattr(canary, name)
    other = getattr(stable, name)
    if value is None:
        return no_data(name, Action.WARN, f"no {name} utilisation for the canary", unit="%")
    over = value > limit_pct

    def words(part: str) -> str:
        if part == "summary":
            return f"canary {name} {pct(value, 1)} vs stable {pct(other, 1)} (limit {limit_pct:g} %)"
        return "within the limit" if part == "pass" else ""

    return Check(name=name, action=_WARN, status=_OK, unit="%", limit=limit_pct, words=words,
                 canary=value, stable=other, passes=not over, exceeds=over)
