"""Property tests of the Prometheus response parser: whatever answers in Prometheus' place.

`PrometheusClient.query` (and `query_range`) give series or a `SourceError` whose kind counts as one of
metrics.PROMETHEUS_ERROR_KINDS; `fetch_increments` and `CounterReader.read` give increments or errors, never
raise; and through the controller, impossible answers only hold a canary (no phase or weight change) and are
counted in canaryd_prometheus_errors_total.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

import test_server
from canaryd.analysis.snapshot import ArmSnapshot
from canaryd.config import parse_config
from canaryd.metrics import PROMETHEUS_ERROR_KINDS
from canaryd.sources.prometheus import ArmTarget, PrometheusClient, Series, SourceError, fetch_increments
from canaryd.sources.reader import CounterReader
from fuzz_http import FUZZ, harness

# As wiring counts them: Prometheus' own error JSON is "api".
COUNTED = {"prometheus": "api"}
KINDS = frozenset(PROMETHEUS_ERROR_KINDS) - {"other"}
SMALLER = settings(FUZZ, max_examples=max(1, FUZZ.max_examples // 4))  # a read is 8 queries, a tick more

ANY_TEXT = st.text(st.one_of(st.characters(), st.sampled_from(["\ud800", "\x00"])), max_size=6)
NUMBER_TEXT = st.sampled_from(["0", "1", "12.5", "NaN", "+Inf", "-Inf", "Inf", "1e308", "1e999", "-5", "1_000",
                               " 7 ", "0x10", "", "9" * 5000, "1e-320"])
VALUES = st.one_of(NUMBER_TEXT, NUMBER_TEXT, st.floats(), st.integers(), st.sampled_from([10**400, True, None]),
                   ANY_TEXT, st.lists(st.integers(), max_size=2), st.just({}))
JOBS = ["auth-service-canary", "auth-service-stable", "cart-canary", "cart-stable"]
LES = st.sampled_from(["0.05", "0.1", "0.25", "1", "1.0", "+Inf", "Inf", "NaN", "-1", "abc", "", "1e999"])
LABEL_VALUES = st.one_of(st.sampled_from(JOBS), ANY_TEXT, st.integers(), st.none(), st.just(["x"]))
JSON_ANY = st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | ANY_TEXT,
                        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_TEXT, inner, max_size=3),
                        max_leaves=8)


def _mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.integers(0, 5).flatmap(lambda n: bad if n == 0 else good)


@st.composite
def labels(draw: st.DrawFn) -> Any:
    out: dict[str, Any] = {}
    if draw(st.integers(0, 5)):
        out["job"] = draw(_mostly(st.sampled_from(JOBS), LABEL_VALUES))
    if draw(st.booleans()):
        out["le"] = draw(_mostly(LES, LABEL_VALUES))
    if draw(st.integers(0, 9)) == 0:
        out[draw(ANY_TEXT)] = draw(LABEL_VALUES)
    return draw(_mostly(st.just(out), JSON_ANY))


def sample(value: st.SearchStrategy[Any] = VALUES) -> st.SearchStrategy[Any]:
    good = st.tuples(st.floats(1e9, 2e9), value).map(list)
    return _mostly(good, JSON_ANY | st.lists(VALUES, max_size=3))


@st.composite
def results(draw: st.DrawFn) -> Any:
    """A data object of any resultType, its rows mostly well-formed, some duplicated."""
    kind = draw(st.sampled_from(["vector"] * 6 + ["matrix", "scalar", "string", "other"]))
    if kind == "scalar":
        result: Any = draw(sample())
    elif kind == "string":
        result = [1.7e9, draw(ANY_TEXT)]
    else:
        rows = []
        for _ in range(draw(st.integers(0, 6))):
            row: dict[str, Any] = {"metric": draw(labels())}
            if kind == "matrix":
                row["values"] = draw(_mostly(st.lists(sample(), max_size=3), JSON_ANY))
            else:
                row["value"] = draw(sample())
            rows.append(row if draw(st.integers(0, 19)) else draw(JSON_ANY))
            if rows and draw(st.integers(0, 9)) == 0:
                rows.append(rows[-1])  # a duplicate series
        result = rows if draw(st.integers(0, 19)) else draw(JSON_ANY)
    data: Any = {"resultType": kind if kind != "other" else draw(JSON_ANY), "result": result}
    return data if draw(st.integers(0, 19)) else draw(JSON_ANY)


@st.composite
def answers(draw: st.DrawFn) -> tuple[int, str, bytes]:
    """(HTTP status, Content-Type, body)."""
    status = draw(_mostly(st.just(200), st.sampled_from([204, 400, 401, 404, 422, 500, 502, 503])))
    how = draw(st.sampled_from(["api", "api", "api", "api", "error", "bytes", "json", "deep"]))
    if how == "bytes":
        return status, "application/json", draw(st.binary(max_size=100))
    if how == "deep":
        return status, "application/json", b"[" * draw(st.integers(1, 100_000))
    if how == "json":
        doc: Any = draw(JSON_ANY)
    elif how == "error":
        doc = {"status": "error", "errorType": draw(_mostly(st.just("execution"), JSON_ANY)),
               "error": draw(_mostly(st.just("boom"), JSON_ANY))}
    else:
        doc = {"status": draw(_mostly(st.just("success"), JSON_ANY)), "data": draw(results())}
    body = json.dumps(doc, ensure_ascii=draw(st.booleans()), allow_nan=True).encode("utf-8", "surrogatepass")
    charset = draw(st.sampled_from(["", "; charset=utf-8", "; charset=latin-1", "; charset=nonsense"]))
    return status, "application/json" + charset, body


class Fake:
    """A Prometheus stand-in on loopback: `answer(query)` gives (status, content type, body)."""

    def __init__(self) -> None:
        self.answer: Callable[[str], tuple[int, str, bytes]] = lambda q: (200, "application/json", b"{}")

    async def handle(self, request: web.Request) -> web.Response:
        query = str((await request.post()).get("query", ""))
        status, content_type, body = self.answer(query)
        return web.Response(status=status, body=body, headers={"Content-Type": content_type})


@asynccontextmanager
async def fake_prometheus() -> AsyncIterator[tuple[Fake, str]]:
    fake = Fake()
    app = web.Application()
    app.router.add_post("/api/v1/query", fake.handle)
    app.router.add_post("/api/v1/query_range", fake.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield fake, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextmanager
def client_loop() -> Iterator[tuple[asyncio.AbstractEventLoop, Fake, PrometheusClient, list[SourceError]]]:
    """A fake, a client of it (one retry, no backoff) and the errors it reported, on a loop of their own:
    hypothesis runs the examples synchronously."""
    loop = asyncio.new_event_loop()
    stack = fake_prometheus()
    fake, url = loop.run_until_complete(stack.__aenter__())
    session = loop.run_until_complete(_session())
    reported: list[SourceError] = []
    client = PrometheusClient(session, url, timeout=5, retries=1, backoff=0, on_error=reported.append)
    try:
        yield loop, fake, client, reported
    finally:
        loop.run_until_complete(session.close())
        loop.run_until_complete(stack.__aexit__(None, None, None))
        loop.close()


async def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()


def check_error(e: SourceError) -> None:
    assert COUNTED.get(e.kind, e.kind) in KINDS, e.kind
    assert str(e) and "\n" not in e.message[:500], e


def check_series(series: list[Series]) -> None:
    for s in series:
        assert isinstance(s.value, float) and math.isfinite(s.value), s
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in s.labels.items()), s


def test_any_answer_is_series_or_a_source_error() -> None:
    seen: dict[str, int] = {}
    with client_loop() as (loop, fake, client, reported):

        @FUZZ
        @given(answer=answers(), ranged=st.integers(0, 4))
        def one(answer: tuple[int, str, bytes], ranged: int) -> None:
            fake.answer = lambda q: answer
            reported.clear()
            try:
                if ranged == 0:
                    points = loop.run_until_complete(client.query_range("x", 1.7e9, 1.7e9 + 60, 15))
                    assert all(math.isfinite(v) for r in points for _, v in r.points)
                else:
                    check_series(loop.run_until_complete(client.query("x")))
            except SourceError as e:
                check_error(e)
                assert [r.kind for r in reported] == [e.kind]  # counted once, as wiring counts it
                seen[e.kind] = seen.get(e.kind, 0) + 1
            else:
                assert not reported
                seen["ok"] = seen.get("ok", 0) + 1

        one()
    print(f"query outcomes: {dict(sorted(seen.items()))}")
    assert seen.get("ok") and seen.get("bad_response") and seen.get("prometheus"), seen


def _targets() -> list[ArmTarget]:
    return [ArmTarget(f"ns/{job.rsplit('-', 1)[0]}", job.rsplit("-", 1)[1], f'job="{job}"', "ns", job) for job in JOBS]


CONFIG = parse_config({**test_server.CONFIG, "kubernetes": {"enabled": False}})


@st.composite
def totals(draw: st.DrawFn) -> tuple[int, str, bytes]:
    """A well-formed answer for the four jobs (buckets included), with odd values now and then."""
    rows = [{"metric": {"job": job, **({"le": draw(LES)} if draw(st.booleans()) else {})},
             "value": [1.7e9, draw(_mostly(st.integers(0, 10**6).map(str), VALUES))]}
            for job in JOBS for _ in range(draw(st.integers(0, 3)))]
    body = {"status": "success", "data": {"resultType": "vector", "result": rows}}
    return 200, "application/json", json.dumps(body).encode()


def test_any_answers_to_a_read_are_increments_or_errors() -> None:
    """Each metric's query answered on its own (a 5xx query one way, buckets another), two reads in a row."""
    seen: dict[str, int] = {}
    with client_loop() as (loop, fake, client, reported):

        @SMALLER
        @given(ticks=st.lists(st.dictionaries(st.sampled_from(["requests", "5..", "2..", "bucket"]), _mostly(totals(), answers())),
                              min_size=2, max_size=2))
        def one(ticks: list[dict[str, tuple[int, str, bytes]]]) -> None:
            reader = CounterReader(client, CONFIG.canaries)
            for by_metric in ticks:
                fake.answer = lambda q, a=by_metric: next(  # type: ignore[misc]
                    (v for k, v in a.items() if k in q), (200, "application/json", b'{"status": "success"}'))
                reported.clear()
                reading = loop.run_until_complete(reader.read([c.key for c in CONFIG.canaries], gauge_window=60))
                for e in reported:
                    check_error(e)
                for arms in reading.increments.values():
                    for arm in arms:
                        _check_increment(arm)
                outcome = "failed" if reading.failure else "implausible" if reading.implausible else "read"
                seen[outcome] = seen.get(outcome, 0) + 1
            # fetch_increments on its own, with a window: the same contract
            result = loop.run_until_complete(fetch_increments(client, _targets(), reader._default_queries, 30.0))
            for e in result.errors:
                check_error(e)

        one()
    print(f"read outcomes: {seen}")
    assert seen.get("read") and seen.get("failed"), seen


def _check_increment(arm: ArmSnapshot) -> None:
    for name in ("requests", "errors", "successes", "cpu", "memory"):
        value = getattr(arm, name)
        assert value is None or (isinstance(value, float | int) and math.isfinite(value) and value >= 0), (name, arm)
    for le, count in arm.buckets or ():
        assert not math.isnan(le) and math.isfinite(count) and count >= 0, arm


# ------------------------------------------------------------------------------------- through the controller

ARMS = ("canary", "stable")
IMPOSSIBLE = st.sampled_from(["more_errors", "nan", "inf", "1e308", "negative", "duplicate", "shape", "le_dup",
                              "bucket_nan", "bucket_inf"])


def _impossible_rows(how: str, job: str, query: str, total: float) -> list[dict[str, Any]]:
    """The fake's rows for one job under one kind of impossibility."""
    if "_bucket" in query:
        bad = {"bucket_nan": "NaN", "bucket_inf": "+Inf", "inf": "+Inf", "1e308": "1e308"}.get(how)
        rows = [{"metric": {"job": job, "le": le}, "value": [0, bad or str(total * share)]}
                for le, share in (("0.1", 0.9), ("0.5", 1.0), ("+Inf", 1.0))]
        return rows + rows[-1:] if how == "le_dup" else rows
    errors = '"5..' in query
    value = {"more_errors": str(total * 2) if errors else str(total), "nan": "NaN", "inf": "+Inf", "1e308": "1e308",
             "negative": "-5"}.get(how, "0" if errors else str(total))
    row = {"metric": {"job": job}, "value": [0, value]}
    if how == "shape":
        row = {"metric": {"job": job}, "value": value}
    return [row, row] if how == "duplicate" else [row]


def test_impossible_answers_only_hold_and_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    mode: dict[str, str | None] = {"how": None, "arm": "canary"}
    honest = test_server.FakePrometheus._query

    async def query(self: test_server.FakePrometheus, request: web.Request) -> web.Response:
        how = mode["how"]
        if how is None:
            return await honest(self, request)
        q = str((await request.post()).get("query", ""))
        total = 1000.0 * (self.clock() - 1_600_000_000.0)
        rows: list[dict[str, Any]] = []
        for job in ("auth-service-stable", "auth-service-canary"):
            if job in q:
                rows += (_impossible_rows(how, job, q, total) if job.endswith(str(mode["arm"])) else
                         [{"metric": {"job": job, **({"le": "+Inf"} if "_bucket" in q else {})},
                           "value": [0, "0" if '"5..' in q else str(total)]}])
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": rows}})

    monkeypatch.setattr(test_server.FakePrometheus, "_query", query)
    counted: dict[str, int] = {}
    with harness() as h:
        stack = h.stack
        assert h.request(b"POST", b"/api/v1/canaries/orion/auth-service/start", []).status == 200
        h.run(stack.tick())  # a baseline of honest totals

        @SMALLER
        @given(hows=st.lists(st.tuples(IMPOSSIBLE, st.sampled_from(ARMS)), min_size=1, max_size=3))
        def one(hows: list[tuple[str, str]]) -> None:
            for how, arm in hows:
                before = h.run(stack.canary())
                errors_before = sum(stack.sample("canaryd_prometheus_errors_total", kind=k) for k in KINDS)
                mode["how"], mode["arm"] = how, arm
                h.run(stack.tick(0.001))  # the step's time barely moves: holds never reach max_step_duration
                mode["how"] = None
                after = h.run(stack.canary())
                assert [after[k] for k in ("phase", "weight", "step")] == [before[k] for k in ("phase", "weight", "step")]
                assert after["last_decision"]["decision"] == "hold", (how, arm, after["last_decision"])
                assert sum(stack.sample("canaryd_prometheus_errors_total", kind=k) for k in KINDS) > errors_before, how
                assert stack.sample("canaryd_rollbacks_total", namespace="orion", canary="auth-service",
                                    trigger="analysis") == 0
                counted[how] = counted.get(how, 0) + 1
            h.check_alive()

        one()
    print(f"impossible answers held: {counted}")


# ------------------------------------------------------------------------------------- duplicate series


def _vector(rows: list[tuple[dict[str, str], float]]) -> tuple[int, str, bytes]:
    body = {"status": "success", "data": {"resultType": "vector",
                                          "result": [{"metric": m, "value": [1.7e9, str(v)]} for m, v in rows]}}
    return 200, "application/json", json.dumps(body).encode()


def _honest(requests: float, twice: str | None = None) -> Callable[[str], tuple[int, str, bytes]]:
    """Totals of `requests` (1 % 5xx, all under 0.1 s) for every job; `twice` ("requests" or "le") answered
    with a second series for auth-service-canary."""
    def answer(q: str) -> tuple[int, str, bytes]:
        if "_bucket" in q:
            rows = [({"job": j, "le": le}, requests) for j in JOBS for le in ("0.1", "+Inf")]
            extra = [({"job": "auth-service-canary", "le": "0.1"}, requests)] if twice == "le" else []
        else:
            value = requests / 100 if '"5..' in q else requests * 0.99 if '"2..' in q else requests
            rows = [({"job": j}, value) for j in JOBS]
            extra = [({"job": "auth-service-canary"}, value)] if twice == "requests" and "status" not in q else []
        return _vector(rows + extra)
    return answer


@pytest.mark.parametrize("twice", ["requests", "le"])
def test_duplicate_series_are_a_bad_response_and_keep_the_baseline(twice: str) -> None:
    """Two series where `sum by` gives one are not added up: that metric is unanswered for that arm (its
    baseline stays, so the next good read covers both ticks), and the query counts as a bad_response."""
    keys = [c.key for c in CONFIG.canaries]
    with client_loop() as (loop, fake, client, reported):
        reader = CounterReader(client, CONFIG.canaries)
        fake.answer = _honest(1000)
        loop.run_until_complete(reader.read(keys, gauge_window=60))
        fake.answer = _honest(1500, twice)
        reported.clear()
        reading = loop.run_until_complete(reader.read(keys, gauge_window=60))
        assert [e.kind for e in reported] == ["bad_response"]
        assert len(reading.errors) == 1 and "auth-service (canary" in reading.errors[0], reading.errors
        assert not reading.implausible, reading.implausible
        canary, stable = reading.increments["orion/auth-service"]
        field = "requests" if twice == "requests" else "buckets"
        assert getattr(canary, field) is None and canary.requests is None  # no data: the judge holds
        assert stable.requests == 500 and reading.increments["shop/cart"][0].requests == 500
        fake.answer = _honest(2000)
        reported.clear()
        reading = loop.run_until_complete(reader.read(keys, gauge_window=60))
        assert not reported and not reading.errors
        canary, _ = reading.increments["orion/auth-service"]
        assert canary.requests == 1000 and canary.errors == 10  # since the last good read, not double-counted
