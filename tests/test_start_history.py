"""A rollout's start reads stable's last intervals from the real Prometheus, and the judge's error-ratio test
gets them before its first tick (controller._prime_read → worker.take_history → judge.with_history)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from canaryd import controller as controller_module
from canaryd.actuator import RouterActuator
from canaryd.analysis.dispersion import history_rows
from canaryd.config import parse_config
from canaryd.controller import Controller
from canaryd.metrics import Metrics
from canaryd.routers.dryrun import DryRunRouter
from canaryd.sources.prometheus import PrometheusClient

KEY = "orion/pay"


def _canary(**settings: Any) -> dict[str, Any]:
    return {"name": "pay", "namespace": "orion", "route": "pay", "interval": "1s",
            "stable": {"deployment": "pay-stable", "selector": 'job="pay-stable"'},
            "canary": {"deployment": "pay-canary", "selector": 'job="pay-canary"'}, **settings}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@contextlib.asynccontextmanager
async def _running(session: aiohttp.ClientSession, url: str) -> AsyncIterator[Controller]:
    """The one canary's controller, started, reading Prometheus at `url`; stopped afterwards."""
    controller = _controller(session, url)
    await controller.start()
    try:
        yield controller
    finally:
        await controller.stop()


def _controller(session: aiohttp.ClientSession, url: str) -> Controller:
    config = parse_config({"canaries": [_canary()]}, "test")

    def actuator(c: Any) -> RouterActuator:
        return RouterActuator(DryRunRouter(namespace=c.namespace, route=c.route, stable_backend="stable",
                                           canary_backend="canary"))

    return Controller(config, metrics=Metrics(CollectorRegistry()),
                      prometheus=PrometheusClient(session, url, retries=0), actuator_factory=actuator)


def _history(controller: Controller) -> list[tuple[float, float]] | None:
    analysis = controller.workers[KEY].rollout.analysis
    assert analysis is not None
    ratio = analysis.sequentials.error_ratio
    assert ratio is not None
    return history_rows(ratio.history)


async def test_a_start_gives_the_judge_stable_s_last_intervals(
    session: aiohttp.ClientSession, prometheus_factory: Any, exporter_factory: Any
) -> None:
    exporter = exporter_factory(["pay-stable", "pay-canary"], rps=200, error_rate=0.01)
    prom = prometheus_factory([exporter.address])
    await asyncio.to_thread(prom.wait_for_scrapes, 12)
    async with _running(session, prom.url) as controller:
        await controller.command("orion", "pay", "start")
        await controller.primed()
        await controller.workers[KEY].barrier()
        rows = _history(controller)
        assert rows is not None and len(rows) >= 5, rows  # 20 one-second intervals asked, scrapes 1 s apart
        for errors, requests in rows:
            assert 0 < requests < 1000 and 0 <= errors <= 0.1 * requests, rows


async def test_without_prometheus_the_start_goes_on_without_history(session: aiohttp.ClientSession,
                                                                    free_port: int) -> None:
    async with _running(session, f"http://127.0.0.1:{free_port}") as controller:
        status = await controller.command("orion", "pay", "start")
        assert status["phase"] == "progressing"
        await controller.primed()
        await controller.workers[KEY].barrier()
        assert _history(controller) is None  # the first ticks are read as a little bursty, as before


async def _slow_prometheus(aiohttp_server: Any, delay: float) -> tuple[str, list[str], list[str]]:
    """A Prometheus that answers every query with no data after `delay` seconds: (url, received, answered)."""
    received: list[str] = []
    answered: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        received.append(request.path)
        await asyncio.sleep(delay)
        answered.append(request.path)
        kind = "matrix" if request.path.endswith("query_range") else "vector"
        return web.json_response({"status": "success", "data": {"resultType": kind, "result": []}})

    app = web.Application()
    app.router.add_post("/api/v1/query", handle)
    app.router.add_post("/api/v1/query_range", handle)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/"), received, answered


async def test_a_start_answers_once_its_first_reads_are_done(session: aiohttp.ClientSession,
                                                            aiohttp_server: Any) -> None:
    # The counters' totals and stable's history are read at once, and the start's answer waits for both.
    url, received, answered = await _slow_prometheus(aiohttp_server, 0.2)
    async with _running(session, url) as controller:
        status = await controller.command("orion", "pay", "start")
        assert status["phase"] == "progressing"
        assert "/api/v1/query" in answered and answered.count("/api/v1/query_range") == 2, answered
        assert sorted(received) == sorted(answered)


async def test_a_start_does_not_wait_for_a_stuck_prometheus_beyond_prime_wait(
    session: aiohttp.ClientSession, aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(controller_module, "PRIME_WAIT", 0.1)
    url, received, answered = await _slow_prometheus(aiohttp_server, 30.0)
    async with _running(session, url) as controller:
        status = await controller.command("orion", "pay", "start")
        assert status["phase"] == "progressing"
        assert received and not answered  # answered while its reads still wait: they go on, not cancelled
        assert controller.workers[KEY].rollout.phase.value == "progressing"
