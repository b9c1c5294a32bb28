"""A rollout's start reads its counters' totals afresh (reader.prime); when that read fails, the next read
sets the baseline, never the totals of an earlier rollout of the same canary."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from canaryd.config import parse_config
from canaryd.sources.prometheus import PrometheusClient
from canaryd.sources.reader import CounterReader

CONFIG = parse_config({"canaries": [{
    "name": "pay", "namespace": "orion", "route": "pay",
    "stable": {"deployment": "pay-stable", "selector": 'job="pay-stable"'},
    "canary": {"deployment": "pay-canary", "selector": 'job="pay-canary"'}}]}, "test")
KEY = "orion/pay"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def _prometheus(aiohttp_server: Any, state: dict[str, Any]) -> str:
    """Every job's http_requests_total is state["requests"]; no 5xx, no buckets; 503 while state["down"]."""

    async def query(request: web.Request) -> web.Response:
        if state["down"]:
            return web.Response(status=503, text="down")
        expr = str((await request.post())["query"])
        rows = [] if "5.." in expr or "bucket" in expr else [
            {"metric": {"job": job}, "value": [1.7e9, str(state["requests"])]} for job in ("pay-stable", "pay-canary")]
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": rows}})

    app = web.Application()
    app.router.add_post("/api/v1/query", query)
    return str((await aiohttp_server(app)).make_url("")).rstrip("/")


async def test_after_a_failed_prime_the_next_read_sets_the_baseline(session: aiohttp.ClientSession,
                                                                   aiohttp_server: Any) -> None:
    state = {"requests": 1000, "down": False}
    reader = CounterReader(PrometheusClient(session, await _prometheus(aiohttp_server, state), retries=0),
                           CONFIG.canaries)
    await reader.prime([KEY], gauge_window=60)  # the first rollout's start
    state["requests"] = 1200
    first = await reader.read([KEY], gauge_window=60)
    assert first.increments[KEY][1].requests == 200  # stable's increment since the start
    # The canary is rolled back, then started again while Prometheus fails: no fresh baseline.
    state.update(requests=1500, down=True)
    await reader.prime([KEY], gauge_window=60)
    state.update(requests=1600, down=False)
    again = await reader.read([KEY], gauge_window=60)
    assert not again.increments[KEY][1].requests  # the baseline (nothing counted), not 400 since the first rollout
    state["requests"] = 1700
    assert (await reader.read([KEY], gauge_window=60)).increments[KEY][1].requests == 100
