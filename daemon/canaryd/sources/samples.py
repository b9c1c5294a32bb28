"""The parts of a Prometheus answer, read strictly: its JSON, a series' labels, a sample, duplicate series.

Whatever answers in Prometheus' place may send any JSON. What does not have Prometheus' own shape raises
TypeError or ValueError here, which the client turns into a "bad_response" SourceError: never another
exception, and never a number guessed from a wrong type.

A tick's answers are decoded on the event loop, where a webhook waits behind them: `loads` takes the
body's bytes to orjson (several times faster than json on text), and `vector_rows` reads thousands of
rows in one loop with the checks of `labels` and `sample` inlined.
"""

from __future__ import annotations

import codecs
import json
import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from canaryd.analysis.snapshot import Buckets


def loads(body: bytes, encoding: str) -> Any:
    """The JSON value of a body in `encoding` (the response's charset, as aiohttp resolves it); None when
    it is not JSON. Bytes that are not in the encoding are replaced. A UTF-8 body goes to orjson first;
    whatever orjson refuses (NaN literals, lone surrogates, nesting past its limit, bytes that are not
    UTF-8) is read by json as before, so the value is the same either way; but for an integer beyond
    64 bits, which orjson reads as the nearest float (only a sample's time could be one, and `sample`
    makes it that float anyway)."""
    try:
        utf8 = codecs.lookup(encoding).name == "utf-8"
    except LookupError:
        utf8, encoding = True, "utf-8"
    if utf8:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(body.decode(encoding, errors="replace"))
    except (ValueError, RecursionError):  # not JSON, or nested beyond what the decoder follows
        return None


def vector_rows(result: object) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of each series of an instant vector's `result`: `labels` and `sample` of each row,
    with their checks inlined for the common shape; any other shape goes through them, for their error."""
    rows = []
    for r in result:  # type: ignore[attr-defined]
        metric, pair = r["metric"], r["value"]
        if type(metric) is dict and type(pair) is list and len(pair) == 2:
            t, v = pair
            if (type(v) is str and (type(t) is float or type(t) is int)
                    and all(type(x) is str for x in metric.values())):
                rows.append((metric, float(v)))
                continue
        rows.append((labels(metric), sample(pair)[1]))
    return rows


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


def buckets(rows: Sequence[tuple[str, float]], scale: float = 1.0) -> Buckets | None:
    """Cumulative (le, count) sorted, +Inf last, monotone; None without a +Inf bucket."""
    by_le: dict[float, float] = defaultdict(float)
    for le, value in rows:
        try:
            bound = float(le) * scale  # "+Inf", "0.05", "1e-3", "1.0"
        except ValueError:
            continue
        if not math.isnan(bound):
            by_le[bound] += value  # "1" and "1.0" from different client libraries are one bucket
    total = by_le.get(math.inf)
    if total is None:
        return None
    out: list[tuple[float, float]] = []
    running = 0.0
    for bound in sorted(by_le):
        # increase() extrapolates each bucket series on its own, so neighbours may disagree slightly.
        running = max(running, min(by_le[bound], total))
        out.append((bound, running))
    return tuple(out)


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
