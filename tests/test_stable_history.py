"""Stable's history before a rollout (sources/history.py): against the real Prometheus, then edge cases
against a fake one (a counter reset, a missing point, no 5xx series yet, a failing Prometheus)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from canaryd.sources.history import fetch_history
from canaryd.sources.prometheus import ArmTarget, PrometheusClient, SourceError
from test_prometheus_source import DEFAULT_QUERIES

STABLE = ArmTarget("orion/pay", "stable", 'job="pay-stable"', "orion", "pay-stable")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_real_prometheus_gives_stable_counts_per_interval(
    session: aiohttp.ClientSession, prometheus_factory: Any, exporter_factory: Any
) -> None:
    exporter = exporter_factory(["pay-stable"], rps=200, error_rate=0.05)
    prom = prometheus_factory([exporter.address])
    await asyncio.to_thread(prom.wait_for_scrapes, 8)
    client = PrometheusClient(session, prom.url)
    history = await fetch_history(client, STABLE, DEFAULT_QUERIES, interval=1.0, end=time.time() - 1.0, count=5)
    assert 3 <= len(history) <= 5, history  # an interval between scrapes' jitter may lack a point
    for h in history:
        assert h.requests == pytest.approx(200, rel=0.5), history
        assert h.errors is not None and h.requests is not None
        assert h.errors == pytest.approx(0.05 * h.requests, abs=2), history
    # Before the service existed: no points, no history.
    assert await fetch_history(client, STABLE, DEFAULT_QUERIES, interval=1.0, end=time.time() - 3600, count=5) == []


def _matrix(points: list[tuple[float, float]] | None) -> dict[str, Any]:
    result = [] if points is None else [{"metric": {}, "values": [[t, str(v)] for t, v in points]}]
    return {"status": "success", "data": {"resultType": "matrix", "result": result}}


async def _fake(aiohttp_server: Any, answers: dict[str, Any]) -> tuple[str, list[dict[str, str]]]:
    seen: list[dict[str, str]] = []

    async def handle(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        seen.append(form)
        kind = "errors" if "5.." in form["query"] else "requests"
        status, body = answers[kind]
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_post("/api/v1/query_range", handle)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/"), seen


async def test_resets_and_gaps_are_left_out_and_no_5xx_series_means_none(
    session: aiohttp.ClientSession, aiohttp_server: Any
) -> None:
    # Points at 1000, 1030, ... 1150 (end 1150, 5 intervals of 30 s): a gap at 1060, a reset at 1120.
    requests = [(1000.0, 100.0), (1030.0, 400.0), (1090.0, 1000.0), (1120.0, 50.0), (1150.0, 350.0)]
    url, seen = await _fake(aiohttp_server, {"requests": (200, _matrix(requests)), "errors": (200, _matrix(None))})
    history = await fetch_history(PrometheusClient(session, url), STABLE, DEFAULT_QUERIES, interval=30.0,
                                  end=1150.0, count=5)
    assert [(h.requests, h.errors) for h in history] == [(300.0, 0.0), (300.0, 0.0)]
    assert {s["start"] for s in seen} == {"1000.000"} and {s["end"] for s in seen} == {"1150.000"}
    assert {s["step"] for s in seen} == {"30s"}
    assert seen[0]["query"] == 'sum by () (http_requests_total{job="pay-stable"})'


async def test_a_failing_prometheus_raises_source_error(session: aiohttp.ClientSession, aiohttp_server: Any) -> None:
    url, _ = await _fake(aiohttp_server, {"requests": (400, {"status": "error", "errorType": "bad_data",
                                                             "error": "nope"}),
                                          "errors": (200, _matrix(None))})
    with pytest.raises(SourceError):
        await fetch_history(PrometheusClient(session, url, retries=0), STABLE, DEFAULT_QUERIES, interval=30.0,
                            end=1150.0)
