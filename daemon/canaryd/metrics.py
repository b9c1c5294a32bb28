"""canaryd_* decision metrics on a registry of our own (names are a contract: DESIGN.md).

Choices, so that dashboards and alerts can rely on them:
- Per-canary series carry `namespace` and `canary`. Their counters are created at 0 for every
  label value of their closed set the first time a canary is seen, so `rate()` and
  `increase()` work from the first event. `forget(ns, name)` removes every series of a canary.
- One-hot gauges: `canaryd_canary_phase{phase}` and `canaryd_metric_verdict{metric,verdict}`
  hold 1 for the current value and 0 for the others.
- A p-value or ratio of None removes that sample instead of exporting NaN; a metric that drops
  out of a canary's decision loses its verdict, p-value and ratio series.
- `canaryd_prometheus_errors_total` has a `kind` label from a closed set (see
  `PROMETHEUS_ERROR_KINDS`, unknown kinds count as "other"); all kinds start at 0, so
  `sum(canaryd_prometheus_errors_total)` is the plain total the contract names.
- `render` drops the `*_created` samples prometheus_client adds to counters and histograms.
  promtool accepts them, but in the text format they become one extra gauge series per counter
  series, doubling the per-canary series count for nothing Prometheus 2.x uses. Filtering at
  render time avoids `disable_created_metrics()`, which is process-global.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric

from canaryd import __version__

__all__ = [
    "DECISIONS",
    "PHASES",
    "PROMETHEUS_ERROR_KINDS",
    "ROLLBACK_TRIGGERS",
    "ROUTER_OUTCOMES",
    "VERDICTS",
    "MetricObservation",
    "Metrics",
    "render",
]

PHASES: tuple[str, ...] = ("idle", "progressing", "paused", "promoting", "succeeded", "rolled_back")
DECISIONS: tuple[str, ...] = ("advance", "hold", "rollback")
ROLLBACK_TRIGGERS: tuple[str, ...] = ("analysis", "alert", "manual", "timeout")
VERDICTS: tuple[str, ...] = ("pass", "fail", "inconclusive", "warn", "skipped")
ROUTER_OUTCOMES: tuple[str, ...] = ("ok", "conflict_retry", "error")
PROMETHEUS_ERROR_KINDS: tuple[str, ...] = (
    "timeout",  # the request timed out
    "connection",  # could not connect / connection reset
    "http",  # non-2xx answer without Prometheus' error JSON
    "api",  # {"status":"error","errorType":...}
    "bad_response",  # unparseable or unexpected JSON
    "other",
)
ANALYSIS_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_CANARY = ("namespace", "canary")


class MetricObservation(NamedTuple):
    """One judged metric of a decision, as the controller reports it."""

    metric: str
    verdict: str
    p_value: float | None = None
    ratio: float | None = None


class Metrics:
    """All canaryd_* metrics, registered on `registry` (never the global one)."""

    def __init__(self, registry: CollectorRegistry, *, version: str = __version__) -> None:
        self.registry = registry
        r = registry
        self.weight = Gauge("canaryd_canary_weight", "Canary traffic share in percent (0-100).", _CANARY, registry=r)
        self.phase = Gauge(
            "canaryd_canary_phase", "1 for the canary's current rollout phase, 0 for the others.",
            (*_CANARY, "phase"), registry=r,
        )
        self.decisions = Counter(
            "canaryd_decisions_total", "Analysis decisions made, by decision.", (*_CANARY, "decision"), registry=r
        )
        self.rollbacks = Counter(
            "canaryd_rollbacks_total", "Rollbacks performed, by trigger.", (*_CANARY, "trigger"), registry=r
        )
        self.promotions = Counter("canaryd_promotions_total", "Promotions performed.", _CANARY, registry=r)
        self.metric_verdict = Gauge(
            "canaryd_metric_verdict", "1 for the current verdict of each judged metric, 0 for the others.",
            (*_CANARY, "metric", "verdict"), registry=r,
        )
        self.metric_p_value = Gauge(
            "canaryd_metric_p_value", "p-value of the latest test of each judged metric.",
            (*_CANARY, "metric"), registry=r,
        )
        self.metric_ratio = Gauge(
            "canaryd_metric_ratio", "Canary/stable ratio of each judged metric at the latest decision.",
            (*_CANARY, "metric"), registry=r,
        )
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
        self.router_updates = Counter(
            "canaryd_router_updates_total", "Traffic route writes, by outcome.", (*_CANARY, "outcome"), registry=r
        )
        self.is_leader = Gauge("canaryd_is_leader", "1 if this replica is the leader and acts.", registry=r)
        self.build_info = Gauge("canaryd_build_info", "Always 1; the version label names the build.", ("version",),
                                registry=r)

        self.build_info.labels(version).set(1)
        for kind in PROMETHEUS_ERROR_KINDS:
            self.prometheus_errors.labels(kind)
        # Per-canary bookkeeping (instance state): which canaries exist, which metrics each has.
        self._canaries: set[tuple[str, str]] = set()
        self._judged: dict[tuple[str, str], set[str]] = {}

    # --- per canary ---------------------------------------------------------------------

    def _ensure(self, ns: str, name: str) -> None:
        if (ns, name) in self._canaries:
            return
        self._canaries.add((ns, name))
        for d in DECISIONS:
            self.decisions.labels(ns, name, d)
        for t in ROLLBACK_TRIGGERS:
            self.rollbacks.labels(ns, name, t)
        for o in ROUTER_OUTCOMES:
            self.router_updates.labels(ns, name, o)
        self.promotions.labels(ns, name)

    def set_phase(self, ns: str, name: str, phase: str) -> None:
        _check(phase, PHASES, "phase")
        self._ensure(ns, name)
        for p in PHASES:
            self.phase.labels(ns, name, p).set(1 if p == phase else 0)

    def set_weight(self, ns: str, name: str, weight: float) -> None:
        self._ensure(ns, name)
        self.weight.labels(ns, name).set(weight)

    def observe_decision(
        self,
        ns: str,
        name: str,
        decision: str,
        metrics: Iterable[MetricObservation | tuple[str, str, float | None, float | None]] = (),
    ) -> None:
        """Count a decision and export each judged metric's verdict, p-value and ratio."""
        _check(decision, DECISIONS, "decision")
        self._ensure(ns, name)
        self.decisions.labels(ns, name, decision).inc()
        current: set[str] = set()
        for metric, verdict, p_value, ratio in metrics:
            _check(verdict, VERDICTS, "verdict")
            current.add(metric)
            for v in VERDICTS:
                self.metric_verdict.labels(ns, name, metric, v).set(1 if v == verdict else 0)
            _set_or_remove(self.metric_p_value, (ns, name, metric), p_value)
            _set_or_remove(self.metric_ratio, (ns, name, metric), ratio)
        for gone in self._judged.get((ns, name), set()) - current:
            self._remove_metric(ns, name, gone)
        self._judged[(ns, name)] = current

    def rollback(self, ns: str, name: str, trigger: str) -> None:
        _check(trigger, ROLLBACK_TRIGGERS, "trigger")
        self._ensure(ns, name)
        self.rollbacks.labels(ns, name, trigger).inc()

    def promotion(self, ns: str, name: str) -> None:
        self._ensure(ns, name)
        self.promotions.labels(ns, name).inc()

    def router_update(self, ns: str, name: str, outcome: str) -> None:
        _check(outcome, ROUTER_OUTCOMES, "outcome")
        self._ensure(ns, name)
        self.router_updates.labels(ns, name, outcome).inc()

    def forget(self, ns: str, name: str) -> None:
        """Remove every series of a canary that no longer exists (deleted or dropped from config)."""
        labels = {"namespace": ns, "canary": name}
        for m in (self.weight, self.phase, self.decisions, self.rollbacks, self.promotions,
                  self.metric_verdict, self.metric_p_value, self.metric_ratio, self.router_updates):
            m.remove_by_labels(labels)
        self._canaries.discard((ns, name))
        self._judged.pop((ns, name), None)

    def _remove_metric(self, ns: str, name: str, metric: str) -> None:
        labels = {"namespace": ns, "canary": name, "metric": metric}
        for m in (self.metric_verdict, self.metric_p_value, self.metric_ratio):
            m.remove_by_labels(labels)

    # --- daemon-wide --------------------------------------------------------------------

    def alert_received(self, alertname: str, status: str, outcome: str) -> None:
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


def _check(value: str, allowed: tuple[str, ...], what: str) -> None:
    # A typo in a label value would silently create a new series nobody queries; fail loudly.
    if value not in allowed:
        raise ValueError(f"{what}: {value!r} is not one of {', '.join(allowed)}")


def _set_or_remove(gauge: Gauge, labels: tuple[str, str, str], value: float | None) -> None:
    if value is None or value != value:  # None or NaN: no sample rather than NaN
        gauge.remove(*labels)
    else:
        gauge.labels(*labels).set(value)


# --- exposition -------------------------------------------------------------------------

_CREATED_TYPES = frozenset({"counter", "histogram", "summary", "gaugehistogram"})


class _WithoutCreated:
    """A read-only view of a registry that leaves out the `*_created` samples."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            if family.type not in _CREATED_TYPES:
                yield family
                continue
            created = family.name + "_created"
            copy = Metric(family.name, family.documentation, family.type, family.unit)
            copy.samples = [s for s in family.samples if s.name != created]
            yield copy


def render(registry: CollectorRegistry, accept: str | None = None) -> tuple[bytes, str]:
    """Body and Content-Type for GET /metrics; `accept` (the request's Accept header) may ask for
    OpenMetrics. Default: Prometheus text format 0.0.4."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(_WithoutCreated(registry)), content_type  # type: ignore[arg-type]
