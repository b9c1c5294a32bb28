"""The per-tick numbers a report page draws: one compact entry per decision, taken from the judge's output.

A rollout keeps the last `TICKS` entries in memory (rollout.Rollout.ticks); `canaryd analyze --report`
builds them from a replay's judgements. Only what the page draws is kept: per metric its verdict,
values, limit, band and p-values, and a reason only where a metric fails or warns; an entry is about
1.1 kB, and at most TICKS are kept (thinned, see `appended`), about 260 kB per rollout, fewer when the
daemon runs so many canaries that theirs together would pass BUDGET (see `kept_per_rollout`; the
controller trims them once a round). Entries are not saved on the route: after a restart
the page starts again from the restart (the decision history, which is saved, still lists every step).
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..analysis.verdicts import Judgement, MetricResult, Verdict

TICKS = 240  # entries kept per rollout at most; older judged holds are thinned to make room (see `appended`)
# The entries of all the rollouts together stay within BUDGET bytes: each rollout keeps kept_per_rollout(n)
# of them, down to MIN_TICKS (the charts then show the last few ticks and the markers that fit).
BUDGET = 16 * 2**20
ENTRY_BYTES = 1100  # an entry of six metrics and a hold's reason, as measured
MIN_TICKS = 1
REASON_CHARS = 300  # a hold's reason is kept, shortened: it repeats every tick

# The evidence keys of the error ratio check: the step window's counts, differenced into intervals.
COUNT_KEYS = ("canary_errors", "canary_requests", "stable_errors", "stable_requests")


_NUMBERS = struct.Struct("<11d")  # canary, stable, limit, band (2), anytime_p, adjusted_p, counts (4); NaN: None
_NONE = math.nan


class MetricPoint:
    """One metric at one tick. Its numbers are packed (88 bytes; as floats and tuples they were ~400): a
    daemon keeps up to TICKS entries of six metrics per rollout. Read-only, like the values it records."""

    __slots__ = ("name", "verdict", "action", "unit", "reason", "_numbers")

    def __init__(self, labels: tuple[str, str, str, str, str | None], numbers: bytes) -> None:
        """`labels`: (name, verdict, action, unit, reason); `numbers`: _NUMBERS packed, NaN for None."""
        for k, v in zip(self.__slots__, (*labels, numbers), strict=True):
            object.__setattr__(self, k, v)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"MetricPoint is read-only: {name}")

    def _values(self) -> tuple[float | None, ...]:
        return tuple(None if v != v else v for v in _NUMBERS.unpack(self._numbers))

    canary = property(lambda self: self._values()[0])
    stable = property(lambda self: self._values()[1])
    limit = property(lambda self: self._values()[2])
    anytime_p = property(lambda self: self._values()[5])
    adjusted_p = property(lambda self: self._values()[6])

    @property
    def band(self) -> tuple[float, float] | None:
        """The canary's rate interval over the step (%), when the check has one."""
        lo, hi = self._values()[3:5]
        return None if lo is None or hi is None else (lo, hi)

    @property
    def counts(self) -> tuple[float, float, float, float] | None:
        """COUNT_KEYS, over the step so far."""
        c = self._values()[7:]
        return None if any(x is None for x in c) else c  # type: ignore[return-value]

    def _key(self) -> tuple[object, ...]:
        return self.name, self.verdict, self.action, self.unit, self.reason, self._values()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MetricPoint) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"MetricPoint({self.to_json()!r})"

    def to_json(self) -> dict[str, Any]:
        band, counts = self.band, self.counts
        return {"name": self.name, "verdict": self.verdict, "action": self.action, "unit": self.unit,
                "canary": self.canary, "stable": self.stable, "limit": self.limit,
                "band": None if band is None else list(band), "anytime_p_value": self.anytime_p,
                "adjusted_p_value": self.adjusted_p,
                "counts": None if counts is None else dict(zip(COUNT_KEYS, counts, strict=True)),
                "reason": self.reason}


class Points(Sequence[MetricPoint]):
    """A tick's metric points, kept as one packed run of numbers and a tuple of labels shared between
    entries (~0.6 kB an entry less than six MetricPoints); each point is made when read."""

    __slots__ = ("_labels", "_numbers")

    def __init__(self, results: Iterable[MetricResult]) -> None:
        """The points of a judgement's results (metric_point of each), its skipped metrics left out, packed
        straight from the results: made for every judgement, without a MetricPoint each."""
        labels, numbers = [], []
        for m in results:
            if m.verdict is not _SKIPPED:
                labels.append(_result_label(m))
                numbers += _result_numbers(m)
        self._labels, self._numbers = tuple(labels), struct.pack(f"<{len(numbers)}d", *numbers)

    def __getitem__(self, i: int) -> MetricPoint:  # type: ignore[override]
        label = self._labels[i]  # IndexError past the end, as a tuple
        i %= len(self._labels)
        return MetricPoint(label, self._numbers[i * _NUMBERS.size:(i + 1) * _NUMBERS.size])

    def __len__(self) -> int:
        return len(self._labels)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"Points({list(self)!r})"


@functools.lru_cache(maxsize=1024)
def _label(name: str, verdict: str, action: str, unit: str, reason: str | None) -> tuple[str, str, str, str, str | None]:
    return name, verdict, action, unit, reason  # one tuple for the same labels in every entry


@dataclass(frozen=True, slots=True)
class TickEntry:
    at: float
    decision: str  # start | hold | advance | pause | resume | promote | promoted | rollback
    trigger: str  # analysis | alert | manual | timeout | source | auto | start
    step: int
    weight: float | None  # the canary's weight while this tick's traffic was served (after it, for a start)
    reasons: tuple[str, ...] = ()
    metrics: Sequence[MetricPoint] = ()  # Points when there are some
    judged: bool = False  # a judgement of the analysis (not a command, an alert or a source outage)
    n: int = 0  # its number in the rollout's log (set by `appended`), for even thinning

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "decision": self.decision, "trigger": self.trigger, "step": self.step,
                "weight": self.weight, "reasons": list(self.reasons), "judged": self.judged,
                "metrics": [m.to_json() for m in self.metrics]}


_SKIPPED = Verdict.SKIPPED  # an enum member read off its class costs ~70 ns (Python 3.11)
_INF = math.inf


def _result_label(m: MetricResult) -> tuple[str, str, str, str, str | None]:
    return _label(m.name, m.verdict.value, m.action.value, m.unit,
                  m.reason if m.verdict in (Verdict.FAIL, Verdict.WARN) else None)


def _result_numbers(m: MetricResult) -> list[float]:
    """The point's numbers in _NUMBERS' order, NaN for what is missing or not finite; the band and the
    counts are all there or all NaN."""
    ev = m.evidence
    band = [ev.get("lower_pct"), ev.get("upper_pct")]
    counts = [ev.get(k) for k in COUNT_KEYS]
    values = [m.canary, m.stable, m.limit, *band, m.anytime_p_value, m.adjusted_p_value, *counts]
    # x is not None and -inf < x < inf: finite (false for NaN); float() for ints and numpy's scalars.
    out = [float(x) if x is not None and -_INF < x < _INF else _NONE for x in values]
    if out[3] != out[3] or out[4] != out[4]:
        out[3] = out[4] = _NONE
    if any(x != x for x in out[7:]):
        out[7:] = [_NONE] * 4
    return out


def metric_point(m: MetricResult) -> MetricPoint:
    return MetricPoint(_result_label(m), _NUMBERS.pack(*_result_numbers(m)))


def entry(*, at: float, decision: str, trigger: str, step: int, weight: float | None,
          reasons: Iterable[str], judgement: Judgement | None = None) -> TickEntry:
    """One decision as the page needs it; `judgement` is the judge's output when the analysis decided."""
    texts = tuple(reasons)
    if decision == "hold" and judgement is not None:
        texts = tuple(t[:REASON_CHARS] for t in texts[:1])  # repeated every tick: the first one says enough
    metrics = () if judgement is None else Points(judgement.metrics)
    return TickEntry(at=at, decision=decision, trigger=trigger, step=step, weight=weight, reasons=texts,
                     metrics=metrics, judged=judgement is not None)


def appended(ticks: tuple[TickEntry, ...], new: TickEntry, keep: int = TICKS) -> tuple[TickEntry, ...]:
    """Add `new`; past `keep` entries, the judged holds before the newest quarter are thinned evenly.

    An entry costs about 1.1 kB (six metrics), so a rollout keeps at most about 260 kB, however long it
    runs. The newest quarter keeps every tick. Before it only every `stride`-th hold stays (by its number
    since the rollout began, so the spacing is even and the charts still reach back to the start), the
    stride doubling as the rollout grows; every decision that is not a plain hold (the markers) is kept.
    """
    return trimmed((*ticks, replace(new, n=ticks[-1].n + 1 if ticks else 0)), keep)


def trimmed(ticks: tuple[TickEntry, ...], keep: int) -> tuple[TickEntry, ...]:
    """At most `keep` of the entries, thinned as `appended` does."""
    if len(ticks) <= keep:
        return ticks
    quarter = max(1, keep // 4)
    recent, older = ticks[-quarter:], ticks[:-quarter]
    stride, kept = 2, older
    while len(kept) + len(recent) > keep and stride <= 1 << 30:
        kept = tuple(e for e in older if not (e.judged and e.decision == "hold") or e.n % stride == 0)
        stride *= 2
    return (*kept, *recent)[-keep:]


def kept_per_rollout(rollouts: int) -> int:
    """How many entries each of this many rollouts keeps: TICKS, or fewer so that all of them together stay
    within BUDGET (a daemon with 10,000 canaries would otherwise hold 2.6 GB of them), MIN_TICKS at least."""
    return max(MIN_TICKS, min(TICKS, BUDGET // (ENTRY_BYTES * max(1, rollouts))))


def from_history(history: Iterable[Mapping[str, Any]]) -> tuple[TickEntry, ...]:
    """Entries for decisions known only from the saved history (a restarted daemon's earlier steps)."""
    out: list[TickEntry] = []
    for h in history:
        try:
            at = float(h["at"])
            weight = h.get("weight")
            out.append(TickEntry(at=at, decision=str(h.get("decision", "")), trigger=str(h.get("trigger", "")),
                                 step=int(h.get("step", -1)), weight=None if weight is None else float(weight),
                                 reasons=tuple(str(r) for r in h.get("reasons") or ())))
        except (KeyError, TypeError, ValueError):
            continue
    return tuple(out)
