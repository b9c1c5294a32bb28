"""The queries of a batched fetch, planned once per set of targets: each arm's template rendered for its
selector, arms with plain equality selectors on the same labels merged into one `label=~"v1|v2|..."`
query per metric (summed by those labels, split again by them), anything else a query of its own;
CPU and memory are whole expressions, one per arm. `Plans` keeps a tick's parts' plans."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from canaryd.analysis.durations import promql_duration
from canaryd.config.queries import LATENCY_UNITS
from canaryd.sources.promql import equality_matchers, regex_any, render_template, sum_by, template_of

COUNTER_METRICS = ("requests", "errors", "successes", "latency_buckets")
GAUGE_METRICS = ("cpu", "memory")
SETTINGS = ("latency_unit",)  # keys of the queries that are not queries


@dataclass(frozen=True)
class ArmTarget:
    key: str  # "orion/auth-service"
    arm: str  # "canary" | "stable"
    selector: str  # label matchers without braces: job="auth-service-canary"
    namespace: str
    deployment: str
    # Per-target templates overriding the shared ones, for a canary with its own queries.
    queries: Mapping[str, str | None] | None = field(default=None, compare=False)


_SENTINEL = "\x00selector\x00"


@dataclass
class Plan:
    """One query to issue and how to split its answer among targets."""

    metric: str
    expr: str
    by: tuple[str, ...]  # split labels; () means the single result belongs to all `targets`
    targets: Mapping[tuple[str, ...], Sequence[ArmTarget]]  # split-label values → targets
    scale: float = 1.0  # latency buckets: le × scale = seconds


def _plan_counters(targets: Sequence[ArmTarget], queries: Mapping[str, str | None],
                   window: float | None) -> list[Plan]:
    win = None if window is None else promql_duration(window)
    groups: dict[tuple[str, str, tuple[str, ...], float], Plan] = {}
    plans: list[Plan] = []
    matchers_of, values_of = _parsed_selectors(targets)
    for metric in COUNTER_METRICS:
        le = ("le",) if metric == "latency_buckets" else ()
        for t in targets:
            template = template_of(metric, t, queries)
            if template is None:
                continue
            shape = render_template(template, metric, t, selector=_SENTINEL)
            matchers = matchers_of[t.selector]
            scale = _le_scale(metric, t, queries)
            if matchers is None or _SENTINEL not in shape:
                expr = sum_by(shape.replace(_SENTINEL, t.selector), le, win)
                plans.append(Plan(metric, expr, (), {(): [t]}, scale))
                continue
            labels = tuple(name for name, _ in matchers)
            plan = groups.get((metric, shape, labels, scale))
            if plan is None:
                plan = groups[(metric, shape, labels, scale)] = Plan(metric, shape, labels, defaultdict(list), scale)
                plans.append(plan)
            plan.targets[values_of[t.selector]].append(t)
    alike: dict[tuple[object, ...], Mapping[tuple[str, ...], Sequence[ArmTarget]]] = {}
    for (_, shape, labels, _), plan in groups.items():
        plan.targets = _shared_split(plan.targets, alike)
        values = list(plan.targets)
        merged = ",".join(f"{name}=~{regex_any([v[i] for v in values])}" for i, name in enumerate(labels))
        le = ("le",) if plan.metric == "latency_buckets" else ()
        plan.expr = sum_by(shape.replace(_SENTINEL, merged), labels + le, win)
    return plans


def _shared_split(targets: Mapping[tuple[str, ...], Sequence[ArmTarget]],
                  alike: dict[tuple[object, ...], Mapping[tuple[str, ...], Sequence[ArmTarget]]],
                  ) -> Mapping[tuple[str, ...], Sequence[ArmTarget]]:
    """The metrics' plans of a part mostly split among the same targets: one map of tuples for them all
    (the cached plans of a fleet's parts hold every canary's: ~0.8 kB a canary less than a map each)."""
    split = {values: tuple(group) for values, group in targets.items()}
    return alike.setdefault(tuple((v, *map(id, g)) for v, g in split.items()), split)


def _parsed_selectors(targets: Sequence[ArmTarget],
                      ) -> tuple[dict[str, tuple[tuple[str, str], ...] | None], dict[str, tuple[str, ...]]]:
    """Each selector's equality matchers, and their values as one tuple (the split key), parsed once for all
    the metrics' plans: the cached plans of a fleet's parts hold every canary's (~0.7 kB a canary less than a
    tuple and strings a metric)."""
    matchers_of = {t.selector: equality_matchers(t.selector) for t in targets}
    return matchers_of, {s: tuple(v for _, v in m) for s, m in matchers_of.items() if m is not None}


def _le_scale(metric: str, target: ArmTarget, queries: Mapping[str, str | None]) -> float:
    """The factor from the latency buckets' `le` to seconds (Istio and Linkerd count milliseconds)."""
    if metric != "latency_buckets":
        return 1.0
    return LATENCY_UNITS.get(template_of("latency_unit", target, queries) or "seconds", 1.0)


@dataclass(frozen=True)
class Gauge:
    """One per-arm gauge query (cpu, memory): a whole expression, never merged."""

    metric: str
    target: ArmTarget
    expr: str


@dataclass(frozen=True)
class FetchPlan:
    """Every query of one fetch: merged counter queries first, then per-arm gauges."""

    counters: list[Plan]
    gauges: list[Gauge]

    @property
    def queries(self) -> int:
        return len(self.counters) + len(self.gauges)


class Plans:
    """`plan_fetch`'s plans kept by their arguments: a tick's parts are the same canaries every interval,
    and planning a part of 25 (rendering and merging 200 selectors) took ~2 ms of the loop. A read of
    one canary (its analysis starts) is planned afresh: it is rarely read alone again."""

    SIZE = 256  # plans kept at most (parts of many thousand canaries); then they are planned anew

    def __init__(self) -> None:
        self._plans: dict[tuple[Any, ...], FetchPlan] = {}

    def get(self, targets: Sequence[ArmTarget], queries: Mapping[str, str | None], window: float | None,
            gauge_window: float) -> FetchPlan:
        if len(targets) <= 2:
            return plan_fetch(targets, queries, window, gauge_window=gauge_window)
        key = (tuple((t, None if t.queries is None else tuple(t.queries.items())) for t in targets),
               tuple(queries.items()), window, gauge_window)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= self.SIZE:
                self._plans.clear()
            plan = self._plans[key] = plan_fetch(targets, queries, window, gauge_window=gauge_window)
        return plan


def plan_fetch(targets: Sequence[ArmTarget], queries: Mapping[str, str | None], window: float | None,
               *, gauge_window: float = 60.0) -> FetchPlan:
    """The queries for `fetch_increments` (pure). Raises ValueError for an unknown metric or bad template."""
    unknown = sorted(set(queries) - set(COUNTER_METRICS) - set(GAUGE_METRICS) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; allowed: {', '.join(COUNTER_METRICS + GAUGE_METRICS)}")
    plans = _plan_counters(targets, queries, window)
    gauges: list[Gauge] = []
    for metric in GAUGE_METRICS:
        for t in targets:
            template = template_of(metric, t, queries)
            if template is not None:
                win = promql_duration(gauge_window if window is None else window)
                expr = render_template(template, metric, t, selector=t.selector, window=win)
                gauges.append(Gauge(metric, t, expr))
    return FetchPlan(plans, gauges)
