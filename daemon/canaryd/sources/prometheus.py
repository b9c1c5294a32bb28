"""Async client of Prometheus' HTTP API, and the batched per-tick fetch of every canary's counters.

`PrometheusClient` wraps an injected `aiohttp.ClientSession`: timeouts, retries with exponential backoff
on 5xx / timeouts / connection errors (never on 4xx), and one exception type, `SourceError`, that
never lets an aiohttp error through. Non-finite sample values (NaN, ±Inf) are dropped as "no data".

`fetch_increments` reads requests, errors, successes and latency buckets for ALL arms with one query
per metric: arms whose selectors are plain equality matchers on the same labels (the default,
`job="..."`) are merged into `label=~"v1|v2|..."`, summed `by` those labels and split again. Any other
selector gets a query of its own. CPU and memory are whole expressions, queried per arm. Counter totals
keep NaN and ±Inf for the reader's plausibility check; two series for one target are a bad_response.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import aiohttp

from canaryd.analysis.durations import promql_duration
from canaryd.analysis.snapshot import ArmSnapshot
from canaryd.config.queries import LATENCY_UNITS
from canaryd.sources import samples
from canaryd.sources.http_config import CredentialsError, HttpOptions, split_userinfo
from canaryd.sources.promql import equality_matchers, regex_any, render_template, sum_by, template_of

log = logging.getLogger("canaryd.prometheus")

# bad_response: an answer whose content cannot be right (a malformed result, two series where one is summed).
ErrorKind = Literal["prometheus", "connection", "timeout", "http", "credentials", "bad_response"]
COUNTER_METRICS = ("requests", "errors", "successes", "latency_buckets")
GAUGE_METRICS = ("cpu", "memory")
SETTINGS = ("latency_unit",)  # keys of the queries that are not queries
# errors/successes with no series while requests has data mean "none happened", not "no data":
# client libraries create a status series only when the first such response is served.
_ZERO_WHEN_REQUESTS = ("errors", "successes")


class SourceError(Exception):
    """A query that could not be answered. `kind` says by whom: Prometheus itself (with its errorType),
    or the transport (connection, timeout, http status)."""

    def __init__(self, kind: ErrorKind, message: str, *, error_type: str | None = None, status: int | None = None,
                 query: str | None = None) -> None:
        self.kind = kind
        self.message = message
        self.error_type = error_type
        self.status = status
        self.query = query
        detail = f" ({error_type})" if error_type else ""
        super().__init__(f"Prometheus {kind} error{detail}: {message}")


class Series(NamedTuple):  # a tuple: thousands are built per tick, a frozen dataclass is ~4x slower to make
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class RangeSeries:
    labels: Mapping[str, str]
    points: tuple[tuple[float, float], ...]  # (unix time, value), non-finite values dropped


class _Answer(NamedTuple):
    status: int
    body: bytes
    encoding: str  # the body's, as aiohttp resolves it (charset, else UTF-8 for JSON)
    attempts: int


class PrometheusClient:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, *, timeout: float = 10, retries: int = 3,
                 backoff: float = 0.2, on_error: Callable[[SourceError], None] | None = None,
                 http: HttpOptions | None = None,
                 turn: Callable[[], AbstractAsyncContextManager[None]] | None = None) -> None:
        self._session = session
        # Credentials in the URL move to basic auth, so that the URL can be logged.
        self.base_url, url_auth = split_userinfo(base_url.rstrip("/"))
        self._http = http if http is not None else HttpOptions()
        if url_auth is not None and self._http.url_auth is None:
            self._http.url_auth = url_auth
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._on_error = on_error
        # Each answer is decoded as a turn of the daemon's Pacer (wiring sets it): a tick's answers arrive
        # together, and decoded back to back they would hold the loop for tens of ms.
        self.turn = turn if turn is not None else contextlib.nullcontext
        self.plans = _Plans()  # fetch_increments' queries, by what they were planned for

    async def query(self, expr: str, at: float | None = None, *, finite: bool = True) -> list[Series]:
        """Instant query. A vector or scalar result becomes Series; an empty result is []. With `finite`
        False, NaN and ±Inf values are kept (a counter total cannot be one: the caller says so)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        answer = await self._call("query", params, expr)
        async with self.turn():
            data = self._decode(answer, expr)
            try:
                kind, result = data["resultType"], data["result"]
                if kind == "scalar":
                    rows = [(samples.labels({}), samples.sample(result)[1])]
                elif kind == "vector":
                    rows = samples.vector_rows(result)
                else:
                    raise ValueError(f"resultType {kind!r} where an instant vector or scalar was expected")
            except (KeyError, TypeError, ValueError, IndexError, OverflowError) as e:
                raise self._fail(SourceError("bad_response", f"unexpected response shape: {e}", query=expr), 1) from e
            return [Series(*r) for r in rows if not finite or math.isfinite(r[1])]

    async def query_range(self, expr: str, start: float, end: float, step: float) -> list[RangeSeries]:
        """Range query; series left with no finite point are dropped."""
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": promql_duration(step)}
        answer = await self._call("query_range", params, expr)
        async with self.turn():  # as an instant query's answer: a turn of the pacer
            return self._range_series(self._decode(answer, expr), expr)

    def _range_series(self, data: Any, expr: str) -> list[RangeSeries]:
        out = []
        try:
            if data["resultType"] != "matrix":
                raise ValueError(f"resultType {data['resultType']!r} where a matrix was expected")
            for r in data["result"]:
                points = tuple(samples.sample(p) for p in r["values"])
                points = tuple(p for p in points if math.isfinite(p[1]))
                if points:
                    out.append(RangeSeries(samples.labels(r["metric"]), points))
        except (KeyError, TypeError, ValueError, IndexError, OverflowError) as e:
            raise self._fail(SourceError("bad_response", f"unexpected response shape: {e}", query=expr), 1) from e
        return out

    async def _call(self, endpoint: str, params: dict[str, str], expr: str) -> _Answer:
        """The first answer that is not a retryable error (`_decode` reads it, as a turn of the pacer);
        raises the last error after the retries."""
        url = f"{self.base_url}/api/v1/{endpoint}"
        # Ask Prometheus to give up when we do, so an abandoned query does not keep it busy.
        form = {**params, "timeout": promql_duration(self.timeout)}
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            retryable: SourceError
            try:
                headers, tls = self._http.request_headers(), self._http.ssl_context()
            except CredentialsError as e:  # read per request: a rotated secret needs no restart
                raise self._fail(SourceError("credentials", str(e), query=expr), attempt) from None
            try:
                # POST: a batched regex of a thousand selectors is too long for a URL.
                async with self._session.post(
                    url, data=form, timeout=aiohttp.ClientTimeout(total=self.timeout), headers=headers,
                    ssl=tls if tls is not None else True, server_hostname=self._http.server_name,
                    proxy=self._http.proxy, proxy_headers=self._http.proxy_headers,
                ) as resp:
                    status, body = resp.status, await resp.read()
                    encoding = resp.get_encoding()
            except TimeoutError as e:  # before ClientError: aiohttp's timeouts are both
                retryable = SourceError("timeout", f"no answer from {url} within {self.timeout}s", query=expr)
                cause: BaseException | None = e
            except aiohttp.ClientError as e:
                retryable = SourceError("connection", f"{url}: {e or type(e).__name__}", query=expr)
                cause = e
            else:
                if status < 500:
                    return _Answer(status, body, encoding, attempt)  # a 4xx is no retry: _decode raises it
                error, _ = _parse_response(status, body, encoding, expr)
                retryable, cause = error or SourceError("http", f"HTTP {status}", status=status, query=expr), None
            if attempt == attempts:
                raise self._fail(retryable, attempt) from cause
            log.debug(
                "Prometheus query failed, retrying",
                extra={"event": "prometheus_retry", "kind": retryable.kind, "attempt": attempt, "query": expr},
            )
            await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    def _decode(self, answer: _Answer, expr: str) -> Any:
        """The answer's `data`, or the SourceError it carries, raised."""
        error, decoded = _parse_response(answer.status, answer.body, answer.encoding, expr)
        if error is not None:
            raise self._fail(error, answer.attempts)
        return decoded["data"]

    def _fail(self, error: SourceError, attempts: int) -> SourceError:
        redact = self._http.redact
        error = SourceError(error.kind, redact(error.message), error_type=error.error_type, status=error.status,
                            query=None if error.query is None else redact(error.query))
        log.warning(
            "%s",
            error,
            extra={"event": "prometheus_error", "kind": error.kind, "error_type": error.error_type,
                   "status": error.status, "query": error.query, "attempts": attempts,
                   "prometheus_url": self.base_url},
        )
        if self._on_error is not None:
            self._on_error(error)
        return error


def _parse_response(status: int, raw: bytes, encoding: str, expr: str) -> tuple[SourceError | None, Any]:
    """(None, the decoded body) for a successful answer, else (the error it carries, None)."""
    body = samples.loads(raw, encoding)
    text = raw[:800].decode(encoding, errors="replace")  # for the messages (200 characters at most)
    if isinstance(body, dict) and body.get("status") == "error":
        return SourceError(
            "prometheus",
            str(body.get("error", "")),
            error_type=str(body.get("errorType", "")) or None,
            status=status,
            query=expr,
        ), None
    if status in (401, 403):
        return SourceError("http", f"HTTP {status} {'unauthorized' if status == 401 else 'forbidden'}: check "
                           "prometheus.authorization, basic_auth and headers", status=status, query=expr), None
    if status >= 400:
        return SourceError("http", f"HTTP {status}: {text[:200]}", status=status, query=expr), None
    if not (isinstance(body, dict) and body.get("status") == "success" and isinstance(body.get("data"), dict)):
        return SourceError("http", f"not a Prometheus API answer: {text[:200]!r}", status=status, query=expr), None
    return None, body


# --- batched fetch -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmTarget:
    key: str  # "orion/auth-service"
    arm: str  # "canary" | "stable"
    selector: str  # label matchers without braces: job="auth-service-canary"
    namespace: str
    deployment: str
    # Per-target templates overriding the shared ones, for a canary with its own queries.
    queries: Mapping[str, str | None] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class FetchResult:
    increments: dict[tuple[str, str], ArmSnapshot]  # (key, arm) → this window's increments
    errors: list[SourceError]
    queries: int  # queries issued this fetch

    @property
    def all_failed(self) -> bool:
        """Every query failed: treat Prometheus as down."""
        return self.queries > 0 and len(self.errors) >= self.queries


_SENTINEL = "\x00selector\x00"


@dataclass
class _Plan:
    """One query to issue and how to split its answer among targets."""

    metric: str
    expr: str
    by: tuple[str, ...]  # split labels; () means the single result belongs to all `targets`
    targets: Mapping[tuple[str, ...], Sequence[ArmTarget]]  # split-label values → targets
    scale: float = 1.0  # latency buckets: le × scale = seconds


def _plan_counters(targets: Sequence[ArmTarget], queries: Mapping[str, str | None],
                   window: float | None) -> list[_Plan]:
    win = None if window is None else promql_duration(window)
    groups: dict[tuple[str, str, tuple[str, ...], float], _Plan] = {}
    plans: list[_Plan] = []
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
                plans.append(_Plan(metric, expr, (), {(): [t]}, scale))
                continue
            labels = tuple(name for name, _ in matchers)
            plan = groups.get((metric, shape, labels, scale))
            if plan is None:
                plan = groups[(metric, shape, labels, scale)] = _Plan(metric, shape, labels, defaultdict(list), scale)
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






async def fetch_increments(client: PrometheusClient, targets: Sequence[ArmTarget], queries: Mapping[str, str | None],
                           window: float | None, *, gauge_window: float = 60.0, concurrency: int = 16) -> FetchResult:
    """Increments over the last `window` seconds for every target, one query per metric for all of them.

    With `window=None` the counters' current totals (`sum by (...) (counter)`) are returned instead, for
    a caller that differences them between ticks: exact counts, and no window shorter than two scrapes.

    `queries` maps metric → template (see module docstring); metrics absent or None are not queried and
    their fields stay None. A failed query leaves its field None for the targets it covered and is
    recorded in `errors`; the others still count.
    """
    fetch = client.plans.get(targets, queries, window, gauge_window)
    answers = await _execute_fetch(client, fetch, concurrency=concurrency)
    async with client.turn():  # a part's answers split among its canaries: a turn too
        result = _assemble_fetch(targets, fetch, answers)
    await asyncio.sleep(0)  # and what the caller does with them runs at the next pass of the loop
    for error in result.errors[len(answers.errors):]:  # found while splitting: logged and counted as the others
        client._fail(error, 1)
    return result


@dataclass(frozen=True)
class _Gauge:
    """One per-arm gauge query (cpu, memory): a whole expression, never merged."""

    metric: str
    target: ArmTarget
    expr: str


@dataclass(frozen=True)
class _FetchPlan:
    """Every query of one fetch: merged counter queries first, then per-arm gauges."""

    counters: list[_Plan]
    gauges: list[_Gauge]

    @property
    def queries(self) -> int:
        return len(self.counters) + len(self.gauges)


class _Plans:
    """`_plan_fetch`'s plans kept by their arguments: a tick's parts are the same canaries every interval,
    and planning a part of 25 (rendering and merging 200 selectors) took ~2 ms of the loop. A read of
    one canary (its analysis starts) is planned afresh: it is rarely read alone again."""

    SIZE = 256  # plans kept at most (parts of many thousand canaries); then they are planned anew

    def __init__(self) -> None:
        self._plans: dict[tuple[Any, ...], _FetchPlan] = {}

    def get(self, targets: Sequence[ArmTarget], queries: Mapping[str, str | None], window: float | None,
            gauge_window: float) -> _FetchPlan:
        if len(targets) <= 2:
            return _plan_fetch(targets, queries, window, gauge_window=gauge_window)
        key = (tuple((t, None if t.queries is None else tuple(t.queries.items())) for t in targets),
               tuple(queries.items()), window, gauge_window)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= self.SIZE:
                self._plans.clear()
            plan = self._plans[key] = _plan_fetch(targets, queries, window, gauge_window=gauge_window)
        return plan


@dataclass(frozen=True)
class _FetchAnswers:
    """What `execute_fetch` got: one entry per planned query, None where it failed."""

    counters: list[list[Series] | None]
    gauges: list[list[Series] | None]
    errors: list[SourceError]


def _plan_fetch(targets: Sequence[ArmTarget], queries: Mapping[str, str | None], window: float | None,
               *, gauge_window: float = 60.0) -> _FetchPlan:
    """The queries for `fetch_increments` (pure). Raises ValueError for an unknown metric or bad template."""
    unknown = sorted(set(queries) - set(COUNTER_METRICS) - set(GAUGE_METRICS) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; allowed: {', '.join(COUNTER_METRICS + GAUGE_METRICS)}")
    plans = _plan_counters(targets, queries, window)
    gauges: list[_Gauge] = []
    for metric in GAUGE_METRICS:
        for t in targets:
            template = template_of(metric, t, queries)
            if template is not None:
                win = promql_duration(gauge_window if window is None else window)
                expr = render_template(template, metric, t, selector=t.selector, window=win)
                gauges.append(_Gauge(metric, t, expr))
    return _FetchPlan(plans, gauges)


async def _execute_fetch(client: PrometheusClient, fetch: _FetchPlan, *,
                         concurrency: int = 16) -> _FetchAnswers:
    """Issue every planned query, at most `concurrency` at a time; failures are collected, not raised."""
    gate = asyncio.Semaphore(concurrency)
    errors: list[SourceError] = []

    async def run(expr: str, finite: bool = True) -> list[Series] | None:
        async with gate:
            try:
                return await client.query(expr, finite=finite)
            except SourceError as e:
                errors.append(e)
                return None

    # Counter totals keep NaN and ±Inf: the reader's plausibility check holds the canary and says why.
    counters = await asyncio.gather(*(run(p.expr, False) for p in fetch.counters))
    gauges = await asyncio.gather(*(run(g.expr) for g in fetch.gauges))
    return _FetchAnswers(list(counters), list(gauges), errors)


def _assemble_fetch(targets: Sequence[ArmTarget], fetch: _FetchPlan, answers: _FetchAnswers) -> FetchResult:
    """Split the answers among targets and zero-fill (pure)."""
    fields: dict[tuple[str, str], dict[str, Any]] = {(t.key, t.arm): {} for t in targets}
    answered: dict[tuple[str, str], set[str]] = defaultdict(set)  # metrics whose query succeeded
    malformed: list[SourceError] = []
    for plan, result in zip(fetch.counters, answers.counters, strict=True):
        if result is not None and (error := _split_counter(plan, result, fields, answered)) is not None:
            malformed.append(error)
    for gauge, result in zip(fetch.gauges, answers.gauges, strict=True):
        if result:
            # A percentage per arm is expected; if the template yields several series, be conservative.
            fields[(gauge.target.key, gauge.target.arm)][gauge.metric] = max(s.value for s in result)
    increments = {key: ArmSnapshot(**_zero_fill(values, answered[key])) for key, values in fields.items()}
    return FetchResult(increments=increments, errors=[*answers.errors, *malformed], queries=fetch.queries)


def _split_counter(plan: _Plan, result: list[Series], fields: dict[tuple[str, str], dict[str, Any]],
                   answered: dict[tuple[str, str], set[str]]) -> SourceError | None:
    """Give each target of `plan` its rows of `result`, recording that the metric was answered. Targets
    with duplicate series stay unanswered (the reader keeps their baseline), and the error says so."""
    rows: dict[tuple[str, ...], list[Series]] = defaultdict(list)
    for s in result:
        rows[tuple(s.labels.get(name, "") for name in plan.by)].append(s)
    error = None
    for values, group in plan.targets.items():
        got = rows.get(values, [])
        if (twice := _duplicates(plan, values, group, got)) is not None:
            error = error or twice
            continue
        for t in group:
            answered[(t.key, t.arm)].add(plan.metric)
            if not got:
                continue
            if plan.metric == "latency_buckets":
                fields[(t.key, t.arm)]["buckets"] = samples.buckets([(s.labels.get("le", ""), s.value) for s in got],
                                                             plan.scale)
            else:
                fields[(t.key, t.arm)][plan.metric] = got[0].value
    return error


def _duplicates(plan: _Plan, values: tuple[str, ...], group: list[ArmTarget], got: list[Series]) -> SourceError | None:
    """The error of an answer no `sum by` gives (see samples.malformed), or None."""
    if (why := samples.malformed([(s.labels, s.value) for s in got], buckets=plan.metric == "latency_buckets")) is None:
        return None
    where = "".join(f", {n}={v!r}" for n, v in zip(plan.by, values, strict=True))
    return SourceError("bad_response", f"{plan.metric} of {group[0].key} ({group[0].arm}{where}): {why}", query=plan.expr)


def _zero_fill(values: dict[str, Any], answered: set[str]) -> dict[str, Any]:
    if values.get("requests") is not None:
        for metric in _ZERO_WHEN_REQUESTS:
            if metric in answered and values.get(metric) is None:
                values[metric] = 0.0
    return values
