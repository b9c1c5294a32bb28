"""Prometheus answers decoded fast and as turns of the pacer: the same values as json and the strict
readers give, and the decoding done inside the client's `turn` (so that it paces with the judgements)."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canaryd.pacing import Pacer
from canaryd.sources import samples
from canaryd.sources.prometheus import ArmTarget, PrometheusClient, fetch_increments

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

JSON = st.recursive(  # integers within 64 bits: orjson reads larger ones as floats (see samples.loads)
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers(-2**63, 2**64 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


def _old_loads(body: bytes, encoding: str) -> Any:
    """What the client decoded before: the text in the response's encoding, then json."""
    try:
        return json.loads(body.decode(encoding, errors="replace"))
    except (ValueError, RecursionError):
        return None


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN included (json and orjson both give float('nan'), which is not equal to itself)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple) and type(a) is type(b):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@FUZZ
@given(doc=JSON, ascii_only=st.booleans(), encoding=st.sampled_from(["utf-8", "latin-1", "utf-16"]))
def test_loads_gives_what_json_gave(doc: Any, ascii_only: bool, encoding: str) -> None:
    text = json.dumps(doc, ensure_ascii=ascii_only, allow_nan=True)
    body = text.encode(encoding, "surrogatepass" if encoding != "latin-1" else "replace")
    assert _same(samples.loads(body, encoding), _old_loads(body, encoding))


def test_an_integer_beyond_64_bits_reads_as_the_float_sample_makes_of_it() -> None:
    big = b'{"data": [-9223372036854775809, "1"]}'
    assert samples.sample(samples.loads(big, "utf-8")["data"]) == samples.sample(_old_loads(big, "utf-8")["data"])


@FUZZ
@given(body=st.binary(max_size=200) | st.just(b"[" * 5000) | st.just(b'{"a": NaN}') | st.just(b'"\\ud800"'))
def test_loads_of_any_bytes_gives_what_json_gave(body: bytes) -> None:
    assert _same(samples.loads(body, "utf-8"), _old_loads(body, "utf-8"))


ROW = st.fixed_dictionaries({
    "metric": st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=3)
    | st.dictionaries(st.text(max_size=4), JSON, max_size=2) | JSON,
    "value": st.tuples(st.floats(allow_nan=False) | st.integers(-2**70, 2**70) | st.booleans() | st.text(max_size=3),
                       st.sampled_from(["1.5", "NaN", "+Inf", "x", "1e400"]) | st.floats() | st.none())
    .map(list) | JSON,
})


def _one_by_one(result: Any) -> list[tuple[dict[str, str], float]] | type[Exception]:
    try:
        return [(samples.labels(r["metric"]), samples.sample(r["value"])[1]) for r in result]
    except (KeyError, TypeError, ValueError, IndexError, OverflowError) as e:
        return type(e)


@FUZZ
@given(result=st.lists(ROW, max_size=5))
def test_vector_rows_reads_each_row_as_labels_and_sample_do(result: list[Any]) -> None:
    expected = _one_by_one(result)
    try:
        got: Any = samples.vector_rows(result)
    except (KeyError, TypeError, ValueError, IndexError, OverflowError) as e:
        got = type(e)
    assert _same(got, expected) if not isinstance(expected, type) else got is expected


# --- the client decodes as a turn ----------------------------------------------------------------------


@pytest.fixture
async def prometheus(aiohttp_server: Any) -> str:
    async def handle(request: web.Request) -> web.Response:
        query = str((await request.post())["query"])
        rows = [{"metric": {"job": f"svc-{i}-{arm}"}, "value": [1.7e9, "10"]} for i in range(3)
                for arm in ("canary", "stable")] if "bucket" not in query else []
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": rows}})

    app = web.Application()
    app.router.add_post("/api/v1/query", handle)
    return str((await aiohttp_server(app)).make_url("")).rstrip("/")


async def test_answers_are_decoded_as_turns_of_the_pacer(prometheus: str) -> None:
    pacer = Pacer()
    inside: list[bool] = []
    held = False

    @contextlib.asynccontextmanager
    async def turn() -> AsyncIterator[None]:
        nonlocal held
        async with pacer.turn("prometheus answer"):
            held = True
            try:
                yield
            finally:
                held = False

    original = samples.vector_rows

    def watched(result: object) -> list[tuple[dict[str, str], float]]:
        inside.append(held)
        return original(result)

    targets = [ArmTarget(f"ns/svc-{i}", arm, f'job="svc-{i}-{arm}"', "ns", f"svc-{i}-{arm}")
               for i in range(3) for arm in ("canary", "stable")]
    queries = {"requests": "http_requests_total{{{selector}}}"}
    async with aiohttp.ClientSession() as session:
        client = PrometheusClient(session, prometheus, turn=turn)
        samples.vector_rows = watched  # type: ignore[assignment]
        try:
            result = await fetch_increments(client, targets, queries, None)
        finally:
            samples.vector_rows = original  # type: ignore[assignment]
    assert inside and all(inside)
    assert pacer.turns >= 2  # the answer, then the split among the targets
    assert {k: v.requests for k, v in result.increments.items()} == {(t.key, t.arm): 10.0 for t in targets}


async def test_a_long_answer_is_read_in_turns_of_rows_turn_series(aiohttp_server: Any) -> None:
    """A part's answer of thousands of series is not one long turn: decoded in one, then read ROWS_TURN
    series a turn, all of them kept in order (non-finite values dropped as before)."""
    from canaryd.sources.prometheus import ROWS_TURN

    n = 2 * ROWS_TURN + 7
    values = [str(i) if i != 5 else "NaN" for i in range(n)]

    async def handle(request: web.Request) -> web.Response:
        rows = [{"metric": {"job": f"svc-{i}"}, "value": [1.7e9, v]} for i, v in enumerate(values)]
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": rows}})

    app = web.Application()
    app.router.add_post("/api/v1/query", handle)
    url = str((await aiohttp_server(app)).make_url("")).rstrip("/")
    turns = 0

    @contextlib.asynccontextmanager
    async def turn() -> AsyncIterator[None]:
        nonlocal turns
        turns += 1
        yield

    async with aiohttp.ClientSession() as session:
        client = PrometheusClient(session, url, turn=turn)
        series = await client.query("up")
        turns_finite, turns = turns, 0
        kept = await client.query("up", finite=False)
    assert turns_finite == turns == 1 + 3  # the decoding, then three turns of rows
    assert [s.labels["job"] for s in series] == [f"svc-{i}" for i in range(n) if i != 5]
    assert [s.value for s in series] == [float(i) for i in range(n) if i != 5]
    assert len(kept) == n and math.isnan(kept[5].value)
