"""Async client of Prometheus' HTTP API, and the batched per-tick fetch of every canary's counters.

`PrometheusClient` wraps an injected `aiohttp.ClientSession`: timeouts, retries with exponential backoff
on 5xx / timeouts / connection errors (never on 4xx), and one exception type, `SourceError`, that
never lets an aiohttp error through. Non-finite sample values (NaN, ±Inf) are dropped as "no data".

`fetch_increments` reads requests, errors, successes and latency buckets for ALL arms with one query
per metric, as query_plans.py plans them, and splits the answers among the arms again, a few arms a turn
of the daemon's pacer. Counter totals keep NaN and ±Inf for the reader's plausibility check; two series
for one target are a bad_response.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, TypeVar

import aiohttp

from canaryd.analysis.durations import promql_duration
from canaryd.analysis.snapshot import ArmSnapshot
from canaryd.sources import samples
from canaryd.sources.http_config import CredentialsError, HttpOptions, split_userinfo
from canaryd.sources.query_plans import (  # noqa: F401 - ArmTarget and the metric names are this module's API too
    COUNTER_METRICS,
    GAUGE_METRICS,
    SETTINGS,
    ArmTarget,
    FetchPlan,
    Plan,
    Plans,
)

log = logging.getLogger("canaryd.prometheus")

# bad_response: an answer whose content cannot be right (a malformed result, two series where one is summed).
ErrorKind = Literal["prometheus", "connection", "timeout", "http", "credentials", "bad_response"]
# errors/successes with no series while requests has data mean "none happened", not "no data":
# client libraries create a status series only when the first such response is served.
_ZERO_WHEN_REQUESTS = ("errors", "successes")
SPLIT_TURN = 12  # targets (arms) given their rows of one answer in one turn of the pacer (see _assemble_fetch)
# An answer's series read in one turn of the pacer: a part's latency buckets (42 canaries: 1260 series) were
# one turn of ~5-9 ms after the decoding; 300 series are ~1-2 ms.
ROWS_TURN = 300


T = TypeVar("T")


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
        # Each answer is decoded as a turn of the daemon's Pacer (the controller sets it): a tick's answers
        # arrive together, and decoded back to back they would hold the loop for tens of ms.
        self.turn = turn if turn is not None else contextlib.nullcontext
        self.plans = Plans()  # fetch_increments' queries, by what they were planned for

    async def query(self, expr: str, at: float | None = None, *, finite: bool = True) -> list[Series]:
        """Instant query. A vector or scalar result becomes Series; an empty result is []. With `finite`
        False, NaN and ±Inf values are kept (a counter total cannot be one: the caller says so)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        answer = await self._call("query", params, expr)
        out: list[Series] = []

        def read(rows: Any) -> None:
            try:
                series = samples.vector_rows(rows)
            except (KeyError, TypeError, ValueError, IndexError, OverflowError) as e:
                raise self._bad_shape(e, expr) from e
            out.extend(Series(*r) for r in series if not finite or math.isfinite(r[1]))

        async with self.turn():
            data = self._decode(answer, expr)
            try:
                kind, result = data["resultType"], data["result"]
                if kind == "scalar":
                    result = [{"metric": {}, "value": result}]  # read as a one-row vector
                elif kind != "vector":
                    raise ValueError(f"resultType {kind!r} where an instant vector or scalar was expected")
            except (KeyError, TypeError, ValueError) as e:
                raise self._bad_shape(e, expr) from e
            if type(result) is not list:  # read whole in this turn: vector_rows says what it is
                read(result)
                result = []
        await self.in_turns(result, ROWS_TURN, read)
        return out

    async def in_turns(self, items: Sequence[T], size: int, step: Callable[[Sequence[T]], None]) -> None:
        """`step` of `items`, `size` of them at a time, each a turn of the pacer (see `turn`): long work on the
        loop (an answer's rows, its split among canaries, the totals made increments) in short steps."""
        for i in range(0, len(items), size):
            async with self.turn():
                step(items[i:i + size])

    def _bad_shape(self, e: Exception, expr: str) -> SourceError:
        return self._fail(SourceError("bad_response", f"unexpected response shape: {e}", query=expr), 1)

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
class FetchResult:
    increments: dict[tuple[str, str], ArmSnapshot]  # (key, arm) → this window's increments
    errors: list[SourceError]
    queries: int  # queries issued this fetch

    @property
    def all_failed(self) -> bool:
        """Every query failed: treat Prometheus as down."""
        return self.queries > 0 and len(self.errors) >= self.queries


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
    result = await _assemble_fetch(client, targets, fetch, answers)
    await asyncio.sleep(0)  # and what the caller does with them runs at the next pass of the loop
    for error in result.errors[len(answers.errors):]:  # found while splitting: logged and counted as the others
        client._fail(error, 1)
    return result


@dataclass(frozen=True)
class _FetchAnswers:
    """What `execute_fetch` got: one entry per planned query, None where it failed."""

    counters: list[list[Series] | None]
    gauges: list[list[Series] | None]
    errors: list[SourceError]


async def _execute_fetch(client: PrometheusClient, fetch: FetchPlan, *,
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


async def _assemble_fetch(client: PrometheusClient, targets: Sequence[ArmTarget], fetch: FetchPlan,
                          answers: _FetchAnswers) -> FetchResult:
    """Split the answers among targets and zero-fill, SPLIT_TURN targets' groups a turn of the pacer (a
    part's latency buckets alone are ~1-3 ms of parsing)."""
    fields: dict[tuple[str, str], dict[str, Any]] = {(t.key, t.arm): {} for t in targets}
    answered: dict[tuple[str, str], set[str]] = defaultdict(set)  # metrics whose query succeeded
    malformed: list[SourceError] = []
    for plan, result in zip(fetch.counters, answers.counters, strict=True):
        if result is None:
            continue
        rows: dict[tuple[str, ...], list[Series]] = defaultdict(list)
        for s in result:
            rows[tuple(s.labels.get(name, "") for name in plan.by)].append(s)
        await client.in_turns(list(plan.targets.items()), SPLIT_TURN, functools.partial(
            _split_counter, plan, rows, fields=fields, answered=answered, malformed=malformed))
    for gauge, result in zip(fetch.gauges, answers.gauges, strict=True):
        if result:
            # A percentage per arm is expected; if the template yields several series, be conservative.
            fields[(gauge.target.key, gauge.target.arm)][gauge.metric] = max(s.value for s in result)
    async with client.turn():
        increments = {key: ArmSnapshot(**_zero_fill(values, answered[key])) for key, values in fields.items()}
    return FetchResult(increments=increments, errors=[*answers.errors, *malformed], queries=fetch.queries)


def _split_counter(plan: Plan, rows: Mapping[tuple[str, ...], list[Series]],
                   groups: Sequence[tuple[tuple[str, ...], Sequence[ArmTarget]]],
                   fields: dict[tuple[str, str], dict[str, Any]], answered: dict[tuple[str, str], set[str]],
                   malformed: list[SourceError]) -> None:
    """Give each target of `groups` (of `plan`) its rows, recording that the metric was answered. Targets
    with duplicate series stay unanswered (the reader keeps their baseline), and the first of their errors
    joins `malformed`."""
    error = None
    for values, group in groups:
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
    if error is not None:
        malformed.append(error)


def _duplicates(plan: Plan, values: tuple[str, ...], group: Sequence[ArmTarget], got: list[Series],
                ) -> SourceError | None:
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
