"""The analysis tick's read: the progressing canaries' counters from Prometheus, as increments.

One `CounterReader` holds what each canary's arms are read with (rebuilt when the config changes,
not on every tick) and the counter totals of the last good read per (canary, arm). Totals are
differenced here (counters.advance): exact counts, and no window shorter than two scrapes.
"""

from __future__ import annotations

from array import array
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace

from ..analysis.snapshot import ArmSnapshot
from ..config import CanaryConfig, Queries
from .counters import advance
from .history import fetch_history
from .plausible import implausible
from .prometheus import ArmTarget, FetchResult, PrometheusClient, fetch_increments

ARMS = ("canary", "stable")
TURN_KEYS = 10  # canaries whose totals are made increments in one turn of the pacer (~1 ms)

# An arm's counter totals as kept between reads: requests, errors, successes, the bucket bounds (one shared
# tuple per layout) and the bucket counts packed. As an ArmSnapshot of pairs it was ~2 kB an arm.
_Totals = tuple[float | None, float | None, float | None, tuple[float, ...] | None, array | None]


@dataclass(frozen=True)
class Reading:
    increments: dict[str, tuple[ArmSnapshot, ArmSnapshot]]  # canary key → (canary arm, stable arm)
    queries: int  # queries issued
    failure: str | None = None  # every query failed: Prometheus is down, and why
    errors: list[str] = field(default_factory=list)  # queries that failed while others worked
    # canary key → why its totals cannot be real: that canary holds this tick, and keeps its old baseline
    implausible: dict[str, str] = field(default_factory=dict)


class CounterReader:
    def __init__(self, prometheus: PrometheusClient, canaries: Iterable[CanaryConfig] = ()) -> None:
        self.prometheus = prometheus
        self._default_queries: Mapping[str, str | None] = asdict(Queries())
        self._targets: dict[str, tuple[tuple[ArmTarget, ...], Mapping[str, str | None] | None]] = {}
        self._totals: dict[tuple[str, str], _Totals] = {}  # counter totals at the last good read
        self._layouts: dict[tuple[float, ...], tuple[float, ...]] = {}  # each bucket layout once, shared
        self.configure(canaries)

    def configure(self, canaries: Iterable[CanaryConfig]) -> None:
        """The canaries to read from now on. A canary whose series changed (another selector or query)
        starts from a fresh baseline: differencing two different series would invent requests."""
        targets = {c.key: self._arm_targets(c) for c in canaries}
        self._totals = {k: v for k, v in self._totals.items() if targets.get(k[0]) == self._targets.get(k[0])}
        self._targets = targets

    def _arm_targets(self, c: CanaryConfig) -> tuple[tuple[ArmTarget, ...], Mapping[str, str | None] | None]:
        own = asdict(c.queries)
        queries = None if own == self._default_queries else own
        arms = tuple(ArmTarget(key=c.key, arm=arm, selector=a.selector, namespace=c.namespace,
                               deployment=a.deployment, queries=queries)
                     for arm, a in zip(ARMS, (c.canary, c.stable), strict=True))
        return arms, queries  # the queries too: ArmTarget's equality leaves them out

    def keep(self, keys: Collection[str]) -> None:
        """Forget the totals of every canary not in `keys`: a canary that stops progressing forgets its
        baseline, and its next rollout starts from a fresh read."""
        self._totals = {k: v for k, v in self._totals.items() if k[0] in keys}

    async def read(self, keys: Sequence[str], *, gauge_window: float) -> Reading:
        """The increments since the last read of each of `keys`, with one query per metric for all."""
        targets = [t for k in keys if k in self._targets for t in self._targets[k][0]]
        result = await fetch_increments(self.prometheus, targets, self._default_queries, None,
                                        gauge_window=gauge_window)
        if result.all_failed:
            return Reading({}, result.queries, failure=f"Prometheus unreachable: {result.errors[-1]}")
        implausible: dict[str, str] = {}
        increments: dict[str, tuple[ArmSnapshot, ArmSnapshot]] = {}

        def advance(chunk: Sequence[str]) -> None:
            for k in chunk:
                why = _implausible(k, result)
                if why is not None:
                    implausible[k] = why
                else:
                    increments[k] = (self._advance(k, "canary", result), self._advance(k, "stable", result))

        await self.prometheus.in_turns(keys, TURN_KEYS, advance)  # the totals made increments, a few a turn
        return Reading(increments, result.queries, errors=[str(e) for e in result.errors], implausible=implausible)

    async def prime(self, keys: Sequence[str], *, gauge_window: float) -> None:
        """Read the totals of `keys` now (a rollout's analysis starts): their next read's increments cover
        the time since. After a failed read the next read sets the baseline: never an older rollout's
        totals (keep() forgets those only once a round)."""
        for k in keys:
            for arm in ARMS:
                self._totals.pop((k, arm), None)
        targets = [t for k in keys if k in self._targets for t in self._targets[k][0]]
        result = await fetch_increments(self.prometheus, targets, self._default_queries, None,
                                        gauge_window=gauge_window)
        if result.all_failed:
            return
        for k in keys:
            if k in self._targets and _implausible(k, result) is None:
                for arm in ARMS:
                    self._totals.pop((k, arm), None)  # a fresh baseline, not an increment since an older one
                    self._advance(k, arm, result)

    async def history(self, key: str, *, interval: float, end: float) -> list[ArmSnapshot]:
        """Stable's requests and errors per `interval` before `end` (sources/history.py); raises SourceError."""
        if key not in self._targets:
            return []
        stable = self._targets[key][0][ARMS.index("stable")]
        return await fetch_history(self.prometheus, stable, self._default_queries, interval=interval, end=end)

    def _advance(self, key: str, arm: str, result: FetchResult) -> ArmSnapshot:
        cur = self._shared_bounds(result.increments.get((key, arm)) or ArmSnapshot())
        prev = self._totals.get((key, arm))
        inc, total = advance(None if prev is None else _unpack(prev), cur)
        self._totals[(key, arm)] = _pack(total, self._layouts)
        return inc

    def _shared_bounds(self, arm: ArmSnapshot) -> ArmSnapshot:
        """`arm` with its bucket bounds the layout's shared floats: the increments and the rollouts' sums
        made from them then hold no bounds of their own."""
        if arm.buckets is None:
            return arm
        les = tuple(le for le, _ in arm.buckets)
        shared = self._layouts.setdefault(les, les)
        return replace(arm, buckets=tuple(zip(shared, (c for _, c in arm.buckets), strict=True)))


def _pack(a: ArmSnapshot, layouts: dict[tuple[float, ...], tuple[float, ...]]) -> _Totals:
    """The counters `advance` compares (not the gauges: each read brings its own), the bounds shared."""
    if a.buckets is None:
        return a.requests, a.errors, a.successes, None, None
    les = tuple(le for le, _ in a.buckets)
    return a.requests, a.errors, a.successes, layouts.setdefault(les, les), array("d", (c for _, c in a.buckets))


def _unpack(t: _Totals) -> ArmSnapshot:
    requests, errors, successes, les, counts = t
    buckets = None if les is None or counts is None else tuple(zip(les, counts, strict=True))
    return ArmSnapshot(requests=requests, errors=errors, successes=successes, buckets=buckets)


def _implausible(key: str, result: FetchResult) -> str | None:
    for arm in ARMS:
        why = implausible(result.increments.get((key, arm)) or ArmSnapshot())
        if why is not None:
            return f"Prometheus returned impossible data for the {arm} arm: {why}"
    return None
