"""A small built-in service for the demo: real HTTP, a configurable error rate and latency.

Each request sleeps for a lognormal latency, then answers 200 or (with probability `error_rate`)
500. It counts itself the way an instrumented app does, in its own registry:
`http_requests_total{status}` and the histogram `http_request_duration_seconds`, served at /metrics.
Prometheus adds `job` and `namespace` from its scrape config, as it would for a pod.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Finer than the client default around 50-500 ms, where the demo's P95s sit.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0)


@dataclass(frozen=True)
class Behaviour:
    error_rate: float = 0.001  # fraction of requests answered 500
    latency_median: float = 0.04  # seconds
    latency_sigma: float = 0.45  # of log(latency)

    def __post_init__(self) -> None:
        if not 0 <= self.error_rate <= 1:
            raise ValueError(f"error_rate is a fraction 0..1, got {self.error_rate}")
        if not (math.isfinite(self.latency_median) and self.latency_median > 0):
            raise ValueError(f"latency_median must be > 0 seconds, got {self.latency_median}")
        if not (math.isfinite(self.latency_sigma) and self.latency_sigma >= 0):
            raise ValueError(f"latency_sigma must be >= 0, got {self.latency_sigma}")

    def p95_ms(self) -> float:
        """The lognormal's 95th percentile, for the demo's description."""
        return 1000 * self.latency_median * math.exp(1.6449 * self.latency_sigma)


class DemoService:
    """One service version (stable or canary). `behaviour` may be changed while it serves."""

    def __init__(self, name: str, behaviour: Behaviour, *, rng: random.Random) -> None:
        self.name = name
        self.behaviour = behaviour
        self.rng = rng
        self.registry = CollectorRegistry()
        self.requests = Counter("http_requests_total", "Requests handled, by HTTP status.", ["status"],
                                registry=self.registry)
        self.duration = Histogram("http_request_duration_seconds", "Request latency, seconds.",
                                  buckets=BUCKETS, registry=self.registry)
        # Both statuses exist from the start, at 0, as an app that pre-declares its series: Prometheus
        # sees the first 500 as an increase, not as a new series it cannot take a rate of yet.
        for status in ("200", "500"):
            self.requests.labels(status)
        self.served = 0
        self.runner: web.AppRunner | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        b = self.behaviour
        delay = self.rng.lognormvariate(math.log(b.latency_median), b.latency_sigma) if b.latency_sigma else \
            b.latency_median
        await asyncio.sleep(min(delay, 10.0))
        failed = self.rng.random() < b.error_rate
        status = 500 if failed else 200
        self.requests.labels(str(status)).inc()
        self.duration.observe(time.perf_counter() - started)
        self.served += 1
        body = {"service": self.name, "status": "error" if failed else "ok",
                "canary": request.headers.get("x-canary", "") == "true"}
        return web.json_response(body, status=status)

    async def _metrics(self, request: web.Request) -> web.Response:
        resp = web.Response(body=generate_latest(self.registry))
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def start(self, port: int) -> None:
        self.runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.port = port

    async def stop(self) -> None:
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()
