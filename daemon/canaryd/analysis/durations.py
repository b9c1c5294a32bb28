"""Durations, the one home for reading and writing them.

Config and CLI durations are strings such as ``30s``, ``5m``, ``1h``, ``1m30s``, ``500ms`` (units d, h, m, s,
ms, largest first, each at most once, as in Prometheus) or a bare number of seconds. `format_duration` writes
the canonical form, which both PromQL and `parse_duration` accept; reasons and tables use it too.
"""

from __future__ import annotations

import math
import re
import types

__all__ = ["DURATION_FORM", "DurationError", "format_duration", "parse_duration", "promql_duration"]

DURATION_FORM = "a duration such as 30s, 5m, 1h, 1m30s or 500ms (a bare number means seconds)"
_UNIT_SECONDS = types.MappingProxyType({"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001})
_UNIT_RANK = types.MappingProxyType({"d": 0, "h": 1, "m": 2, "s": 3, "ms": 4})
_UNIT_RE = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ms|d|h|m|s)")
_BARE_NUMBER_RE = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)")


class DurationError(ValueError):
    def __init__(self, text: object, negative: bool) -> None:
        self.negative = negative
        what = "negative duration" if negative else "invalid duration"
        super().__init__(f"{what} {text!r}; use {DURATION_FORM} (not negative)")


def parse_duration(text: str | int | float) -> float:
    """'1m30s' → 90.0; a bare number is seconds. Raises ValueError for malformed or negative input."""
    if isinstance(text, bool):
        raise DurationError(text, negative=False)
    if isinstance(text, int | float):
        seconds = float(text)
    elif isinstance(text, str):
        s = text.strip()
        if _BARE_NUMBER_RE.fullmatch(s):
            seconds = float(s)
        else:
            negative = s.startswith("-")
            seconds = _parse_units(s[1:] if negative else s, text)
            if negative:
                raise DurationError(text, negative=True)
    else:
        raise DurationError(text, negative=False)
    if not math.isfinite(seconds):
        raise DurationError(text, negative=False)
    if seconds < 0:
        raise DurationError(text, negative=True)
    return seconds


def _parse_units(s: str, original: object) -> float:
    total, pos, last_rank = 0.0, 0, -1
    while pos < len(s):
        m = _UNIT_RE.match(s, pos)
        # Units go largest first, each once ("1h30m", not "30m1h"), as in Prometheus.
        if m is None or _UNIT_RANK[m[2]] <= last_rank:
            raise DurationError(original, negative=False)
        total += float(m[1]) * _UNIT_SECONDS[m[2]]
        last_rank, pos = _UNIT_RANK[m[2]], m.end()
    if pos == 0:
        raise DurationError(original, negative=False)
    return total


def format_duration(seconds: float) -> str:
    """90 → '1m30s', 0.5 → '500ms', 0 → '0s'; rounds to milliseconds. Valid in PromQL and parse_duration."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"cannot format {seconds!r} as a duration; it must be a finite number >= 0")
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    parts = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def promql_duration(seconds: float) -> str:
    """A query window or step for Prometheus: at least 1ms, rounded to milliseconds."""
    if not math.isfinite(seconds) or round(seconds * 1000) <= 0:
        raise ValueError(f"a query window or step must be at least 1ms, got {seconds!r}s")
    return format_duration(seconds)
