"""The Prometheus source: against a local fake Prometheus (aiohttp), then against the real one."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from canaryd.analysis.snapshot import ArmSnapshot
from canaryd.sources.prometheus import (
    ArmTarget,
    PrometheusClient,
    SourceError,
    fetch_increments,
)
from canaryd.sources.promql import equality_matchers
from exporter import Service, Settings
from servers import free_port, wait_until

DEFAULT_QUERIES = {
    "requests": "http_requests_total{{{selector}}}",
    "errors": 'http_requests_total{{{selector},status=~"5.."}}',
    "successes": 'http_requests_total{{{selector},status=~"2.."}}',
    "latency_buckets": "http_request_duration_seconds_bucket{{{selector}}}",
}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def vector(*rows: tuple[dict[str, str], str]) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": m, "value": [1700000000.0, v]} for m, v in rows]},
    }


class FakePrometheus:
    """Answers /api/v1/query with `answer(query) -> (status, json body | text)`; records every request."""

    def __init__(self, answer: Callable[[str], tuple[int, Any]]):
        self.answer = answer
        self.requests: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        form = dict(await request.post())
        self.requests.append({k: str(v) for k, v in form.items()})
        status, body = self.answer(str(form.get("query", "")))
        if isinstance(body, Exception):
            raise body
        if asyncio.iscoroutine(body):
            body = await body
        if isinstance(body, str):
            return web.Response(status=status, text=body)
        return web.json_response(body, status=status)


@pytest.fixture
def fake_prometheus(aiohttp_server: Any) -> Callable[..., Any]:
    async def start(answer: Callable[[str], tuple[int, Any]]) -> tuple[FakePrometheus, str]:
        fake = FakePrometheus(answer)
        app = web.Application()
        app.router.add_post("/api/v1/query", fake.handle)
        app.router.add_post("/api/v1/query_range", fake.handle)
        server = await aiohttp_server(app)
        return fake, str(server.make_url("")).rstrip("/")

    return start


# --- client against a fake ---------------------------------------------------------------------------


async def test_empty_result_is_empty_list(session: aiohttp.ClientSession, fake_prometheus: Any) -> None:
    fake, url = await fake_prometheus(lambda q: (200, vector()))
    client = PrometheusClient(session, url)
    assert await client.query("up", at=1700000000.5) == []
    assert fake.requests[0]["query"] == "up"
    assert fake.requests[0]["time"] == "1700000000.500"
    assert fake.requests[0]["timeout"] == "10s"


async def test_non_finite_values_are_no_data(session: aiohttp.ClientSession, fake_prometheus: Any) -> None:
    body = vector(({"job": "a"}, "NaN"), ({"job": "b"}, "+Inf"), ({"job": "c"}, "-Inf"), ({"job": "d"}, "1.5"))
    _, url = await fake_prometheus(lambda q: (200, body))
    result = await PrometheusClient(session, url).query("x")
    assert [(dict(s.labels), s.value) for s in result] == [({"job": "d"}, 1.5)]


async def test_scalar_result(session: aiohttp.ClientSession, fake_prometheus: Any) -> None:
    body = {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "3"]}}
    _, url = await fake_prometheus(lambda q: (200, body))
    [s] = await PrometheusClient(session, url).query("3")
    assert s.value == 3.0 and dict(s.labels) == {}


async def test_query_range_drops_non_finite_points(session: aiohttp.ClientSession, fake_prometheus: Any) -> None:
    body = {
        "status": "success",
        "data": {
            "resultType": "matrix",
            "result": [
                {"metric": {"job": "a"}, "values": [[10, "1"], [11, "NaN"], [12, "2"]]},
                {"metric": {"job": "b"}, "values": [[10, "NaN"]]},
            ],
        },
    }
    fake, url = await fake_prometheus(lambda q: (200, body))
    [r] = await PrometheusClient(session, url).query_range("x", 10, 12, 1)
    assert dict(r.labels) == {"job": "a"} and r.points == ((10.0, 1.0), (12.0, 2.0))
    assert fake.requests[0]["step"] == "1s"


async def test_prometheus_error_json_is_logged_counted_and_not_retried(
    session: aiohttp.ClientSession, fake_prometheus: Any, caplog: pytest.LogCaptureFixture
) -> None:
    body = {"status": "error", "errorType": "bad_data", "error": "1:5: parse error: unexpected"}
    fake, url = await fake_prometheus(lambda q: (400, body))
    seen: list[SourceError] = []
    client = PrometheusClient(session, url, on_error=seen.append, backoff=0)
    with caplog.at_level(logging.WARNING, logger="canaryd.prometheus"), pytest.raises(SourceError) as info:
        await client.query("sum(")
    e = info.value
    assert (e.kind, e.error_type, e.status, e.query) == ("prometheus", "bad_data", 400, "sum(")
    assert "parse error" in e.message
    assert seen == [e]
    assert len(fake.requests) == 1  # 4xx: no retry
    [record] = [r for r in caplog.records if r.name == "canaryd.prometheus"]
    assert record.kind == "prometheus" and record.error_type == "bad_data" and record.query == "sum("  # type: ignore[attr-defined]


async def test_error_status_in_a_200_answer(session: aiohttp.ClientSession, fake_prometheus: Any) -> None:
    body = {"status": "error", "errorType": "execution", "error": "many-to-many matching not allowed"}
    _, url = await fake_prometheus(lambda q: (200, body))
    with pytest.raises(SourceError) as info:
        await PrometheusClient(session, url).query("a / b")
    assert (info.value.kind, info.value.error_type) == ("prometheus", "execution")


async def test_503_then_200_is_retried(session: aiohttp.ClientSession, fake_prometheus: Any) -> None:
    answers = iter([(503, "unavailable"), (503, "unavailable"), (200, vector(({}, "7")))])
    fake, url = await fake_prometheus(lambda q: next(answers))
    seen: list[SourceError] = []
    [s] = await PrometheusClient(session, url, backoff=0.01, on_error=seen.append).query("x")
    assert s.value == 7.0
    assert len(fake.requests) == 3
    assert seen == []


async def test_5xx_after_retries(session: aiohttp.ClientSession, fake_prometheus: Any) -> None:
    fake, url = await fake_prometheus(lambda q: (502, "bad gateway"))
    seen: list[SourceError] = []
    with pytest.raises(SourceError) as info:
        await PrometheusClient(session, url, retries=2, backoff=0.01, on_error=seen.append).query("x")
    assert (info.value.kind, info.value.status) == ("http", 502)
    assert len(fake.requests) == 3
    assert seen == [info.value]


async def test_400_without_json_is_not_retried(session: aiohttp.ClientSession, fake_prometheus: Any) -> None:
    fake, url = await fake_prometheus(lambda q: (400, "bad request"))
    with pytest.raises(SourceError) as info:
        await PrometheusClient(session, url, backoff=0).query("x")
    assert (info.value.kind, info.value.status) == ("http", 400)
    assert len(fake.requests) == 1


async def test_not_an_api_answer(session: aiohttp.ClientSession, fake_prometheus: Any) -> None:
    _, url = await fake_prometheus(lambda q: (200, "<html>login</html>"))
    with pytest.raises(SourceError) as info:
        await PrometheusClient(session, url).query("x")
    assert info.value.kind == "http"


async def test_slow_answer_times_out(session: aiohttp.ClientSession, fake_prometheus: Any) -> None:
    async def slow() -> dict[str, Any]:
        await asyncio.sleep(5)
        return vector()

    fake, url = await fake_prometheus(lambda q: (200, slow()))
    client = PrometheusClient(session, url, timeout=0.2, retries=1, backoff=0.01)
    started = time.monotonic()
    with pytest.raises(SourceError) as info:
        await client.query("x")
    assert info.value.kind == "timeout"
    assert len(fake.requests) == 2  # timeouts are retried
    assert time.monotonic() - started < 2
    assert not isinstance(info.value, aiohttp.ClientError | asyncio.TimeoutError)


async def test_connection_refused(session: aiohttp.ClientSession) -> None:
    seen: list[SourceError] = []
    client = PrometheusClient(session, f"http://127.0.0.1:{free_port()}", retries=2, backoff=0.01, on_error=seen.append)
    with pytest.raises(SourceError) as info:
        await client.query("up")
    assert info.value.kind == "connection"
    assert isinstance(info.value.__cause__, aiohttp.ClientError)  # chained, never leaked
    assert not isinstance(info.value, aiohttp.ClientError)
    assert seen == [info.value]


# --- selectors and batching ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ('job="auth-service-canary"', (("job", "auth-service-canary"),)),
        (' job = "a" , ', (("job", "a"),)),
        ("job='a'", (("job", "a"),)),
        ("job=`a\\b`", (("job", "a\\b"),)),
        (r'job="say \"hi\"\\"', (("job", 'say "hi"\\'),)),
        (r'job="\x41\u00e9\101\n"', (("job", "A\u00e9A\n"),)),
        ('namespace="orion",job="a"', (("job", "a"), ("namespace", "orion"))),
        ('job=~"a|b"', None),
        ('job!="a"', None),
        ('job="a",job="b"', None),
        ('job="a" namespace="b"', None),
        ('job="a', None),
        (r'job="\q"', None),
        ("", None),
    ],
)
def test_equality_matchers(selector: str, expected: Any) -> None:
    assert equality_matchers(selector) == expected


def _arm(key: str, arm: str, selector: str | None = None, **kw: Any) -> ArmTarget:
    name = key.split("/")[1]
    return ArmTarget(key, arm, selector or f'job="{name}-{arm}"', key.split("/")[0], f"{name}-{arm}", **kw)


async def test_fetch_batches_splits_and_fills(session: aiohttp.ClientSession, fake_prometheus: Any) -> None:
    """One query per metric; split by job; absent 5xx is 0 when requests exist; a failing metric is None."""

    def answer(q: str) -> tuple[int, Any]:
        if "bucket" in q:
            rows = [({"job": "a-canary", "le": le}, v) for le, v in (("0.1", "5"), ("1e-3", "1"), ("+Inf", "9"))]
            # b-canary: two client libraries ("1" and "1.0"), and a bucket slightly above +Inf from extrapolation
            rows += [({"job": "b-canary", "le": le}, v) for le, v in (("1", "2"), ("1.0", "3"), ("0.5", "11"), ("+Inf", "10"))]
            rows += [({"job": "a-stable", "le": "0.1"}, "3")]  # no +Inf: no histogram
            return 200, vector(*rows)
        if "5.." in q:
            return 200, vector(({"job": "a-canary"}, "2"))
        if "2.." in q:
            return 422, {"status": "error", "errorType": "execution", "error": "boom"}
        return 200, vector(({"job": "a-canary"}, "9"), ({"job": "a-stable"}, "20"), ({"job": "b-canary"}, "10"))

    fake, url = await fake_prometheus(answer)
    targets = [_arm("ns/a", "canary"), _arm("ns/a", "stable"), _arm("ns/b", "canary"), _arm("ns/b", "stable")]
    client = PrometheusClient(session, url, backoff=0)
    result = await fetch_increments(client, targets, DEFAULT_QUERIES, window=30)

    assert result.queries == 4 == len(fake.requests)
    assert [e.error_type for e in result.errors] == ["execution"]
    assert not result.all_failed
    queries = sorted(r["query"] for r in fake.requests)
    assert 'sum by (job) (increase(http_requests_total{job=~"a-canary|a-stable|b-canary|b-stable"}[30s]))' in queries
    assert any(q.startswith("sum by (job, le) (increase(http_request_duration_seconds_bucket{") for q in queries)
    inc = result.increments
    assert inc[("ns/a", "canary")] == ArmSnapshot(
        requests=9, errors=2, successes=None, buckets=((0.001, 1), (0.1, 5), (math.inf, 9))
    )
    assert inc[("ns/a", "stable")] == ArmSnapshot(requests=20, errors=0.0)  # no 5xx series → 0; no +Inf → None
    assert inc[("ns/b", "canary")].buckets == ((0.5, 10), (1.0, 10), (math.inf, 10))
    assert inc[("ns/b", "stable")] == ArmSnapshot()  # no series at all: no data, not zero


async def test_fetch_counts_queries_independent_of_canaries(
    session: aiohttp.ClientSession, fake_prometheus: Any
) -> None:
    fake, url = await fake_prometheus(lambda q: (200, vector()))
    client = PrometheusClient(session, url)
    many = [_arm(f"ns/s{i}", arm) for i in range(200) for arm in ("canary", "stable")]
    result = await fetch_increments(client, many, DEFAULT_QUERIES, window=10)
    assert result.queries == 4
    # A regex, a multi-label selector, a {deployment}-only template: each its own query (or group).
    odd = [
        _arm("ns/x", "canary", 'job=~"x-canary.*"'),
        _arm("ns/y", "canary", 'namespace="ns",job="y-canary"'),
        _arm("ns/z", "canary", 'namespace="ns",job="z-canary"'),
        _arm("ns/w", "canary", queries={"requests": 'http_requests_total{{pod=~"{deployment}-.*"}}'}),
    ]
    fake.requests.clear()
    result = await fetch_increments(client, many + odd, DEFAULT_QUERIES, window=10)
    # 4 for the job= group, 4 for the regex selector, 4 for the namespace+job group, 1 for w's own template
    assert result.queries == 4 + 4 + 4 + 1 == len(fake.requests)
    sent = {r["query"] for r in fake.requests}
    assert 'sum by () (increase(http_requests_total{pod=~"w-canary-.*"}[10s]))' in sent
    assert 'sum by (job, namespace) (increase(http_requests_total{job=~"y-canary|z-canary",namespace=~"ns"}[10s]))' in sent


async def test_fetch_regex_escapes_values(session: aiohttp.ClientSession, fake_prometheus: Any) -> None:
    fake, url = await fake_prometheus(lambda q: (200, vector(({"job": 'a.b"c'}, "4"))))
    targets = [_arm("ns/a", "canary", r'job="a.b\"c"'), _arm("ns/a", "stable", 'job="axb\\"c"')]
    result = await fetch_increments(PrometheusClient(session, url), targets, {"requests": DEFAULT_QUERIES["requests"]}, 5)
    assert fake.requests[0]["query"] == r'sum by (job) (increase(http_requests_total{job=~"a\\.b\"c|axb\"c"}[5s]))'
    assert result.increments[("ns/a", "canary")].requests == 4
    assert result.increments[("ns/a", "stable")].requests is None


async def test_fetch_all_failed(session: aiohttp.ClientSession) -> None:
    client = PrometheusClient(session, f"http://127.0.0.1:{free_port()}", retries=0)
    result = await fetch_increments(client, [_arm("ns/a", "canary")], DEFAULT_QUERIES, window=10)
    assert result.all_failed and result.queries == 4 and {e.kind for e in result.errors} == {"connection"}
    assert result.increments[("ns/a", "canary")] == ArmSnapshot()


def test_exporter_counts_are_deterministic_and_monotone() -> None:
    svc = Service("s", {}, Settings(rps=0), [0.05, 0.1])
    svc.change(rps=1000, error_rate=0.1, client_error_rate=0.2, latency_median=0.05, latency_sigma=0.0)
    time.sleep(0.05)
    c = svc.counts()
    assert c.requests > 0 and c.errors == math.floor(c.requests * 0.1)
    assert c.client_errors == math.floor((c.requests - c.errors) * 0.2 / 0.9)
    assert c.buckets == (c.requests, c.requests)  # sigma 0: every request at the median
    svc.change(error_rate=0.0, latency_median=0.2)
    frozen = svc.counts().errors
    time.sleep(0.02)
    after = svc.counts()
    assert after.errors == frozen >= c.errors and after.requests > c.requests
    assert after.buckets[1] == after.buckets[0] < after.requests  # new requests are above 0.1s


# --- real Prometheus scraping real exporters ----------------------------------------------------------


async def test_real_prometheus_batched_fetch(
    session: aiohttp.ClientSession, prometheus_factory: Any, exporter_factory: Any
) -> None:
    ns = {"namespace": "orion"}
    auth = exporter_factory(["auth-service-stable", "auth-service-canary"], labels=ns, rps=200, cpu=42)
    pay = exporter_factory(["pay.v2-stable"], labels=ns, rps=100, error_rate=0.01)
    pay_canary = exporter_factory(["pay.v2-canary"], labels=ns, rps=100, error_rate=0.1, latency_median=0.3)
    prom = prometheus_factory([auth.address, pay.address, pay_canary.address])

    targets = [
        ArmTarget("orion/auth-service", "stable", 'job="auth-service-stable"', "orion", "auth-service-stable"),
        ArmTarget("orion/auth-service", "canary", 'job="auth-service-canary"', "orion", "auth-service-canary"),
        ArmTarget("orion/pay", "stable", 'job="pay.v2-stable"', "orion", "pay-stable"),
        ArmTarget("orion/pay", "canary", 'namespace="orion", job="pay.v2-canary"', "orion", "pay-canary"),
    ]
    queries = {**DEFAULT_QUERIES, "cpu": "max(service_cpu_utilisation_percent{{{selector}}})"}
    errors: list[SourceError] = []
    client = PrometheusClient(session, prom.url, on_error=errors.append)
    window = 4.0
    await asyncio.to_thread(prom.wait_for_scrapes, 6)

    async def complete() -> Any:
        r = await fetch_increments(client, targets, queries, window)
        ok = all(
            s.requests and s.requests > 50 and s.buckets and s.errors is not None and s.successes
            for s in r.increments.values()
        )
        return r if ok else None

    deadline = time.monotonic() + 30
    while (result := await complete()) is None:
        assert time.monotonic() < deadline, f"no complete data in 30s\n{prom.log_tail()}"
        await asyncio.sleep(0.5)

    # 4 counter metrics for the three job= arms, 4 for the two-matcher arm, one cpu query per arm.
    assert result.queries == 4 + 4 + 4
    assert result.errors == [] and errors == []
    inc = result.increments
    for (key, arm), snap in inc.items():
        rps = 200 if key == "orion/auth-service" else 100
        assert snap.requests == pytest.approx(rps * window, rel=0.35), (key, arm, snap)
        assert snap.buckets is not None and snap.buckets[-1][0] == math.inf
        assert snap.buckets[-1][1] == pytest.approx(snap.requests, rel=0.05)
        assert [c for _, c in snap.buckets] == sorted(c for _, c in snap.buckets)
        assert snap.successes is not None and snap.errors is not None
        assert snap.successes + snap.errors == pytest.approx(snap.requests, rel=0.05)
    assert inc[("orion/auth-service", "canary")].errors == 0
    assert inc[("orion/auth-service", "canary")].cpu == 42
    assert inc[("orion/pay", "stable")].cpu is None
    canary = inc[("orion/pay", "canary")]
    assert canary.errors / canary.requests == pytest.approx(0.1, abs=0.03)  # type: ignore[operator]
    # Latency: the canary's median (0.3s) sits between the 0.25 and 0.5 buckets; auth's (0.05s) below 0.075.
    assert _share_below(canary, 0.25) < 0.5 < _share_below(canary, 0.5)
    assert _share_below(inc[("orion/auth-service", "canary")], 0.075) > 0.5

    # Twice the canaries with the default selectors: still one query per metric.
    more = [ArmTarget(f"orion/x{i}", arm, f'job="x{i}-{arm}"', "orion", f"x{i}") for i in range(20) for arm in ("c", "s")]
    r2 = await fetch_increments(client, targets[:3] + more, DEFAULT_QUERIES, window)
    assert r2.queries == 4
    assert inc[("orion/pay", "stable")].requests == pytest.approx(r2.increments[("orion/pay", "stable")].requests, rel=0.5)
    assert r2.increments[("orion/x3", "c")] == ArmSnapshot()

    # A bad query is Prometheus' own error, with its errorType.
    with pytest.raises(SourceError) as info:
        await client.query("sum(")
    assert (info.value.kind, info.value.error_type) == ("prometheus", "bad_data")

    # Prometheus down: every query fails; back on the same port with its data: answers again.
    prom.stop()
    down = await fetch_increments(PrometheusClient(session, prom.url, retries=0), targets, DEFAULT_QUERIES, window)
    assert down.all_failed and {e.kind for e in down.errors} == {"connection"}
    prom.start()
    assert await client.query("count_over_time(up[5m])")


def _share_below(snap: ArmSnapshot, bound: float) -> float:
    assert snap.buckets is not None
    total = snap.buckets[-1][1]
    return next(c for le, c in snap.buckets if le >= bound) / total


async def test_real_alertmanager_delivers_webhook_with_bearer(
    aiohttp_server: Any, alertmanager_factory: Any
) -> None:
    """The Alertmanager fixture: a POSTed alert reaches the webhook at once, with the bearer token."""
    received: list[tuple[str | None, dict[str, Any]]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((request.headers.get("Authorization"), await request.json()))
        return web.Response()

    app = web.Application()
    app.router.add_post("/webhooks/alertmanager", hook)
    server = await aiohttp_server(app)
    am = alertmanager_factory(str(server.make_url("/webhooks/alertmanager")), bearer_token="s3cret")
    posted = time.monotonic()
    am.post_alerts([{"labels": {"alertname": "CanaryHighErrorRate", "canary": "auth-service", "namespace": "orion"}}])
    deadline = time.monotonic() + 10
    while not received:
        assert time.monotonic() < deadline, am.log_tail()
        await asyncio.sleep(0.02)
    latency = time.monotonic() - posted
    auth, body = received[0]
    assert auth == "Bearer s3cret"
    assert body["version"] == "4" and body["alerts"][0]["labels"]["alertname"] == "CanaryHighErrorRate"
    assert body["alerts"][0]["status"] == "firing"
    assert latency < 2, latency
    assert wait_until(lambda: am.alerts(), timeout=5)
