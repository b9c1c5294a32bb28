"""The parts of a Prometheus answer, read strictly: a series' labels, a sample, and duplicate series.

Whatever answers in Prometheus' place may send any JSON. What does not have Prometheus' own shape raises
TypeError or ValueError here, which the client turns into a "bad_response" SourceError: never another
exception, and never a number guessed from a wrong type.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence


def labels(metric: object) -> dict[str, str]:
    """A series' labels: a JSON object of strings, as Prometheus writes them."""
    if not (isinstance(metric, dict) and all(isinstance(v, str) for v in metric.values())):
        raise TypeError(f"labels must be an object of strings, got {_what(metric)}")
    return dict(metric)


def sample(pair: object) -> tuple[float, float]:
    """[unix time, "value"] → floats; Prometheus writes the value as a string ("NaN" and "+Inf" included).
    A value beyond any float (an integer of 400 digits) raises OverflowError."""
    if not (isinstance(pair, list) and len(pair) == 2):
        raise TypeError(f"a sample must be [time, value], got {_what(pair)}")
    t, v = pair
    if not (_is_number(t) and (isinstance(v, str) or _is_number(v))):
        raise TypeError(f"a sample must be [number, string], got [{_what(t)}, {_what(v)}]")
    return float(t), float(v)


def malformed(rows: Sequence[tuple[Mapping[str, str], float]], *, buckets: bool) -> str | None:
    """Why the series one target got from a `sum by (...)` cannot be its answer, or None. Such a query
    answers one series per target (one per `le` for buckets): two mean the answer is malformed, and adding
    them up would invent requests. A NaN bucket count would vanish in the cumulative maximum."""
    if buckets and any(math.isnan(value) for _, value in rows):
        return "a latency bucket count is NaN"
    seen = Counter(labels.get("le", "") if buckets else "" for labels, _ in rows)
    twice = next((le for le, n in seen.items() if n > 1), None)
    if twice is None:
        return None
    return f"{seen[twice]} series {f'for le={twice!r} ' if buckets else ''}where the query sums to one"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _what(value: object) -> str:
    """What a JSON value is, without printing it (it may be megabytes, or nested past any limit)."""
    return f"a JSON {type(value).__name__}"
