"""The tick path through the in-process stack of test_server.py: the first tick after a start judges, and
a canary paused at max_step_duration is still judged for failure, and rolled back when it fails."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from canaryd.analysis.judge import PAUSED_REASON
from test_server import CONFIG, FakePrometheus, Stack, _stack

PAUSING = {**CONFIG["defaults"], "min_requests": 30000, "max_step_duration": "20s",  # type: ignore[dict-item]
           "on_max_step_duration": "pause"}


class FailingPrometheus(FakePrometheus):
    """The fake Prometheus whose canaries answer 30 % of their requests with 5xx (not 2xx) from `failing_since`."""

    failing_since: float | None = None

    async def _query(self, request: web.Request) -> web.Response:
        query = str((await request.post()).get("query", ""))
        since = self.failing_since
        if since is None or not ('"5..' in query or '"2..' in query):
            return await super()._query(request)
        total = 1000.0 * (self.clock() - 1_600_000_000.0)
        errors = 300.0 * max(0.0, self.clock() - since)
        rows = []
        for job in (j for c in ("auth-service", "cart") for j in (f"{c}-stable", f"{c}-canary") if j in query):
            bad = errors if job.endswith("-canary") else 0.0
            value = bad if '"5..' in query else total - bad
            rows.append({"metric": {"job": job}, "value": [0, str(value)]})
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": rows}})


@pytest.fixture
async def pausing(aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    monkeypatch.setitem(CONFIG, "defaults", PAUSING)
    monkeypatch.setattr("test_server.FakePrometheus", FailingPrometheus)
    async for s in _stack(aiohttp_client):
        yield s


@pytest.fixture
async def plain(aiohttp_client: Any) -> AsyncIterator[Stack]:
    async for s in _stack(aiohttp_client):
        yield s


async def test_the_first_tick_after_a_start_judges_the_traffic_since_the_start(plain: Stack) -> None:
    assert (await plain.post("orion", "auth-service", "start")).status == 200
    await plain.controller.primed()  # the fake Prometheus answers at the test's clock: read before it moves
    await plain.tick()
    last = (await plain.canary())["last_decision"]
    assert last["decision"] == "hold" and last["canary_requests"] > 0, last["reasons"]
    assert last["canary_requests"] > 0 and last["stable_requests"] > 0
    assert not any("first sample" in r for r in last["reasons"]), last["reasons"]


async def test_a_canary_paused_at_max_step_duration_is_still_judged_and_rolled_back(pausing: Stack) -> None:
    s = pausing
    assert (await s.post("orion", "auth-service", "start")).status == 200
    await s.controller.primed()
    for _ in range(40):
        await s.tick()
        if (await s.canary())["phase"] != "progressing":
            break
    status = await s.canary()
    assert status["phase"] == "paused" and "max_step_duration" in status["paused_reason"], status["last_decision"]
    history = len(status["history"])
    for _ in range(5):  # healthy while paused: judged, never advanced, one compact entry in the history
        await s.tick()
    status = await s.canary()
    assert status["phase"] == "paused" and status["weight"] == 5
    assert status["last_decision"]["reasons"][0] == PAUSED_REASON
    assert len(status["history"]) == history + 1
    assert isinstance(s.prometheus, FailingPrometheus)
    s.prometheus.failing_since = s.clock.now  # then it fails: 30 % of its requests are 5xx
    for _ in range(30):
        await s.tick()
        if (await s.canary())["phase"] != "paused":
            break
    status = await s.canary()
    assert status["phase"] == "rolled_back", (status["phase"], status["last_decision"])
    assert status["last_decision"]["trigger"] == "analysis"
    assert s.routers("orion/auth-service").history[-1].canary_weight == 0
    assert s.sample("canaryd_rollbacks_total", namespace="orion", canary="auth-service", trigger="analysis") == 1
