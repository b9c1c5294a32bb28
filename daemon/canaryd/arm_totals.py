"""Cumulative counters of a rollout: the sum of a tick's increments, and the empty start."""

from __future__ import annotations

import functools
from array import array
from collections.abc import Iterator, Sequence
from typing import Any, cast, overload

from .analysis.snapshot import ArmSnapshot, Buckets, Snapshot

_UNKNOWN = ArmSnapshot()  # frozen: every rollout's start shares it


def zero_snapshot(t: float, weight: float | None) -> Snapshot:
    # Every counter starts unknown, not at 0: the first increments then set them all at once, so that the
    # step's baseline never holds requests from one moment and 2xx or 5xx from a later one (that read
    # as a 0 % success rate), and a counter with no query (errors: null) stays "no data", not 0.
    return Snapshot(t=t, canary=_UNKNOWN, stable=_UNKNOWN, weight=weight)


class PackedBuckets(Sequence[tuple[float, float]]):
    """Cumulative histogram buckets read as the judge reads them, (le, count) pairs in order, kept as the
    layout's bounds (one tuple shared by every rollout with that layout) and the counts in one array.

    A rollout keeps its arms' running sums (and its analysis the last of them) for as long as it runs:
    as a tuple of 15 pairs they were ~1.3 kB an arm, packed ~0.2 kB. The pairs are made when read."""

    __slots__ = ("les", "counts")

    def __init__(self, les: tuple[float, ...], counts: array[float]) -> None:
        self.les = les
        self.counts = counts

    def __len__(self) -> int:
        return len(self.les)

    @overload
    def __getitem__(self, i: int) -> tuple[float, float]: ...

    @overload
    def __getitem__(self, i: slice) -> tuple[tuple[float, float], ...]: ...

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return tuple(zip(self.les[i], self.counts[i], strict=True))
        return self.les[i], self.counts[i]

    def __iter__(self) -> Iterator[tuple[float, float]]:
        return zip(self.les, self.counts, strict=True)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PackedBuckets):
            return self.les == other.les and self.counts == other.counts
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    def __hash__(self) -> int:
        return hash(tuple(self))  # equal to the tuple of its pairs, so hashed as that

    def __repr__(self) -> str:
        return repr(tuple(self))


@functools.lru_cache(maxsize=64)
def _layout(les: tuple[float, ...]) -> tuple[float, ...]:
    """One tuple of each bucket layout, shared by the rollouts' packed sums (a few layouts in a fleet)."""
    return les


def _packed(buckets: Buckets, counts: Sequence[float]) -> Buckets:
    les = buckets.les if isinstance(buckets, PackedBuckets) else _layout(tuple(le for le, _ in buckets))
    return cast(Buckets, PackedBuckets(les, array("d", counts)))  # read as a Buckets: pairs in order


def add_arm(total: ArmSnapshot, inc: ArmSnapshot) -> ArmSnapshot:
    """Cumulative counters plus one increment; gauges as last read."""
    def plus(a: float | None, b: float | None) -> float | None:
        if b is None:
            return a
        return b if a is None else a + b

    buckets = total.buckets
    if inc.buckets is not None:
        if buckets is not None and [le for le, _ in buckets] == [le for le, _ in inc.buckets]:
            buckets = _packed(buckets, [a + b for (_, a), (_, b) in zip(buckets, inc.buckets, strict=True)])
        else:  # first histogram, or a new bucket layout: start over from here
            buckets = _packed(inc.buckets, [c for _, c in inc.buckets])
    return ArmSnapshot(requests=plus(total.requests, inc.requests), errors=plus(total.errors, inc.errors),
                       successes=plus(total.successes, inc.successes), buckets=buckets,
                       cpu=inc.cpu, memory=inc.memory)
