"""Recorded cumulative snapshots (the input of `canaryd analyze`): parsing and validation.

Every problem is reported as one line naming the sample index and the field, e.g.
`samples[2].canary.requests: decreased from 150 to 120; counters are cumulative`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from .analysis.snapshot import ArmSnapshot, Buckets, Snapshot

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,40}")
ARM_FIELDS = ("requests", "errors", "successes", "latency_buckets", "cpu", "memory")
SAMPLE_FIELDS = ("t", "canary", "stable", "weight")
COUNTERS = ("requests", "errors", "successes")


class ReplayError(ValueError):
    """Bad replay input; the message is one line a person can act on."""


@dataclass(frozen=True)
class Replay:
    snapshots: tuple[Snapshot, ...]


def _number(value: object, where: str, *, minimum: float | None = 0.0, maximum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ReplayError(f"{where}: must be a number, got {_shown(value)}")
    try:
        v = float(value)
    except OverflowError:  # an integer beyond float's range, e.g. 10**400
        raise ReplayError(f"{where}: must be a finite number, got an integer of {len(str(value))} digits") from None
    if not math.isfinite(v):
        raise ReplayError(f"{where}: must be a finite number, got {value}")
    if minimum is not None and v < minimum:
        raise ReplayError(f"{where}: must be >= {minimum:g}, got {value}")
    if maximum is not None and v > maximum:
        raise ReplayError(f"{where}: must be <= {maximum:g}, got {value}")
    return v


def _shown(value: object) -> str:
    """The JSON of a bad value, ASCII and cut short: the error stays one readable line."""
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _field(where: str, key: str) -> str:
    """`where.key`, or `where["key"]` JSON-escaped when the key is not a plain name (a control
    character or a line separator in it would break the one-line error)."""
    return f"{where}.{key}" if _PLAIN_KEY.fullmatch(key) else f"{where}[{_shown(key)}]"


def _le(text: str, where: str) -> float:
    if text in ("+Inf", "Inf", "inf", "+inf"):
        return math.inf
    try:
        value = float(text)
    except ValueError:
        raise ReplayError(f"{where}: bucket bound {_shown(text)} is not a number or \"+Inf\"") from None
    if not math.isfinite(value) or value < 0:
        raise ReplayError(f"{where}: bucket bound {_shown(text)} must be a finite number >= 0 or \"+Inf\"")
    return value


def _buckets(value: object, where: str) -> Buckets:
    if not isinstance(value, Mapping):
        raise ReplayError(f"{where}: must be an object of bucket bound (le, seconds) to cumulative count")
    pairs = sorted((_le(str(k), where), _number(v, f"{where}[{_shown(k)}]")) for k, v in value.items())
    if not pairs or not math.isinf(pairs[-1][0]):
        raise ReplayError(f"{where}: missing the \"+Inf\" bucket; Prometheus histograms always have one")
    for (le_a, a), (le_b, b) in zip(pairs, pairs[1:], strict=False):
        if b < a:
            hi = "+Inf" if math.isinf(le_b) else f"{le_b:g}"
            raise ReplayError(f"{where}: not cumulative: bucket le={hi} has {b:g}, "
                              f"less than {a:g} in le={le_a:g}")
    return tuple(pairs)


def _arm(value: object, where: str) -> ArmSnapshot:
    if value is None:
        return ArmSnapshot()
    if not isinstance(value, Mapping):
        raise ReplayError(f"{where}: must be an object with some of {', '.join(ARM_FIELDS)}")
    for key in value:
        if key not in ARM_FIELDS:
            raise ReplayError(f"{_field(where, key)}: unknown field; allowed: {', '.join(ARM_FIELDS)}")
    got = {k: _number(value[k], f"{where}.{k}") for k in (*COUNTERS, "cpu", "memory")
           if value.get(k) is not None}
    requests = got.get("requests")
    for k in ("errors", "successes"):
        if k in got and requests is not None and got[k] > requests:
            raise ReplayError(f"{where}.{k}: {got[k]:g} is more than requests ({requests:g})")
    buckets = None
    if value.get("latency_buckets") is not None:
        buckets = _buckets(value["latency_buckets"], f"{where}.latency_buckets")
    return ArmSnapshot(requests=requests, errors=got.get("errors"), successes=got.get("successes"),
                       buckets=buckets, cpu=got.get("cpu"), memory=got.get("memory"))


def _check_monotone(prev: ArmSnapshot, cur: ArmSnapshot, where: str) -> None:
    for k in COUNTERS:
        a, b = getattr(prev, k), getattr(cur, k)
        if a is not None and b is not None and b < a:
            raise ReplayError(f"{where}.{k}: decreased from {a:g} to {b:g}; counters are cumulative")
    if prev.buckets is not None and cur.buckets is not None:
        if [le for le, _ in prev.buckets] != [le for le, _ in cur.buckets]:
            raise ReplayError(f"{where}.latency_buckets: bucket bounds differ from the previous sample's")
        for (le, a), (_, b) in zip(prev.buckets, cur.buckets, strict=True):
            if b < a:
                bound = "+Inf" if math.isinf(le) else f"{le:g}"
                raise ReplayError(f"{where}.latency_buckets[{bound!r}]: decreased from {a:g} to {b:g}; "
                                  "counters are cumulative")


def _latest(seen: ArmSnapshot, cur: ArmSnapshot) -> ArmSnapshot:
    fields = (*COUNTERS, "buckets")
    return replace(seen, **{k: getattr(cur, k) for k in fields if getattr(cur, k) is not None})


def _load_json(text: str | bytes, source: str) -> object:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ReplayError(f"{source}: not valid JSON: line {e.lineno} column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise ReplayError(f"{source}: not UTF-8 text: {e.reason}") from None
    except RecursionError:
        raise ReplayError(f"{source}: the JSON is nested too deeply") from None
    except ValueError:  # json.loads' other ValueError: an integer over sys.get_int_max_str_digits()
        raise ReplayError(f"{source}: a number in the JSON has too many digits") from None
    return data


def parse_replay(text: str | bytes, source: str = "input") -> Replay:
    data = _load_json(text, source)
    if not isinstance(data, Mapping) or not isinstance(data.get("samples"), list):
        raise ReplayError(f"{source}: must be a JSON object with a \"samples\" list")
    samples = data["samples"]
    if not samples:
        raise ReplayError(f"{source}: samples: the list is empty; at least one sample is needed")
    out: list[Snapshot] = []
    seen_c = seen_s = ArmSnapshot()  # the latest value of each field, for fields absent in a sample
    for i, raw in enumerate(samples):
        where = f"samples[{i}]"
        if not isinstance(raw, Mapping):
            raise ReplayError(f"{where}: must be an object with t, canary and stable")
        for key in raw:
            if key not in SAMPLE_FIELDS:
                raise ReplayError(f"{_field(where, key)}: unknown field; allowed: {', '.join(SAMPLE_FIELDS)}")
        if "t" not in raw:
            raise ReplayError(f"{where}.t: missing; every sample needs its time in seconds")
        t = _number(raw["t"], f"{where}.t", minimum=None)
        if out and t <= out[-1].t:
            raise ReplayError(f"{where}.t: {t:g} is not after the previous sample's {out[-1].t:g}")
        weight = None
        if raw.get("weight") is not None:
            weight = _number(raw["weight"], f"{where}.weight", maximum=100.0)
        snap = Snapshot(t=t, canary=_arm(raw.get("canary"), f"{where}.canary"),
                        stable=_arm(raw.get("stable"), f"{where}.stable"), weight=weight)
        _check_monotone(seen_c, snap.canary, f"{where}.canary")
        _check_monotone(seen_s, snap.stable, f"{where}.stable")
        seen_c, seen_s = _latest(seen_c, snap.canary), _latest(seen_s, snap.stable)
        out.append(snap)
    return Replay(snapshots=tuple(out))
