"""The latency-ratio check: canary P95 against limit × stable P95, read from bucket edges only.

Failing is the anytime-valid edge-pair test of latency.py alone: no interpolation inside a bucket, and no
Mann-Whitney veto (a canary slower in the tail but not in the middle is still slower). Mann-Whitney stays
in the evidence as a description.

Passing, where stable's P95 bucket is narrower than the limit, compares Prometheus' interpolated P95s: the
interpolation cannot be off by more than that bucket. Where it is wider ("buckets too coarse"), nothing on
those buckets can show the canary inside the limit, so a step passes only if the canary is not detectably
slower than stable at any bucket edge; otherwise it holds (and a hold that lasts pauses the rollout, which
is still judged for failure) rather than advance on an interpolation.
"""

from __future__ import annotations

import math

from . import scalar
from .checks import Check, Status, fmt_p, ms, no_data
from .distribution import mann_whitney_histograms
from .latency import ScaleSequential, best_pair, quantile_bucket, too_coarse
from .snapshot import Buckets
from .verdicts import Action
from .windows import ArmWindow

_OK, _ROLLBACK = Status.OK, Action.ROLLBACK  # read off their class, ~70 ns each on Python 3.11


def _bucket_text(bucket: tuple[float, float] | None) -> str:
    if bucket is None:
        return "n/a"
    lo, hi = bucket
    return f"({ms(1000 * lo)}, {'+Inf' if hi == float('inf') else ms(1000 * hi)}]"


def _bounds(arm: str, bucket: tuple[float, float] | None) -> dict[str, float | None]:
    lo, hi = (None, None) if bucket is None else (1000 * bucket[0], 1000 * bucket[1])
    return {f"{arm}_p95_lower_ms": lo, f"{arm}_p95_upper_ms": hi}


def _share_above(buckets: Buckets, edge: float) -> float:
    total = buckets[-1][1]
    below = next((c for le, c in buckets if le == edge), total)
    return 100.0 * (total - below) / total if total > 0 else 0.0


def slower_at_an_edge(canary: Buckets, stable: Buckets, alpha: float) -> float | None:
    """The first edge (seconds) where the canary has significantly more requests above it than stable.

    One-sided two-proportion z-tests, Bonferroni over the finite edges; None when there is no such edge.
    """
    n_c, n_s = canary[-1][1], stable[-1][1]
    finite = [i for i, (le, _) in enumerate(canary) if math.isfinite(le)]
    if n_c <= 0 or n_s <= 0 or not finite:
        return None
    z_crit = -scalar.ndtri(alpha / len(finite))
    for i in finite:
        p_c, p_s = 1.0 - canary[i][1] / n_c, 1.0 - stable[i][1] / n_s
        pooled = (p_c * n_c + p_s * n_s) / (n_c + n_s)
        se = math.sqrt(max(pooled * (1.0 - pooled), 0.0) * (1.0 / n_c + 1.0 / n_s))
        if se > 0 and (p_c - p_s) / se > z_crit:
            return canary[i][0]
    return None


def _fail_why(c: Buckets, st: Buckets, seq: ScaleSequential | None, max_ratio: float) -> str:
    pair = None if seq is None else best_pair(seq)
    if pair is None:
        return f"slower than {max_ratio:g}× stable is significant"
    b, e = pair
    return (f"{_share_above(c, e):.1f} % of canary requests above {ms(1000 * e)} vs "
            f"{_share_above(st, b):.1f} % of stable's above {ms(1000 * b)} (≥ {max_ratio:g}× that edge): "
            f"slower than {max_ratio:g}× stable is significant")


def _unusable(canary: Buckets, stable: Buckets, p95_c: float | None, p95_s: float | None) -> str:
    if p95_c is None or p95_s is None:
        return "no latency observations for one of the arms"
    if [le for le, _ in canary] != [le for le, _ in stable]:
        return "the arms' histograms have different buckets"
    return ""


def _hold_why(slower_at: float | None, max_ratio: float) -> str:
    if slower_at is not None:
        return (f"slower than stable above {ms(1000 * slower_at)}, and the buckets cannot show whether "
                f"within {max_ratio:g}×")
    return f"above {max_ratio:g}× stable (interpolated) but not significantly so at the bucket edges yet"


def latency_ratio(canary: ArmWindow, stable: ArmWindow, *, max_ratio: float, alpha: float,
                  sequential: ScaleSequential | None) -> Check:
    name, action = "latency_ratio", _ROLLBACK
    if canary.buckets is None or stable.buckets is None:
        return no_data(name, action, "no latency histogram for one of the arms", unit="ms")
    p95_c, p95_s = canary.quantile(0.95), stable.quantile(0.95)
    why_not = _unusable(canary.buckets, stable.buckets, p95_c, p95_s)
    if why_not:
        return no_data(name, action, why_not, unit="ms")
    assert p95_c is not None and p95_s is not None
    mw = mann_whitney_histograms(canary.buckets, stable.buckets)
    bucket_c, bucket_s = quantile_bucket(0.95, canary.buckets), quantile_bucket(0.95, stable.buckets)
    coarse = bucket_s is not None and too_coarse(bucket_s, max_ratio)
    ratio = p95_c / p95_s if p95_s > 0 else None
    anytime_p = 1.0 if sequential is None else sequential.p_value
    slower_at = slower_at_an_edge(canary.buckets, stable.buckets, alpha) if coarse else None
    passes = p95_c <= max_ratio * p95_s and slower_at is None

    def words(part: str) -> str:
        if part == "summary":
            effect = "n/a" if mw.effect is None else f"{mw.effect:.2f}"
            summary = (f"canary P95 {ms(1000 * p95_c)} in {_bucket_text(bucket_c)} vs stable {ms(1000 * p95_s)} "
                       f"in {_bucket_text(bucket_s)}, interpolated ratio "
                       f"{'n/a' if ratio is None else f'{ratio:.2f}×'}; Mann-Whitney A={effect} (p={fmt_p(mw.p_value)})")
            return summary + (f"; buckets too coarse: stable P95 in {_bucket_text(bucket_s)}" if coarse else "")
        if part == "pass":
            return ("not slower than stable at any bucket edge" if coarse else
                    f"within {max_ratio:g}× stable (interpolated inside a bucket narrower than the limit)")
        if part == "hold":
            return _hold_why(slower_at, max_ratio)
        return _fail_why(canary_b, stable_b, sequential, max_ratio)

    canary_b, stable_b = canary.buckets, stable.buckets
    return Check(
        name=name, action=action, status=_OK, unit="ms", limit=max_ratio, words=words,
        canary=1000 * p95_c, stable=1000 * p95_s, p_value=mw.p_value, anytime_p_value=anytime_p,
        ratio=ratio, passes=passes,
        evidence=lambda: {"mann_whitney_u": mw.u, "mann_whitney_effect": mw.effect, "mann_whitney_z": mw.z,
                          **_bounds("canary", bucket_c), **_bounds("stable", bucket_s), "buckets_too_coarse": float(coarse)},
    )
