"""One function per metric: the evidence for it this tick, before the verdicts are settled.

A check does not decide pass or fail by itself: failing needs the anytime-valid p-value to survive
Holm's correction across all metrics, which only the judge can see. So each check returns its
evidence and the two questions the judge asks: is the pass criterion met, and is the metric failing
if its p-value is significant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

from .counts import rate_limit_test, rate_ratio_test, upper_bound
from .distribution import bucket_counts, fraction_above, histogram_quantile, mann_whitney_buckets
from .verdicts import Action
from .windows import ArmWindow


class Status(str, Enum):
    OK = "ok"  # judged this tick
    NO_DATA = "no_data"  # had data before (or should have), has none now: holds
    SKIPPED = "skipped"  # no source at all, disabled, or not applicable: does not block


@dataclass(frozen=True)
class Check:
    name: str
    action: Action
    status: Status
    summary: str  # what was measured, in words and numbers
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
    pass_why: str = ""
    hold_why: str = ""
    fail_why: str = ""
    evidence: dict[str, float | None] = field(default_factory=dict)


def skipped(name: str, action: Action, why: str, unit: str = "") -> Check:
    return Check(name=name, action=action, status=Status.SKIPPED, summary=why, unit=unit)


def no_data(name: str, action: Action, why: str, unit: str = "") -> Check:
    return Check(name=name, action=action, status=Status.NO_DATA, summary=why, unit=unit)


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


def error_ratio(canary: ArmWindow, stable: ArmWindow, *, r0: float, alpha: float, tolerance_pp: float,
                anytime_p: float) -> Check:
    """Canary 5xx rate against stable's: fails when the ratio is significantly above r0."""
    name, action = "error_ratio", Action.ROLLBACK
    if None in (canary.requests, canary.errors, stable.requests, stable.errors):
        return no_data(name, action, "no 5xx or request counts for one of the arms")
    x_c, n_c, x_s, n_s = canary.errors, canary.requests, stable.errors, stable.requests
    assert x_c is not None and n_c is not None and x_s is not None and n_s is not None
    test = rate_ratio_test(x_c, n_c, x_s, n_s, r0=r0, alpha=alpha)
    rate_c, rate_s = _rate(x_c, n_c), _rate(x_s, n_s)
    ub = 100.0 * upper_bound(x_c, n_c, alpha) if n_c > 0 else None
    bound = (rate_s or 0.0) + tolerance_pp
    # With no 5xx in either arm the +½ estimate is only the traffic split: show no ratio at all.
    ratio = test.ratio if x_c + x_s > 0 else None
    # Passing needs the canary's rate bounded close to stable's on the absolute scale, and no
    # significant evidence that it is worse than stable at all (the interval's lower end at most 1):
    # a canary that is clearly worse never advances just because the absolute tolerance is lenient.
    worse = test.ci is not None and x_c + x_s > 0 and test.ci[0] > 1.0
    passes = n_c > 0 and n_s > 0 and ub is not None and ub <= bound and not worse
    summary = f"canary 5xx {pct(rate_c)} vs stable {pct(rate_s)}, ratio {_ratio_text(ratio, test.ci, alpha)}"
    return Check(
        name=name, action=action, status=Status.OK, summary=summary, unit="%", limit=r0,
        canary=rate_c, stable=rate_s, p_value=test.p_value, anytime_p_value=anytime_p,
        ratio=ratio, ci=test.ci, passes=passes,
        pass_why=f"upper bound {pct(ub)} within stable + {tolerance_pp:g} pp = {pct(bound)}",
        hold_why=(f"upper bound {pct(ub)} above stable + {tolerance_pp:g} pp = {pct(bound)}; "
                  "not enough evidence either way yet" if ub is None or ub > bound else
                  "significantly worse than stable, though not yet significantly above "
                  f"{r0:g}×"),
        fail_why=f"ratio above {r0:g}× is significant",
        evidence={"canary_errors": x_c, "canary_requests": n_c, "stable_errors": x_s,
                  "stable_requests": n_s, "upper_bound_pct": ub, "p0": test.p0},
    )


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
    test = rate_limit_test(x, n, limit_fraction(limit_pct), alpha=alpha)
    rate = _rate(x, n)
    if shown_as_success:
        value = None if rate is None else 100.0 - rate
        limit = 100.0 - limit_pct
        summary = f"canary success rate {pct(value)} (limit ≥ {limit:g} %)"
        over = f"below {limit:g} %"
    else:
        value, limit = rate, limit_pct
        summary = f"canary {what} rate {pct(value)} (limit {limit:g} %)"
        over = f"above {limit:g} %"
    within = rate is not None and rate <= limit_pct
    return Check(
        name=name, action=action, status=Status.OK, summary=summary, unit="%", limit=limit,
        canary=value, p_value=test.p_value, anytime_p_value=anytime_p, passes=within,
        exceeds=rate is not None and not within, fail_needs_gate=True,
        pass_why=f"within the limit over {n:.0f} requests",
        hold_why=f"{over} but not significantly so yet",
        fail_why=f"significantly {over}",
        evidence={"events": x, "requests": n, "lower_pct": 100 * test.lower, "upper_pct": 100 * test.upper},
    )


# ---------------------------------------------------------------------------------------------- latency


def latency_limit(name: str, action: Action, canary: ArmWindow, stable: ArmWindow, *, quantile: float,
                  limit_ms: float, alpha: float, anytime_p: float) -> Check:
    """An absolute limit on a canary latency quantile: P99 > 1 s means more than 1 % of requests above 1 s."""
    if canary.buckets is None:
        return no_data(name, action, "no latency histogram for the canary", unit="ms")
    above, total = fraction_above(canary.buckets, limit_ms / 1000.0)
    q_c = histogram_quantile(quantile, canary.buckets)
    q_s = histogram_quantile(quantile, stable.buckets) if stable.buckets is not None else None
    value_c = None if q_c is None else 1000.0 * q_c
    value_s = None if q_s is None else 1000.0 * q_s
    test = rate_limit_test(above, total, 1.0 - quantile, alpha=alpha)
    within = value_c is not None and value_c <= limit_ms
    label = f"P{round(quantile * 100)}"
    return Check(
        name=name, action=action, status=Status.OK, unit="ms", limit=limit_ms,
        summary=f"canary {label} {ms(value_c)} vs stable {ms(value_s)} (limit {limit_ms:g} ms)",
        canary=value_c, stable=value_s, p_value=test.p_value, anytime_p_value=anytime_p,
        passes=within, exceeds=value_c is not None and not within, fail_needs_gate=True,
        pass_why="within the limit",
        hold_why=f"above {limit_ms:g} ms but not significantly so yet",
        fail_why=(f"significantly above {limit_ms:g} ms "
                  f"({100 * above / total if total else 0:.2f} % of requests over it)"),
        evidence={"requests_over_limit": above, "requests": total},
    )


def latency_ratio(canary: ArmWindow, stable: ArmWindow, *, max_ratio: float, alpha: float,
                  anytime_p: float) -> Check:
    """Canary P95 against max_ratio × stable P95.

    H0 "canary P95 <= max_ratio × stable P95" is "at most 5 % of canary requests are slower than
    max_ratio × stable P95", a count that has an exact and an anytime-valid test. Mann-Whitney on the
    buckets says whether the canary is slower at all; a failure needs both, so a shift too small to
    matter (or an interpolation artefact) does not roll back.
    """
    name, action = "latency_ratio", Action.ROLLBACK
    if canary.buckets is None or stable.buckets is None:
        return no_data(name, action, "no latency histogram for one of the arms", unit="ms")
    p95_c = histogram_quantile(0.95, canary.buckets)
    p95_s = histogram_quantile(0.95, stable.buckets)
    if p95_c is None or p95_s is None:
        return no_data(name, action, "no latency observations for one of the arms", unit="ms")
    if [le for le, _ in canary.buckets] != [le for le, _ in stable.buckets]:
        return no_data(name, action, "the arms' histograms have different buckets", unit="ms")
    mw = mann_whitney_buckets(bucket_counts(canary.buckets), bucket_counts(stable.buckets))
    threshold = max_ratio * p95_s
    above, total = fraction_above(canary.buckets, threshold)
    test = rate_limit_test(above, total, 0.05, alpha=alpha)
    ratio = p95_c / p95_s if p95_s > 0 else None
    passes = p95_c <= threshold
    effect = "n/a" if mw.effect is None else f"{mw.effect:.2f}"
    return Check(
        name=name, action=action, status=Status.OK, unit="ms", limit=max_ratio,
        summary=(f"canary P95 {ms(1000 * p95_c)} vs stable {ms(1000 * p95_s)}, ratio "
                 f"{'n/a' if ratio is None else f'{ratio:.2f}×'}; Mann-Whitney A={effect} "
                 f"(p={fmt_p(mw.p_value)})"),
        canary=1000 * p95_c, stable=1000 * p95_s, p_value=mw.p_value, anytime_p_value=anytime_p,
        ratio=ratio, passes=passes, significant_ok=mw.p_value < alpha,
        pass_why=f"within {max_ratio:g}× stable",
        hold_why=f"above {max_ratio:g}× stable but not significantly so yet",
        fail_why=(f"{100 * above / total if total else 0:.1f} % of canary requests slower than "
                  f"{max_ratio:g}× stable P95 ({ms(1000 * threshold)}), significantly above 5 %"),
        evidence={"mann_whitney_u": mw.u, "mann_whitney_effect": mw.effect, "mann_whitney_z": mw.z,
                  "exceedance_p_value": test.p_value, "requests_over_threshold": above,
                  "threshold_ms": 1000 * threshold},
    )


# ---------------------------------------------------------------------------------------------- resources


def utilisation(name: str, canary: ArmWindow, stable: ArmWindow, *, limit_pct: float) -> Check:
    value = getattr(canary, name)
    other = getattr(stable, name)
    if value is None:
        return no_data(name, Action.WARN, f"no {name} utilisation for the canary", unit="%")
    over = value > limit_pct
    return Check(
        name=name, action=Action.WARN, status=Status.OK, unit="%", limit=limit_pct,
        summary=f"canary {name} {pct(value, 1)} vs stable {pct(other, 1)} (limit {limit_pct:g} %)",
        canary=value, stable=other, passes=not over, exceeds=over,
        pass_why="within the limit", hold_why="", fail_why="",
    )
