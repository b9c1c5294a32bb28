"""canaryd_* decision metrics on a registry of our own (names are a contract: docs/contracts.md).

Choices, so that dashboards and alerts can rely on them:
- Per-canary series carry `namespace` and `canary`. Their counters are created at 0 for every
  label value of their closed set the first time a canary is seen, so `rate()` and
  `increase()` work from the first event. `forget(ns, name)` removes every series of a canary.
- Detail (config `server.metrics_detail`): "basic", the default, exports what the dashboard and the rules
  need and stays at ≤ 15 series per canary: the weight, the current phase only
  (`canaryd_canary_phase{phase}` = 1), the counters, and `canaryd_metric_verdict{metric,verdict}` = 1
  only for the metrics that fail or warn now (11 counter series + 2 + the failing metrics).
  "full" adds the rest: one-hot phase and verdict gauges (1 for the current value, 0 for the others,
  skipped metrics included) and every judged metric's `canaryd_metric_p_value` and
  `canaryd_metric_ratio`. Both modes export every family's name (HELP and TYPE), the same values
  where both have a series.
- A p-value or ratio of None removes that sample instead of exporting NaN; a metric that drops
  out of a canary's decision loses its verdict, p-value and ratio series.
- `canaryd_prometheus_errors_total` has a `kind` label from a closed set (see
  `PROMETHEUS_ERROR_KINDS`, unknown kinds count as "other"); all kinds start at 0, so
  `sum(canaryd_prometheus_errors_total)` is the plain total the contract names.
- `canaryd_alerts_received_total{alertname,status,outcome}` takes its labels from closed sets
  too, since a webhook payload is anyone's input: `alertname` is a configured alert's name,
  "unknown" when the request was refused before its alerts were read (unauthorized, too large,
  malformed), or "other" (`OTHER_ALERTNAME`) for every name without a rule in `alerts:`
  (outcome `unknown_alertname`); `status` is firing, resolved or unknown; `outcome` one of
  `ALERT_OUTCOMES`, anything else counts as "other".
- `render` drops the `*_created` samples prometheus_client adds to counters and histograms.
  promtool accepts them, but in the text format they become one extra gauge series per counter
  series, doubling the per-canary series count for nothing Prometheus 2.x uses. Filtering at
  render time avoids `disable_created_metrics()`, which is process-global.

Per-canary series are not prometheus_client metric children: one child costs about 0.7 KB and a
canary has ~65 of them (the one-hot verdict gauge alone is metrics x verdicts), which dominated
the daemon's heap at 1000 canaries. Instead each canary is a few floats, a phase string and a
dict of (verdict, p-value, ratio) tuples, and `_CanaryCollector` turns them into metric
families only when the registry is scraped. The exported names, types, labels and values are
the same as with the metric classes (a test holds the scrape to a golden copy). Updates take no
lock because every caller runs on the daemon's event loop. A scrape works on a snapshot and may run
on another thread (server.py encodes off the loop): it only copies the canary dict and reads
attributes that are replaced whole (`judged`) or single array items (a counter), each atomic under
the GIL. A call with a bad label value raises before it changes anything.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric

from canaryd import __version__
from canaryd.alerts import OUTCOMES
from canaryd.analysis.verdicts import Decision, Verdict
from canaryd.exposition import Families, RowFamily, render, without_created
from canaryd.reload_metrics import RELOAD_OUTCOMES, ReloadMetrics
from canaryd.rollout import ROLLBACK_CAUSES, Phase

__all__ = [
    "ALERT_OUTCOMES",
    "ALERT_STATUSES",
    "DECISIONS",
    "DETAILS",
    "OTHER_ALERTNAME",
    "PHASES",
    "PROMETHEUS_ERROR_KINDS",
    "ROLLBACK_TRIGGERS",
    "ROUTER_OUTCOMES",
    "VERDICTS",
    "MetricObservation",
    "Metrics",
    "label_sets",
    "render",
]

# Closed label sets, derived from the enums that produce the values so that they cannot drift.
PHASES: tuple[str, ...] = tuple(p.value for p in Phase)
DECISIONS: tuple[str, ...] = tuple(d.value for d in Decision)
ROLLBACK_TRIGGERS: tuple[str, ...] = tuple(t.value for t in ROLLBACK_CAUSES)
VERDICTS: tuple[str, ...] = tuple(v.value for v in Verdict)
ROUTER_OUTCOMES: tuple[str, ...] = ("ok", "conflict_retry", "error")
PROMETHEUS_ERROR_KINDS: tuple[str, ...] = (
    "timeout",  # the request timed out
    "connection",  # could not connect / connection reset
    "http",  # non-2xx answer without Prometheus' error JSON
    "api",  # {"status":"error","errorType":...}
    "bad_response",  # unparseable or unexpected JSON
    "other",
)
# The webhook's alert outcomes (alerts.OUTCOMES) and the ways a whole request is refused.
ALERT_OUTCOMES: tuple[str, ...] = (*OUTCOMES, "not_leader", "unauthorized", "too_large", "malformed", "other")
ALERT_STATUSES: tuple[str, ...] = ("firing", "resolved", "unknown")
OTHER_ALERTNAME = "other"
DETAILS: tuple[str, ...] = ("basic", "full")  # server.metrics_detail
_EXCEPTIONAL = frozenset({"fail", "warn"})  # the verdicts "basic" detail exports
ANALYSIS_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_CANARY = ("namespace", "canary")


class MetricObservation(NamedTuple):
    """One judged metric of a decision, as the controller reports it."""

    metric: str
    verdict: str
    p_value: float | None = None
    ratio: float | None = None


# --- per-canary state and its collector ---------------------------------------------------


@dataclass(frozen=True)
class _CounterSpec:
    """One per-canary counter family; `label` None means no label beyond namespace and canary."""

    name: str
    help: str
    label: str | None
    values: tuple[str, ...]


_DECISIONS = "canaryd_decisions_total"
_ROLLBACKS = "canaryd_rollbacks_total"
_PROMOTIONS = "canaryd_promotions_total"
_ROUTER_UPDATES = "canaryd_router_updates_total"
_COUNTERS: tuple[_CounterSpec, ...] = (
    _CounterSpec(_DECISIONS, "Analysis decisions made, by decision.", "decision", DECISIONS),
    _CounterSpec(_ROLLBACKS, "Rollbacks performed, by trigger.", "trigger", ROLLBACK_TRIGGERS),
    _CounterSpec(_PROMOTIONS, "Promotions performed.", None, ("",)),
    _CounterSpec(_ROUTER_UPDATES, "Traffic route writes, by outcome.", "outcome", ROUTER_OUTCOMES),
)
# A canary's counters are one array of floats, in the order of _COUNTER_KEYS (~0.2 kB; a dict of them
# was ~0.7 kB a canary); _COUNTER_INDEX says where each (family, label value) is.
_COUNTER_KEYS: tuple[tuple[str, str], ...] = tuple((c.name, v) for c in _COUNTERS for v in c.values)
_COUNTER_INDEX: Mapping[tuple[str, str], int] = MappingProxyType({k: i for i, k in enumerate(_COUNTER_KEYS)})

_WEIGHT_HELP = "Canary traffic share in percent (0-100)."
_PHASE_HELP = "1 for the canary's current rollout phase (full metrics detail: also 0 for the others)."
_VERDICT_HELP = ("1 for the current verdict of each metric that fails or warns (full metrics detail: of each "
                 "judged metric, and 0 for the other verdicts).")
_P_VALUE_HELP = "p-value of the latest test of each judged metric (full metrics detail only)."
_RATIO_HELP = "Canary/stable ratio of each judged metric at the latest decision (full metrics detail only)."

# metric -> (verdict, p-value or None, ratio or None), as of the canary's latest decision.
class _Judged:
    """A canary's last decision per judged metric: (verdict, p-value, ratio), read by items() as a dict's.
    The names and the verdicts are tuples shared by every canary with the same ones (_shared), the numbers
    one array (NaN: none): ~0.3 kB a canary, where a dict of tuples and floats was ~1 kB."""

    __slots__ = ("names", "verdicts", "numbers")

    def __init__(self, judged: Mapping[str, tuple[str, float | None, float | None]]) -> None:
        self.names = _shared(tuple(judged))
        self.verdicts = _shared(tuple(v for v, _, _ in judged.values()))
        self.numbers = array("d", (math.nan if x is None else x for _, p, r in judged.values() for x in (p, r)))

    def items(self) -> Iterator[tuple[str, tuple[str, float | None, float | None]]]:
        n = self.numbers
        for i, (name, verdict) in enumerate(zip(self.names, self.verdicts, strict=True)):
            p, r = n[2 * i], n[2 * i + 1]
            yield name, (verdict, None if p != p else p, None if r != r else r)


@functools.lru_cache(maxsize=1024)
def _shared(names: tuple[str, ...]) -> tuple[str, ...]:
    return names


_NOTHING_JUDGED = _Judged({})  # read-only: every canary's before its first decision


@dataclass(slots=True)
class _Canary:
    """Everything exported for one canary. Mutable on purpose: it is updated on every decision.
    `judged` is replaced, never changed in place, so a scrape never sees half a decision."""

    created: float  # when the counters were created: their `*_created` samples
    counters: array[float]  # the count of each of _COUNTER_KEYS (family name, label value)
    weight: float | None = None
    phase: str | None = None
    judged: _Judged = _NOTHING_JUDGED


_Snapshot = list[tuple[tuple[str, str], _Canary]]


class _CanaryCollector:
    """Builds the per-canary metric families from `canaries` at scrape time, in `detail()`'s detail."""

    def __init__(self, canaries: dict[tuple[str, str], _Canary], detail: Callable[[], str]) -> None:
        self._canaries = canaries
        self._detail = detail
        self.skip = False  # Metrics.render writes the per-canary families itself, in steps

    def describe(self) -> list[Metric]:
        # Names only, so the registry rejects a second Metrics on the same registry as before.
        return list(_families([], full=True))

    def collect(self) -> Iterator[Metric]:
        if self.skip:
            return iter(())
        # A snapshot: a canary added or forgotten meanwhile must not break the iteration.
        return _families(list(self._canaries.items()), full=self._detail() == "full")


def _families(canaries: _Snapshot, *, full: bool) -> Iterator[Metric]:
    # One family at a time, in the order of the metric classes this replaced, so that a scrape
    # holds one family's samples at once rather than all of them.
    for make in _makers(full):
        yield make(canaries)


def _makers(full: bool) -> list[Callable[[_Snapshot], Metric]]:
    """Each per-canary family's maker, in the order of `_families`."""
    return [_weight, functools.partial(_phase, full=full),
            *(functools.partial(_counter, spec) for spec in _COUNTERS[:3]), functools.partial(_verdict, full=full),
            lambda c: _judged_value("canaryd_metric_p_value", _P_VALUE_HELP, 1, c if full else []),
            lambda c: _judged_value("canaryd_metric_ratio", _RATIO_HELP, 2, c if full else []),
            functools.partial(_counter, _COUNTERS[3])]


# Metrics.render works in steps of this many canaries (or exposition.ROWS_PER_STEP rows), ~0.3 ms each,
# and lets the event loop run other tasks about every _SLICE seconds. (A thread would not do: it holds
# the GIL, and on a busy machine the loop's thread then waits up to the interpreter's 5 ms switch
# interval each time.)
_CANARIES_PER_STEP = 16
_SLICE = 0.001


def _text_steps(canaries: _Snapshot, full: bool, out: list[bytes]) -> Iterator[None]:
    """Append the per-canary families' text to `out`, yielding after each step (see _CANARIES_PER_STEP):
    a family at a time, its rows made and written a step of canaries at a time, so that a scrape never
    holds every canary's rows (at 10,000 canaries they were ~20 MB at once)."""
    for make in _makers(full):
        for i in range(0, max(1, len(canaries)), _CANARIES_PER_STEP):
            family = make(canaries[i:i + _CANARIES_PER_STEP])
            out.extend(family.text(header=i == 0))  # type: ignore[attr-defined]
            yield


def _weight(canaries: _Snapshot) -> Metric:
    family = RowFamily("canaryd_canary_weight", _WEIGHT_HELP, "gauge", _CANARY)
    for key, c in canaries:
        if c.weight is not None:
            family.add(key, c.weight)
    return family


def _phase(canaries: _Snapshot, full: bool) -> Metric:
    family = RowFamily("canaryd_canary_phase", _PHASE_HELP, "gauge", (*_CANARY, "phase"))
    for (ns, name), c in canaries:
        current = c.phase
        if current is None:
            continue
        if not full:
            family.add((ns, name, current), 1.0)
            continue
        for p in PHASES:
            family.add((ns, name, p), 1.0 if p == current else 0.0)
    return family


def _verdict(canaries: _Snapshot, full: bool) -> Metric:
    family = RowFamily("canaryd_metric_verdict", _VERDICT_HELP, "gauge", (*_CANARY, "metric", "verdict"))
    for (ns, name), c in canaries:
        for metric, (current, _, _) in c.judged.items():
            if not full:
                if current in _EXCEPTIONAL:
                    family.add((ns, name, metric, current), 1.0)
                continue
            for v in VERDICTS:
                family.add((ns, name, metric, v), 1.0 if v == current else 0.0)
    return family


def _judged_value(family_name: str, help_text: str, index: int, canaries: _Snapshot) -> Metric:
    """p-value (index 1) or ratio (index 2) of each judged metric; None has no sample."""
    family = RowFamily(family_name, help_text, "gauge", (*_CANARY, "metric"))
    for (ns, name), c in canaries:
        for metric, judged in c.judged.items():
            value = judged[index]
            if value is not None:
                family.add((ns, name, metric), value)
    return family


def _counter(spec: _CounterSpec, canaries: _Snapshot) -> Metric:
    name = spec.name.removesuffix("_total")
    family = RowFamily(name, spec.help, "counter", (*_CANARY, spec.label) if spec.label else _CANARY)
    for (ns, canary), c in canaries:
        for v in spec.values:
            family.add((ns, canary, v) if spec.label else (ns, canary), c.counters[_COUNTER_INDEX[(spec.name, v)]], c.created)
    return family


# --- the metrics object -------------------------------------------------------------------


class Metrics:
    """All canaryd_* metrics, registered on `registry` (never the global one)."""

    def __init__(self, registry: CollectorRegistry, *, version: str = __version__, detail: str = "basic") -> None:
        self.registry = registry
        r = registry
        self.detail = detail
        self._canaries: dict[tuple[str, str], _Canary] = {}
        self._collector = _CanaryCollector(self._canaries, lambda: self._detail)
        registry.register(self._collector)
        self.analysis_duration = Histogram(
            "canaryd_analysis_duration_seconds", "Wall time of one analysis tick.",
            buckets=ANALYSIS_BUCKETS, registry=r,
        )
        self.alerts_received = Counter(
            "canaryd_alerts_received_total", "Alertmanager alerts received, by alertname, status and outcome.",
            ("alertname", "status", "outcome"), registry=r,
        )
        self.prometheus_errors = Counter(
            "canaryd_prometheus_errors_total", "Failed Prometheus queries, by kind.", ("kind",), registry=r
        )
        self.is_leader = Gauge("canaryd_is_leader", "1 if this replica is the leader and acts.", registry=r)
        self.config_reload = ReloadMetrics(r)  # .record(applied) after each reload
        self.build_info = Gauge("canaryd_build_info", "Always 1; the version label names the build.", ("version",),
                                registry=r)

        self.build_info.labels(version).set(1)
        for kind in PROMETHEUS_ERROR_KINDS:
            self.prometheus_errors.labels(kind)

    @property
    def detail(self) -> str:
        """"basic" or "full" (DETAILS): which per-canary series a scrape exports; settable at any time."""
        return self._detail

    @detail.setter
    def detail(self, value: str) -> None:
        _check(value, DETAILS, "detail")
        self._detail = value

    async def render(self, accept: str | None = None, *,
                     pause: Callable[[], Awaitable[None]] | None = None) -> tuple[bytes, str]:
        """`render(self.registry, accept)` on the event loop: `stream`'s pieces joined."""
        return b"".join([piece async for piece in self.stream(accept, pause=pause)]), self.content_type(accept)

    @staticmethod
    def content_type(accept: str | None = None) -> str:
        return str(choose_encoder(accept or "")[1])

    async def stream(self, accept: str | None = None, *,
                     pause: Callable[[], Awaitable[None]] | None = None) -> AsyncIterator[bytes]:
        """The body of `render` in pieces, each as soon as it is made, in steps that let other tasks (a
        webhook) run about every _SLICE seconds (`await pause()` then; default one pass of the loop):
        10,000 canaries take a few hundred ms in all. Sent as they come, the body (10 MB at 10,000
        canaries) is never held whole: a scrape's peak memory was ~30 MB more, and the daemon kept ~20 MB."""
        encoder, content_type = choose_encoder(accept or "")
        if content_type.startswith("application/openmetrics-text"):
            yield render(self.registry, accept)[0]  # rare (Prometheus asks for the text format): in one go
            return
        self._collector.skip = True  # synchronous until reset: no other scrape sees it
        try:
            head = encoder(Families([without_created(f) for f in self.registry.collect()]))  # type: ignore[arg-type]
        finally:
            self._collector.skip = False
        yield head
        pieces: list[bytes] = []
        deadline = time.perf_counter() + _SLICE
        for _ in _text_steps(list(self._canaries.items()), self._detail == "full", pieces):
            if time.perf_counter() >= deadline:
                if pieces:
                    yield b"".join(pieces)
                    pieces.clear()
                await (pause() if pause is not None else asyncio.sleep(0))
                deadline = time.perf_counter() + _SLICE
        yield b"".join(pieces)

    # --- per canary ---------------------------------------------------------------------

    def _canary(self, ns: str, name: str) -> _Canary:
        c = self._canaries.get((ns, name))
        if c is None:
            c = self._canaries[(ns, name)] = _Canary(time.time(), array("d", bytes(8 * len(_COUNTER_KEYS))))
        return c

    def set_phase(self, ns: str, name: str, phase: str) -> None:
        _check(phase, PHASES, "phase")
        self._canary(ns, name).phase = phase

    def set_weight(self, ns: str, name: str, weight: float) -> None:
        value = float(weight)  # before creating the canary: a bad value changes nothing
        self._canary(ns, name).weight = value

    def observe_decision(
        self,
        ns: str,
        name: str,
        decision: str,
        metrics: Iterable[MetricObservation | tuple[str, str, float | None, float | None]] = (),
    ) -> None:
        """Count a decision and export each judged metric's verdict, p-value and ratio."""
        _check(decision, DECISIONS, "decision")
        judged: dict[str, tuple[str, float | None, float | None]] = {}
        for metric, verdict, p_value, ratio in metrics:
            _check(verdict, VERDICTS, "verdict")
            judged[metric] = (verdict, _number(p_value), _number(ratio))  # a repeated metric: last wins
        c = self._canary(ns, name)
        c.counters[_COUNTER_INDEX[(_DECISIONS, decision)]] += 1.0
        c.judged = _Judged(judged)  # metrics not in this decision lose their series

    def rollback(self, ns: str, name: str, trigger: str) -> None:
        _check(trigger, ROLLBACK_TRIGGERS, "trigger")
        self._canary(ns, name).counters[_COUNTER_INDEX[(_ROLLBACKS, trigger)]] += 1.0

    def promotion(self, ns: str, name: str) -> None:
        self._canary(ns, name).counters[_COUNTER_INDEX[(_PROMOTIONS, "")]] += 1.0

    def router_update(self, ns: str, name: str, outcome: str) -> None:
        _check(outcome, ROUTER_OUTCOMES, "outcome")
        self._canary(ns, name).counters[_COUNTER_INDEX[(_ROUTER_UPDATES, outcome)]] += 1.0

    def forget(self, ns: str, name: str) -> None:
        """Remove every series of a canary that no longer exists (deleted or dropped from config)."""
        self._canaries.pop((ns, name), None)

    # --- daemon-wide --------------------------------------------------------------------

    def alert_received(self, alertname: str, status: str, outcome: str) -> None:
        """Count one webhook alert. `alertname` must be a configured alert's name or "unknown"; the
        caller maps names without a rule to `OTHER_ALERTNAME` (outcome unknown_alertname does it
        here), so that no payload can add series."""
        if outcome == "unknown_alertname" or not _encodable(alertname):
            alertname = OTHER_ALERTNAME
        status = status if status in ALERT_STATUSES else "unknown"
        outcome = outcome if outcome in ALERT_OUTCOMES else "other"
        self.alerts_received.labels(alertname, status, outcome).inc()

    def prometheus_error(self, kind: str) -> None:
        self.prometheus_errors.labels(kind if kind in PROMETHEUS_ERROR_KINDS else "other").inc()

    def set_leader(self, leader: bool) -> None:
        self.is_leader.set(1 if leader else 0)

    def observe_analysis(self, seconds: float) -> None:
        self.analysis_duration.observe(seconds)

    @contextmanager
    def time_analysis(self) -> Iterator[None]:
        """`with metrics.time_analysis(): ...` observes the block's wall time (also on error)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.analysis_duration.observe(time.perf_counter() - start)


def label_sets() -> dict[str, dict[str, tuple[str, ...]]]:
    """Each metric's closed label sets (metric name → label → values), for the README's generated table
    (scripts/metrics_reference.py). Labels not listed take their values from config or the build."""
    return {
        "canaryd_canary_phase": {"phase": PHASES},
        **{c.name: {c.label: c.values} for c in _COUNTERS if c.label},
        "canaryd_metric_verdict": {"verdict": VERDICTS},
        "canaryd_alerts_received_total": {"status": ALERT_STATUSES, "outcome": ALERT_OUTCOMES},
        "canaryd_prometheus_errors_total": {"kind": PROMETHEUS_ERROR_KINDS},
        "canaryd_config_reloads_total": {"outcome": RELOAD_OUTCOMES},
    }


def _check(value: str, allowed: tuple[str, ...], what: str) -> None:
    # A typo in a label value would silently create a new series nobody queries; fail loudly.
    if value not in allowed:
        raise ValueError(f"{what}: {value!r} is not one of {', '.join(allowed)}")


def _encodable(text: str) -> bool:
    # A lone surrogate in a label value would make every later scrape fail to encode.
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _number(value: float | None) -> float | None:
    # None or NaN: no sample rather than NaN.
    if value is None:
        return None
    f = float(value)
    return None if f != f else f
