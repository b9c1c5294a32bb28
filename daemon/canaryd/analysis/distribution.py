"""Latency distributions: Mann-Whitney U on histogram buckets or raw samples, and Prometheus quantiles.

A histogram bucket is a tie class: every request in bucket j is "equal" to every other in it. That makes
the rank-sum test computable in O(buckets) from the counts alone, and identical to scipy's asymptotic
mannwhitneyu (tie-corrected, continuity-corrected) on the data expanded to one sample per request.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .snapshot import Buckets


@dataclass(slots=True)  # made every tick and never kept: not frozen, whose __init__ costs µs per field
class MannWhitney:
    """One-sided test 'canary slower than stable'.

    effect is A = U/(n1·n2) = P(canary > stable) + P(tie)/2: 0.5 means no shift.
    z and effect are None when the test is undefined (an empty arm, or every request in one tie class
    makes z None too).
    """

    u: float
    n1: float  # canary requests
    n2: float  # stable requests
    z: float | None
    p_value: float
    effect: float | None


def _counts(name: str, values: Sequence[float]) -> list[float]:
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise ValueError(f"{name}: must be a flat sequence of per-bucket counts")
        values = values.tolist()
    try:
        arr = [float(v) for v in values]
    except TypeError:
        raise ValueError(f"{name}: must be a flat sequence of per-bucket counts") from None
    for v in arr:
        if not 0.0 <= v < math.inf:  # also false for NaN
            raise ValueError(f"{name}: per-bucket counts must be finite and >= 0, got {values!r}")
    return arr


def _mwu(a: Sequence[float], b: Sequence[float]) -> MannWhitney:
    """On plain floats: a dozen buckets are faster in Python than in numpy's per-call overhead."""
    n1, n2 = sum(a), sum(b)
    if n1 == 0 or n2 == 0:
        return MannWhitney(0.0, n1, n2, None, 1.0, None)
    u = 0.0
    below = 0.0  # stable requests in strictly lower buckets
    ties = 0.0
    classes = 0
    for x, y in zip(a, b, strict=True):
        u += x * (below + y / 2)
        below += y
        t = x + y
        ties += t**3 - t
        classes += t != 0
    n = n1 + n2
    var = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    effect = u / (n1 * n2)
    if n <= 1 or classes <= 1:
        # One tie class (or fractional counts totalling <= 1): nothing to rank. scipy divides -0.5 by a
        # zero deviation, z = -inf, p = 1.0; we report p 1.0 and no z.
        return MannWhitney(u, n1, n2, None, 1.0, effect)
    # Same operation order as scipy (mu, continuity 0.5, ndtr(-z)) so results agree to rounding.
    numerator = u - n1 * n2 / 2 - 0.5
    if not var > 0:  # only reachable with fractional counts
        return MannWhitney(u, n1, n2, None, 1.0, effect)
    z = numerator / math.sqrt(var)
    return MannWhitney(u, n1, n2, z, ndtr(-z), effect)


def ndtr(x: float) -> float:
    """The standard normal CDF, as scipy.special.ndtr computes it (Cephes), with the math module's erf."""
    y = x * _SQRT1_2
    if abs(y) < _SQRT1_2:
        return 0.5 + 0.5 * math.erf(y)
    half = 0.5 * math.erfc(abs(y))
    return 1.0 - half if y > 0 else half


_SQRT1_2 = math.sqrt(0.5)


def mann_whitney_buckets(canary_counts: Sequence[float], stable_counts: Sequence[float]) -> MannWhitney:
    """Mann-Whitney U from per-bucket (non-cumulative) counts over the same buckets, in O(buckets).

    Equals scipy.stats.mannwhitneyu(c, s, alternative='greater', method='asymptotic') on the samples
    expanded to one per request at its bucket index. Counts may be fractional.
    """
    a = _counts("canary_counts", canary_counts)
    b = _counts("stable_counts", stable_counts)
    if len(a) != len(b):
        raise ValueError(
            f"canary_counts and stable_counts: must cover the same buckets, got {len(a)} and {len(b)}"
        )
    return _mwu(a, b)


def mann_whitney_histograms(canary: Buckets, stable: Buckets) -> MannWhitney:
    """`mann_whitney_buckets` of two cumulative histograms' per-bucket counts.

    Well-formed buckets with a finite total (the judge's windows) have per-bucket counts that are finite and
    >= 0 by construction, and go to the test without being checked again.
    """
    if type(canary) is WellFormed and type(stable) is WellFormed and len(canary) == len(stable) and \
            math.isfinite(canary[-1][1]) and math.isfinite(stable[-1][1]):
        return _mwu(bucket_counts(canary), bucket_counts(stable))
    return mann_whitney_buckets(bucket_counts(canary), bucket_counts(stable))


def mann_whitney_samples(canary: Sequence[float], stable: Sequence[float]) -> MannWhitney:
    """Mann-Whitney U on raw samples (ties by midranks); equals scipy's asymptotic mannwhitneyu."""
    c = np.asarray(canary, dtype=float).ravel()
    s = np.asarray(stable, dtype=float).ravel()
    if not (np.all(np.isfinite(c)) and np.all(np.isfinite(s))):
        raise ValueError("canary, stable: samples must be finite numbers")
    # Each distinct value is a tie class; reuse the bucket form.
    values, inverse = np.unique(np.concatenate([c, s]), return_inverse=True)
    a = np.bincount(inverse[: c.size], minlength=values.size).astype(float)
    b = np.bincount(inverse[c.size :], minlength=values.size).astype(float)
    return _mwu(a.tolist(), b.tolist())


# --------------------------------------------------------------------------------------------------
# Cumulative Prometheus buckets

# Prometheus' tolerance for float noise between neighbouring cumulative counts (promql/quantile.go).
_SMALL_DELTA = 1e-12
_MIN_NORMAL = 2.2250738585072014e-308


def _almost_equal(a: float, b: float, eps: float) -> bool:
    # Port of prometheus util/almost.Equal.
    if a == b:
        return True
    abs_sum = abs(a) + abs(b)
    diff = abs(a - b)
    if a == 0 or b == 0 or abs_sum < _MIN_NORMAL:
        return diff < eps * _MIN_NORMAL
    return diff / min(abs_sum, sys.float_info.max) < eps


class WellFormed(tuple):  # type: ignore[type-arg]
    """Buckets already known to be well formed (see _well_formed): made by delta_buckets, read unchecked."""

    __slots__ = ()


def _well_formed(buckets: Buckets) -> bool:
    """Sorted by strictly increasing le, ending at +Inf, with counts that never decrease."""
    if type(buckets) is WellFormed:
        return True
    if not buckets or buckets[-1][0] != math.inf:
        return False
    prev_le, prev_c = -math.inf, -math.inf
    for le, c in buckets:
        if not le > prev_le or c < prev_c or c != c:
            return False
        prev_le, prev_c = le, c
    return True


def _normalise(buckets: Buckets) -> list[tuple[float, float]] | None:
    """What Prometheus does before reading buckets: sort, merge equal le, force monotonic counts.

    None when the histogram is unusable (no +Inf bucket, or a NaN le).
    """
    if type(buckets) is WellFormed:
        return buckets  # type: ignore[return-value]  # checked when made: read as it is
    if _well_formed(buckets):
        return list(buckets)  # the usual case (the judge's own buckets): nothing to repair
    items = sorted((float(le), float(c)) for le, c in buckets)
    if not items or items[-1][0] != math.inf or any(math.isnan(le) for le, _ in items):
        return None
    merged: list[tuple[float, float]] = []
    for le, c in items:
        if merged and merged[-1][0] == le:
            merged[-1] = (le, merged[-1][1] + c)
        else:
            merged.append((le, c))
    prev = merged[0][1]
    for i in range(1, len(merged)):
        le, cur = merged[i]
        if cur == prev:
            continue
        if _almost_equal(prev, cur, _SMALL_DELTA) or cur < prev:
            merged[i] = (le, prev)  # 'prev' is deliberately not advanced, as in Prometheus
            continue
        prev = cur
    return merged


def histogram_quantile(q: float, buckets: Buckets) -> float | None:
    """Prometheus' histogram_quantile(q, ...) on cumulative (le, count) buckets of one series.

    Linear interpolation inside the bucket; the first bucket starts at 0 if its le > 0; a rank in the +Inf
    bucket returns the highest finite le. None where Prometheus returns NaN: no +Inf bucket, fewer than
    two buckets, a zero total, q NaN (and the 0/0 of q = 0 with an empty first bucket). q < 0 gives
    -inf and q > 1 gives +inf, as in Prometheus.
    """
    q = float(q)
    if math.isnan(q):
        return None
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    bs = _normalise(buckets)
    if bs is None or len(bs) < 2:
        return None
    total = bs[-1][1]
    if total == 0:
        return None
    rank = q * total
    # sort.Search over all but the +Inf bucket: first index with count >= rank.
    b = len(bs) - 1
    for i in range(b):
        if bs[i][1] >= rank:
            b = i
            break
    if b == len(bs) - 1:
        return bs[-2][0]
    if b == 0 and bs[0][0] <= 0:
        return bs[0][0]
    start, end, count = 0.0, bs[b][0], bs[b][1]
    if b > 0:
        start = bs[b - 1][0]
        count -= bs[b - 1][1]
        rank -= bs[b - 1][1]
    if count == 0:
        return None  # 0/0 in Prometheus (only reachable with rank 0)
    return start + (end - start) * (rank / count)


def fraction_above(buckets: Buckets, threshold: float) -> tuple[float, float]:
    """(observations above threshold, total), interpolating as histogram_quantile does.

    So fraction_above(b, histogram_quantile(q, b)) == ((1 - q)·total, total) for ranks in finite buckets.
    Within the first bucket observations are spread over (0, le] (a point at le if le <= 0); everything in
    the +Inf bucket counts as above any threshold >= the highest finite le. Returns (0.0, 0.0) for an
    unusable histogram (no +Inf bucket), as histogram_quantile returns None.
    """
    t = float(threshold)
    if math.isnan(t):
        raise ValueError("threshold: must be a number, got NaN")
    bs = _normalise(buckets)
    if bs is None:
        return (0.0, 0.0)
    total = bs[-1][1]
    below = 0.0  # observations <= t
    prev_le, prev_c = None, 0.0
    for le, c in bs:
        if le == math.inf:
            break
        if t >= le:
            below, prev_le, prev_c = c, le, c
            continue
        start = prev_le if prev_le is not None else (0.0 if le > 0 else le)
        if t > start:
            below = prev_c + (c - prev_c) * (t - start) / (le - start)
        break
    return (max(total - below, 0.0), total)


def bucket_counts(buckets: Buckets) -> tuple[float, ...]:
    """Cumulative (le, count) -> per-bucket counts, same order and length.

    The le values must be strictly increasing. A decrease in the cumulative counts (float noise or a
    partial scrape) yields 0 for that bucket, matching Prometheus' forced monotonicity.
    """
    if type(buckets) is WellFormed:  # increasing le, counts never decrease, no NaN: nothing to check
        counts = [c for _, c in buckets]
        return tuple([c - prev for prev, c in zip([0.0, *counts], counts, strict=False)])  # the extra last count pairs with none
    out: list[float] = []
    prev = 0.0
    prev_le = -math.inf
    nan = False
    for le, c in buckets:
        le, c = float(le), float(c)
        if not le > prev_le and out:
            raise ValueError(f"buckets: le values must be strictly increasing, got {[float(b[0]) for b in buckets]!r}")
        nan = nan or c != c
        out.append(c - prev if c > prev else max(c - prev, 0.0))
        prev_le = le
        if c > prev:
            prev = c
    if nan:
        raise ValueError("buckets: counts must be numbers, got NaN")
    return tuple(out)


def delta_buckets(later: Buckets, earlier: Buckets) -> Buckets:
    """Cumulative buckets of what was observed between two snapshots of the same histogram.

    The le sets must match. A negative difference (a counter reset) is clamped to 0. Buckets that come
    out well formed are marked so (WellFormed), and the readers that follow do not check them again.
    """
    if len(later) != len(earlier):
        _different_les(later, earlier)
    out = []
    ok = bool(later)  # whether the result is well formed (see _well_formed), checked on the way
    prev_le, prev_d = -math.inf, -math.inf
    for (le, c1), (le0, c0) in zip(later, earlier, strict=True):
        if le != le0 and le is not le0 and float(le) != float(le0):
            _different_les(later, earlier)
        d = c1 - c0
        if type(d) is not float:  # ints, numpy scalars: the difference as a float, like the floats'
            d = float(c1) - float(c0)
        if d < 0.0:  # max(d, 0.0), as a comparison (17 buckets, 4 windows a tick)
            d = 0.0
        if ok and not (le > prev_le and d >= prev_d):
            ok = False
        prev_le, prev_d = le, d
        out.append((le, d))
    if ok and prev_le == math.inf:
        return WellFormed(out)
    return tuple(out)


def _different_les(later: Buckets, earlier: Buckets) -> None:
    raise ValueError(
        f"buckets: later and earlier snapshots have different le sets: {[float(b[0]) for b in later]!r} vs "
        f"{[float(b[0]) for b in earlier]!r}"
    )
