"""server.py: the HTTP contract of docs/contracts.md, on the real aiohttp app with a dry-run Controller.

Prometheus is a small fake aiohttp app on a loopback port that the tests can stop and start again,
so /readyz can be seen going 503 and back. Nothing is mocked: the controller, its canary tasks, the
dry-run routers and the metrics registry are the daemon's own.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from canaryd.actuator import ActuationError, Actuator, GuardedActuator, RouterActuator
from canaryd.config import CanaryConfig, parse_config
from canaryd.controller import Controller
from canaryd.metrics import Metrics
from canaryd.routers.dryrun import DryRunRouter
from canaryd.server import make_app
from canaryd.sources.prometheus import PrometheusClient
from servers import free_port

PROMTOOL = "/usr/bin/promtool"
WEBHOOK = "/webhooks/alertmanager"
WEBHOOK_TOKEN = "hook-s3cret"
API_TOKEN = "api-s3cret"

CONFIG = {
    "prometheus": {"url": "http://127.0.0.1:1", "timeout": "2s", "retries": 0},
    "kubernetes": {"enabled": False},
    "defaults": {"step_duration": "10s", "interval": "1s", "min_requests": 50},
    "canaries": [
        {"name": "auth-service", "namespace": "orion", "route": "auth-service",
         "stable": {"deployment": "auth-service-stable", "selector": 'job="auth-service-stable"'},
         "canary": {"deployment": "auth-service-canary", "selector": 'job="auth-service-canary"'}},
        {"name": "cart", "namespace": "shop", "route": "cart", "auto_promote": True,
         "stable": {"deployment": "cart-stable", "selector": 'job="cart-stable"'},
         "canary": {"deployment": "cart-canary", "selector": 'job="cart-canary"'}},
    ],
}


# ---------------------------------------------------------------------------------------------- fakes


class FakePrometheus:
    """Answers /api/v1/query with counter totals growing with `clock` (1000 requests a second per job,
    no 5xx, 90 % under 100 ms) for every job the query names. It can go away (nothing listens on its
    port) and come back on the same port."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._runner: web.AppRunner | None = None
        self.canary_errors: str | None = None  # a value for the canaries' 5xx totals, e.g. impossible ones

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/v1/query", self._query)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _query(self, request: web.Request) -> web.Response:
        query = str((await request.post()).get("query", ""))
        total = 1000.0 * (self.clock() - 1_600_000_000.0)
        jobs = [j for c in ("auth-service", "cart") for j in (f"{c}-stable", f"{c}-canary") if j in query]
        rows: list[dict[str, Any]] = []
        for job in jobs:
            if "_bucket" in query:
                rows += [{"metric": {"job": job, "le": le}, "value": [0, str(total * share)]}
                         for le, share in (("0.1", 0.9), ("0.5", 1.0), ("+Inf", 1.0))]
            elif '"5..' in query:
                errors = self.canary_errors if self.canary_errors and job.endswith("-canary") else "0"
                rows.append({"metric": {"job": job}, "value": [0, errors]})
            else:
                rows.append({"metric": {"job": job}, "value": [0, str(total)]})
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": rows}})


class SwitchableActuator(GuardedActuator):
    """A dry-run actuator whose writes can be made to fail, as an unreachable Kubernetes API would."""

    def __init__(self, inner: RouterActuator) -> None:
        super().__init__(inner, self._check)
        self.failing = False

    def _check(self) -> None:
        if self.failing:
            raise ActuationError("VirtualService orion/auth-service patch failed: connection refused")


class Clock:
    """The controller's clock: ticks are judged when the test says time has passed, not after sleeps."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Stack:
    client: TestClient
    controller: Controller
    registry: CollectorRegistry
    prometheus: FakePrometheus
    clock: Clock
    actuators: dict[str, SwitchableActuator] = field(default_factory=dict)

    async def tick(self, seconds: float = 1.0) -> int:
        """Let `seconds` pass, run one analysis tick, and wait until every canary task has handled it."""
        self.clock.now += seconds
        queries = await self.controller.tick()
        await asyncio.gather(*(w.barrier() for w in self.controller.workers.values()))
        return queries

    def routers(self, key: str) -> DryRunRouter:
        router = self.actuators[key].inner.router
        assert isinstance(router, DryRunRouter)
        return router

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    async def canary(self, ns: str = "orion", name: str = "auth-service") -> dict[str, Any]:
        resp = await self.client.get(f"/api/v1/canaries/{ns}/{name}")
        assert resp.status == 200
        return dict(await resp.json())

    async def all_canaries(self) -> list[dict[str, Any]]:
        resp = await self.client.get("/api/v1/canaries")
        return list((await resp.json())["canaries"])

    async def post(self, ns: str, name: str, verb: str, *, token: str | None = None) -> aiohttp.ClientResponse:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.client.post(f"/api/v1/canaries/{ns}/{name}/{verb}", headers=headers)

    async def alert(self, payload: Any, *, token: str | None = None, raw: bytes | None = None
                    ) -> aiohttp.ClientResponse:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        body = raw if raw is not None else json.dumps(payload).encode()
        return await self.client.post(WEBHOOK, data=body, headers=headers)


async def _stack(aiohttp_client: Any, *, webhook_token: str | None = None, api_token: str | None = None
                 ) -> AsyncIterator[Stack]:
    clock = Clock()
    fake = FakePrometheus(clock)
    await fake.start()
    config = parse_config({**CONFIG, "prometheus": {**CONFIG["prometheus"], "url": fake.url}})
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    actuators: dict[str, SwitchableActuator] = {}

    def factory(c: CanaryConfig) -> Actuator:
        router = DryRunRouter(namespace=c.namespace, route=c.route, stable_backend="stable", canary_backend="canary")
        actuators[c.key] = SwitchableActuator(RouterActuator(router))
        return actuators[c.key]

    async with aiohttp.ClientSession() as session:
        prometheus = PrometheusClient(session, fake.url, timeout=2.0, retries=0,
                                      on_error=lambda e: metrics.prometheus_error(
                                          {"prometheus": "api"}.get(e.kind, e.kind)))
        controller = Controller(config, metrics=metrics, prometheus=prometheus, actuator_factory=factory,
                                clock=clock)
        await controller.start()
        app = make_app(controller, registry, webhook_token=webhook_token, api_token=api_token)
        client = await aiohttp_client(app)
        try:
            yield Stack(client, controller, registry, fake, clock, actuators)
        finally:
            await controller.stop()
            await fake.stop()


@pytest.fixture
async def stack(aiohttp_client: Any) -> AsyncIterator[Stack]:
    async for s in _stack(aiohttp_client):
        yield s


@pytest.fixture
async def secured(aiohttp_client: Any) -> AsyncIterator[Stack]:
    async for s in _stack(aiohttp_client, webhook_token=WEBHOOK_TOKEN, api_token=API_TOKEN):
        yield s


def alert(alertname: str = "CanaryHighErrorRate", *, status: str = "firing", canary: str | None = "auth-service",
          namespace: str | None = "orion", fingerprint: str = "a1b2c3d4e5f60718",
          starts_at: str = "2024-05-01T12:00:00.123456789Z", **labels: str) -> dict[str, Any]:
    all_labels = {"alertname": alertname, "severity": "critical", **labels}
    if canary is not None:
        all_labels["canary"] = canary
    if namespace is not None:
        all_labels["namespace"] = namespace
    return {"status": status, "labels": all_labels, "annotations": {"summary": "5xx above 5 %"},
            "startsAt": starts_at,
            "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2024-05-01T12:05:00Z",
            "generatorURL": "http://prometheus/graph", "fingerprint": fingerprint}


def message(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {"version": "4", "groupKey": "{}:{alertname=\"CanaryHighErrorRate\"}", "truncatedAlerts": 0,
            "status": alerts[0]["status"] if alerts else "firing", "receiver": "canaryd",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093", "alerts": list(alerts)}


def received(s: Stack, outcome: str, alertname: str = "CanaryHighErrorRate", status: str = "firing") -> float:
    return s.sample("canaryd_alerts_received_total", alertname=alertname, status=status, outcome=outcome)


def _state(canaries: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(c["namespace"], c["name"], c["phase"], c["weight"], c["step"], len(c["history"])) for c in canaries]


# ---------------------------------------------------------------------------------------------- webhook


async def test_firing_alert_rolls_back_and_its_redelivery_is_a_duplicate(stack: Stack) -> None:
    assert (await stack.post("orion", "auth-service", "start")).status == 200
    resp = await stack.alert(message(alert()))
    assert resp.status == 200
    body = await resp.json()
    assert body["alerts"][0]["outcome"] == "accepted" and body["alerts"][0]["canary"] == "orion/auth-service"
    assert body["alerts"][0]["result"] == "rollback applied"
    status = await stack.canary()
    assert status["phase"] == "rolled_back" and status["weight"] == 0
    assert status["last_decision"]["trigger"] == "alert"
    assert "CanaryHighErrorRate" in status["last_decision"]["reasons"][0]
    assert stack.routers("orion/auth-service").history[-1].canary_weight == 0
    assert received(stack, "accepted") == 1
    assert stack.sample("canaryd_rollbacks_total", namespace="orion", canary="auth-service", trigger="alert") == 1

    before = await stack.all_canaries()
    resp = await stack.alert(message(alert()))  # Alertmanager redelivers the group
    assert resp.status == 200 and (await resp.json())["alerts"][0]["outcome"] == "duplicate"
    assert await stack.all_canaries() == before
    assert received(stack, "duplicate") == 1
    assert stack.sample("canaryd_rollbacks_total", namespace="orion", canary="auth-service", trigger="alert") == 1


async def test_resolved_alert_is_recorded_but_undoes_nothing(stack: Stack) -> None:
    await stack.post("orion", "auth-service", "start")
    before = await stack.all_canaries()
    resp = await stack.alert(message(alert(status="resolved")))
    assert resp.status == 200 and (await resp.json())["alerts"][0]["outcome"] == "ignored_resolved"
    assert await stack.all_canaries() == before
    assert received(stack, "ignored_resolved", status="resolved") == 1


@pytest.mark.parametrize(("payload", "outcome", "alertname"), [
    (alert(canary="no-such-service"), "unknown_canary", "CanaryHighErrorRate"),
    (alert(namespace="elsewhere"), "unknown_canary", "CanaryHighErrorRate"),
    (alert(canary=None), "no_canary_label", "CanaryHighErrorRate"),
    (alert("DiskAlmostFull"), "unknown_alertname", "other"),  # names without a rule share one series
])
async def test_alerts_that_match_nothing_change_nothing(stack: Stack, payload: dict[str, Any], outcome: str,
                                                        alertname: str) -> None:
    await stack.post("orion", "auth-service", "start")
    before = await stack.all_canaries()
    resp = await stack.alert(message(payload))
    assert resp.status == 200
    assert (await resp.json())["alerts"][0]["outcome"] == outcome
    assert await stack.all_canaries() == before
    assert received(stack, outcome, alertname=alertname) == 1
    assert received(stack, "accepted") == 0


async def test_a_hold_alert_pauses_the_canary(stack: Stack) -> None:
    await stack.post("shop", "cart", "start")
    resp = await stack.alert(message(alert("CanaryLatencyHigherThanStable", canary=None, namespace="shop",
                                           service="cart")))
    assert resp.status == 200 and (await resp.json())["alerts"][0]["result"] == "pause applied"
    status = await stack.canary("shop", "cart")
    assert status["phase"] == "paused" and status["weight"] == 5
    assert "CanaryLatencyHigherThanStable" in status["paused_reason"]


async def test_an_alert_for_an_idle_canary_is_accepted_without_change(stack: Stack) -> None:
    before = await stack.all_canaries()
    resp = await stack.alert(message(alert()))
    assert resp.status == 200
    assert (await resp.json())["alerts"][0]["result"].startswith("no change: nothing to roll back")
    assert await stack.all_canaries() == before


@pytest.mark.parametrize("raw", [
    b"{not json",
    b"\xff\xfe",
    b"[]",
    json.dumps({"version": "3", "alerts": []}).encode(),
    json.dumps({"version": "4", "alerts": [{"status": "firing", "labels": {}, "startsAt": "yesterday"}]}).encode(),
])
async def test_malformed_payloads_are_400_with_a_json_error(stack: Stack, raw: bytes) -> None:
    await stack.post("orion", "auth-service", "start")
    before = await stack.all_canaries()
    resp = await stack.alert(None, raw=raw)
    assert resp.status == 400
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert body["error"].startswith("malformed Alertmanager payload: ")
    assert await stack.all_canaries() == before
    assert received(stack, "malformed", alertname="unknown", status="unknown") == 1


async def test_bearer_token_is_required_when_configured(secured: Stack) -> None:
    await secured.post("orion", "auth-service", "start", token=API_TOKEN)
    before = await secured.all_canaries()
    for token in (None, "wrong", WEBHOOK_TOKEN + "x", API_TOKEN):
        resp = await secured.alert(message(alert()), token=token)
        assert resp.status == 401, token
        assert (await resp.json())["error"] == "missing or wrong bearer token"
    resp = await secured.client.post(WEBHOOK, data=json.dumps(message(alert())),
                                     headers={"Authorization": f"Basic {WEBHOOK_TOKEN}"})
    assert resp.status == 401
    assert await secured.all_canaries() == before
    assert received(secured, "unauthorized", alertname="unknown", status="unknown") == 5
    resp = await secured.alert(message(alert()), token=WEBHOOK_TOKEN)
    assert resp.status == 200 and (await secured.canary())["phase"] == "rolled_back"


async def test_a_body_over_1_mib_is_413(stack: Stack) -> None:
    await stack.post("orion", "auth-service", "start")
    before = await stack.all_canaries()
    payload = message(alert())
    payload["commonAnnotations"] = {"padding": "x" * (1024 * 1024)}
    raw = json.dumps(payload).encode()
    resp = await stack.alert(None, raw=raw)
    assert resp.status == 413
    assert "1 MiB" in (await resp.json())["error"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while reading
        for i in range(0, len(raw), 64 * 1024):
            yield raw[i:i + 64 * 1024]

    resp = await stack.client.post(WEBHOOK, data=chunks(), headers={"Content-Type": "application/json"})
    assert resp.status == 413
    assert "1 MiB" in (await resp.json())["error"]
    assert await stack.all_canaries() == before
    assert received(stack, "too_large", alertname="unknown", status="unknown") == 2
    # Just under the limit is fine.
    payload["commonAnnotations"] = {"padding": "x" * (1024 * 1024 - 2048)}
    assert (await stack.alert(payload)).status == 200


async def test_a_follower_takes_the_alert_and_pause_but_not_the_verbs_that_advance(stack: Stack) -> None:
    await stack.post("orion", "auth-service", "start")
    await stack.post("shop", "cart", "start")
    stack.controller.leadership.set(False)
    # The safe directions are taken by any replica, written to the route before the 200.
    resp = await stack.alert(message(alert()))
    assert resp.status == 200 and (await resp.json())["alerts"][0]["result"] == "rollback applied"
    assert (await stack.canary())["phase"] == "rolled_back"
    assert stack.routers("orion/auth-service").history[-1].canary_weight == 0
    assert received(stack, "accepted") == 1 and received(stack, "not_leader") == 0
    resp = await stack.post("shop", "cart", "pause")
    assert resp.status == 200 and (await resp.json())["phase"] == "paused"
    assert stack.routers("shop/cart").history[-1].state["phase"] == "paused"  # saved: the leader sees it
    # Start, resume and promote advance a rollout: the leader's.
    resp = await stack.post("shop", "cart", "resume")
    assert resp.status == 503 and "not the leader" in (await resp.json())["error"]
    assert (await stack.canary("shop", "cart"))["phase"] == "paused"
    stack.controller.leadership.set(True)
    assert (await stack.post("shop", "cart", "resume")).status == 200


async def test_a_failed_route_write_is_503_so_alertmanager_retries(stack: Stack) -> None:
    await stack.post("orion", "auth-service", "start")
    stack.actuators["orion/auth-service"].failing = True
    resp = await stack.alert(message(alert()))
    assert resp.status == 503
    body = await resp.json()
    assert "retry" in body["error"] and "connection refused" in body["alerts"][0]["result"]
    ready = await stack.client.get("/readyz")  # still ready: the retry must reach this replica
    assert ready.status == 200 and "connection refused" in " ".join((await ready.json())["problems"])
    # The rollback is kept (traffic must leave a bad canary) and retried; the redelivery is not a duplicate.
    stack.actuators["orion/auth-service"].failing = False
    resp = await stack.alert(message(alert()))
    assert resp.status == 200 and (await resp.json())["alerts"][0]["outcome"] == "accepted"
    assert stack.routers("orion/auth-service").history[-1].canary_weight == 0
    assert (await (await stack.client.get("/readyz")).json())["healthy"] is True


async def test_several_alerts_in_one_message_each_get_their_outcome(stack: Stack) -> None:
    await stack.post("orion", "auth-service", "start")
    resp = await stack.alert(message(alert(), alert("Unrelated", fingerprint="ff"),
                                     alert(canary="ghost", fingerprint="ee")))
    assert resp.status == 200
    assert [a["outcome"] for a in (await resp.json())["alerts"]] == ["accepted", "unknown_alertname",
                                                                     "unknown_canary"]


# ---------------------------------------------------------------------------------------------- API


async def test_list_and_get_canaries(stack: Stack) -> None:
    canaries = await stack.all_canaries()
    assert [(c["namespace"], c["name"]) for c in canaries] == [("orion", "auth-service"), ("shop", "cart")]
    one = await stack.canary()
    for key in ("namespace", "name", "phase", "weight", "step", "step_started_at", "last_decision", "history"):
        assert key in one, key
    assert (one["phase"], one["weight"], one["step"], one["history"]) == ("idle", 0, -1, [])
    resp = await stack.client.get("/api/v1/canaries/orion/nope")
    assert resp.status == 404
    assert "no canary orion/nope; configured: orion/auth-service, shop/cart" == (await resp.json())["error"]


async def test_commands_walk_a_rollout_and_invalid_transitions_are_409(stack: Stack) -> None:
    resp = await stack.post("orion", "auth-service", "promote")
    assert resp.status == 409 and "cannot promote: the canary is idle" in (await resp.json())["error"]

    resp = await stack.post("orion", "auth-service", "start")
    assert resp.status == 200
    body = await resp.json()
    assert (body["phase"], body["weight"], body["step"]) == ("progressing", 5, 0)
    assert body["step_started_at"] is not None and body["history"][0]["decision"] == "start"
    assert stack.routers("orion/auth-service").history[-1].canary_weight == 5
    assert stack.routers("orion/auth-service").history[-1].state["step"] == 0  # state written with the weight

    # A repeated verb is a no-op answered 200 with the canary and why nothing changed.
    for verb in ("start", "resume"):
        resp = await stack.post("orion", "auth-service", verb)
        body = await resp.json()
        assert resp.status == 200 and body["phase"] == "progressing" and body["unchanged"] == "already progressing at 5 %"
    assert [h.canary_weight for h in stack.routers("orion/auth-service").history] == [5]
    resp = await stack.post("orion", "auth-service", "pause")
    assert resp.status == 200 and (await resp.json())["phase"] == "paused"
    resp = await stack.post("orion", "auth-service", "pause")
    assert resp.status == 200 and (await resp.json())["unchanged"] == "already paused"
    resp = await stack.post("orion", "auth-service", "resume")
    assert resp.status == 200 and (await resp.json())["phase"] == "progressing"
    resp = await stack.post("orion", "auth-service", "promote")
    assert resp.status == 200
    body = await resp.json()
    assert body["phase"] == "succeeded" and body["weight"] == 0  # dry run: the promotion finishes at once
    assert stack.sample("canaryd_promotions_total", namespace="orion", canary="auth-service") == 1
    resp = await stack.post("orion", "auth-service", "rollback")
    assert resp.status == 409 and "nothing to roll back" in (await resp.json())["error"]
    resp = await stack.post("orion", "auth-service", "promote")
    assert resp.status == 200 and (await resp.json())["unchanged"] == "already succeeded"

    resp = await stack.post("orion", "auth-service", "start")  # a new rollout after a finished one
    assert resp.status == 200
    resp = await stack.post("orion", "auth-service", "rollback")
    assert resp.status == 200 and (await resp.json())["phase"] == "rolled_back"
    resp = await stack.post("orion", "auth-service", "rollback")
    assert resp.status == 200 and (await resp.json())["unchanged"] == "already rolled_back"
    assert stack.sample("canaryd_rollbacks_total", namespace="orion", canary="auth-service", trigger="manual") == 1
    # The other canary was never touched.
    assert (await stack.canary("shop", "cart"))["phase"] == "idle"


async def test_unknown_canaries_verbs_and_methods_get_json_errors(stack: Stack) -> None:
    resp = await stack.post("orion", "ghost", "start")
    assert resp.status == 404 and "no canary orion/ghost" in (await resp.json())["error"]
    resp = await stack.post("orion", "auth-service", "explode")
    assert resp.status == 404 and "error" in await resp.json()
    resp = await stack.client.get("/api/v1/canaries/orion/auth-service/start")
    assert resp.status == 405 and "error" in await resp.json()
    resp = await stack.client.get(WEBHOOK)
    assert resp.status == 405 and "error" in await resp.json()


async def test_api_token_guards_commands_not_reads(secured: Stack) -> None:
    for token in (None, "wrong", WEBHOOK_TOKEN):
        resp = await secured.post("orion", "auth-service", "start", token=token)
        assert resp.status == 401 and (await resp.json())["error"] == "missing or wrong bearer token"
    assert (await secured.canary())["phase"] == "idle"
    assert (await secured.client.get("/api/v1/canaries")).status == 200
    resp = await secured.post("orion", "auth-service", "start", token=API_TOKEN)
    assert resp.status == 200 and (await resp.json())["phase"] == "progressing"


async def test_commands_wait_for_their_change(stack: Stack) -> None:
    """Concurrent commands are applied one at a time by the canary's task: exactly one start acts."""
    responses = await asyncio.gather(*(stack.post("orion", "auth-service", "start") for _ in range(5)))
    bodies = [await r.json() for r in responses]
    assert [r.status for r in responses] == [200] * 5
    assert sum("unchanged" in b for b in bodies) == 4
    assert [h.canary_weight for h in stack.routers("orion/auth-service").history] == [5]


# ---------------------------------------------------------------------------------------------- ticks and readiness


async def test_ticks_judge_progressing_canaries_with_one_query_per_metric(stack: Stack) -> None:
    await stack.post("orion", "auth-service", "start")
    await stack.post("shop", "cart", "start")
    assert await stack.tick() == 4  # requests, errors, successes, buckets: all canaries at once
    await stack.tick()
    await stack.tick()
    status = await stack.canary()
    assert status["last_decision"]["decision"] == "hold", status["last_decision"]["reasons"]  # step_duration is 10 s
    assert {m["name"] for m in status["last_decision"]["metrics"]} >= {"error_rate", "latency_p99"}
    assert stack.sample("canaryd_decisions_total", namespace="orion", canary="auth-service", decision="hold") >= 1


async def test_ticks_walk_a_healthy_canary_to_promotion_and_count_each_decision_once(stack: Stack) -> None:
    await stack.post("shop", "cart", "start")
    for _ in range(60):
        await stack.tick()
        if (await stack.canary("shop", "cart"))["phase"] != "progressing":
            break
    status = await stack.canary("shop", "cart")
    assert status["phase"] == "succeeded", status["last_decision"]
    advances = [h for h in status["history"] if h["decision"] == "advance"]
    assert [h["weight"] for h in advances] == [5, 25, 50, 100]
    written = [h.canary_weight for h in stack.routers("shop/cart").history]
    assert [w for i, w in enumerate(written) if i == 0 or written[i - 1] != w] == [5, 25, 50, 100, 0]
    assert stack.routers("shop/cart").history[-1].state["phase"] == "succeeded"
    labels = {"namespace": "shop", "canary": "cart"}
    assert stack.sample("canaryd_decisions_total", decision="advance", **labels) == 4
    assert stack.sample("canaryd_promotions_total", **labels) == 1
    assert stack.sample("canaryd_canary_phase", phase="succeeded", **labels) == 1
    assert stack.sample("canaryd_canary_weight", **labels) == 0


async def test_a_failed_rollback_write_is_retried_by_the_ticks(stack: Stack) -> None:
    await stack.post("orion", "auth-service", "start")
    stack.actuators["orion/auth-service"].failing = True
    resp = await stack.post("orion", "auth-service", "rollback")
    assert resp.status == 503 and "could not be made" in (await resp.json())["error"]
    assert (await stack.canary())["phase"] == "rolled_back"  # decided, and shown, even though not yet written
    assert stack.routers("orion/auth-service").history[-1].canary_weight == 5
    await stack.tick()
    assert stack.routers("orion/auth-service").history[-1].canary_weight == 5  # still failing
    resp = await stack.post("orion", "auth-service", "rollback")  # a repeated rollback is not a 409 meanwhile
    assert resp.status == 503
    stack.actuators["orion/auth-service"].failing = False
    await stack.tick()
    assert stack.routers("orion/auth-service").history[-1].canary_weight == 0
    assert (await (await stack.client.get("/readyz")).json())["healthy"] is True
    assert stack.sample("canaryd_rollbacks_total", namespace="orion", canary="auth-service", trigger="manual") == 1


async def test_readyz_says_prometheus_is_unreachable_and_recovers(stack: Stack) -> None:
    health = await stack.client.get("/healthz")
    assert health.status == 200 and await health.json() == {"status": "ok"}
    await stack.post("orion", "auth-service", "start")
    await stack.tick()
    resp = await stack.client.get("/readyz")
    assert resp.status == 200 and (await resp.json())["ready"] is True

    await stack.prometheus.stop()
    errors_before = sum(stack.sample("canaryd_prometheus_errors_total", kind=k) for k in ("connection", "timeout"))
    await stack.tick()
    resp = await stack.client.get("/readyz?verbose")  # ready (the webhook works), not healthy
    assert resp.status == 200
    body = await resp.json()
    assert body["ready"] is True and body["healthy"] is False
    assert any("Prometheus unreachable" in p for p in body["problems"])
    assert "Prometheus unreachable" in body["components"]["prometheus"]
    assert sum(stack.sample("canaryd_prometheus_errors_total", kind=k) for k in ("connection", "timeout")) \
        > errors_before
    status = await stack.canary()
    assert status["phase"] == "progressing" and status["step"] == 0
    assert status["history"][-1]["trigger"] == "source"
    assert (await stack.client.get("/healthz")).status == 200  # alive, only not ready

    await stack.prometheus.start()
    await stack.tick()
    resp = await stack.client.get("/readyz")
    assert resp.status == 200 and (await resp.json())["problems"] == []


async def test_readyz_recovers_when_no_canary_needs_prometheus_any_more(stack: Stack) -> None:
    await stack.post("orion", "auth-service", "start")
    await stack.prometheus.stop()
    await stack.tick()
    assert (await (await stack.client.get("/readyz")).json())["healthy"] is False
    await stack.post("orion", "auth-service", "rollback")
    await stack.prometheus.start()
    await stack.tick()  # nothing is progressing: the old reason must not stick
    resp = await stack.client.get("/readyz")
    assert resp.status == 200 and (await resp.json())["healthy"] is True, await resp.text()


# ---------------------------------------------------------------------------------------------- /metrics


@pytest.mark.skipif(not os.access(PROMTOOL, os.X_OK), reason="promtool not installed")
async def test_metrics_pass_promtool_after_activity(stack: Stack) -> None:
    await stack.post("orion", "auth-service", "start")
    for _ in range(3):
        await stack.tick()
    await stack.alert(message(alert()))
    await stack.alert(message(alert()))
    await stack.alert(None, raw=b"{")
    await stack.post("shop", "cart", "start")
    await stack.post("shop", "cart", "promote")
    resp = await stack.client.get("/metrics")
    assert resp.status == 200 and resp.content_type == "text/plain"
    text = await resp.text()
    for name in ("canaryd_canary_weight", "canaryd_canary_phase", "canaryd_decisions_total",
                 "canaryd_rollbacks_total", "canaryd_promotions_total", "canaryd_metric_verdict",
                 "canaryd_analysis_duration_seconds", "canaryd_alerts_received_total",
                 "canaryd_prometheus_errors_total", "canaryd_router_updates_total", "canaryd_build_info"):
        assert f"# TYPE {name} " in text, name
    check = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert check.returncode == 0 and check.stdout == "" and check.stderr == "", check.stdout + check.stderr


async def test_metrics_are_sent_in_pieces_as_made_and_read_as_the_whole_text(stack: Stack) -> None:
    """The answer is streamed (chunked, no Content-Length: the daemon never holds a 10 MB body at 10,000
    canaries), and reads as the text `render` makes in one go."""
    from canaryd.exposition import render

    m = stack.controller.metrics
    for i in range(300):  # many steps of the scrape
        m.observe_decision("ns", f"c{i}", "hold", [("error_ratio", "inconclusive", 0.5, 1.2)])
    resp = await stack.client.get("/metrics")
    body = await resp.read()
    assert resp.status == 200 and resp.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in resp.headers and resp.headers["Content-Type"] == render(stack.registry)[1]
    assert body.count(b"# TYPE canaryd_metric_verdict ") == 1 and body.count(b'canary="c299"') >= 1
    assert body == render(stack.registry)[0]


async def test_a_metrics_answer_that_fails_midway_is_cut_short_not_ended(stack: Stack) -> None:
    """Once the headers are sent a failure cannot become a 500: the answer is cut off, so that the scrape fails
    instead of storing part of the text as if it were all."""
    async def failing(accept: str | None = None, **_: object) -> AsyncIterator[bytes]:
        yield b"# HELP canaryd_up up\n"
        raise RuntimeError("a bug in the middle of a scrape")

    stack.controller.metrics.stream = failing  # type: ignore[method-assign]
    resp = await stack.client.get("/metrics")
    assert resp.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()
    assert (await stack.client.get("/healthz")).status == 200  # the daemon goes on


@pytest.mark.parametrize("errors", ["1e15", "1e308"])
async def test_impossible_prometheus_totals_hold_with_the_reason_and_are_counted(stack: Stack, errors: str) -> None:
    """More 5xx than requests, or totals no float counts, are a fault of the source: a hold, never a rollback."""
    await stack.post("orion", "auth-service", "start")
    await stack.tick()
    stack.prometheus.canary_errors = errors
    for _ in range(3):
        await stack.tick()
    status = await stack.canary()
    assert status["phase"] == "progressing"
    assert status["last_decision"]["decision"] == "hold"
    assert "impossible data for the canary arm" in status["last_decision"]["reasons"][0]
    assert stack.sample("canaryd_prometheus_errors_total", kind="bad_response") >= 3
    assert stack.sample("canaryd_rollbacks_total", namespace="orion", canary="auth-service", trigger="analysis") == 0
    assert (await stack.client.get("/metrics")).status == 200
    stack.prometheus.canary_errors = None
    await stack.tick()
    assert (await stack.canary())["last_decision"]["decision"] == "hold"
    assert "impossible" not in (await stack.canary())["last_decision"]["reasons"][0]


# ---------------------------------------------------------------------------------------------- honest answers


async def test_a_command_that_outlives_its_wait_is_202_with_where_to_look_and_is_applied(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not "503 retry" for a change that is made later anyway (the retry would then get 409)."""
    import canaryd.controller as controller_module
    monkeypatch.setattr(controller_module, "COMMAND_TIMEOUT", 0.2)
    assert (await stack.post("orion", "auth-service", "start")).status == 200
    release = asyncio.Event()
    actuator = stack.actuators["orion/auth-service"]
    slow_write = actuator.inner.set_weight

    async def held(weight: int, state: Any) -> None:
        await release.wait()  # an API server that takes its time
        await slow_write(weight, state)
    actuator.inner.set_weight = held  # type: ignore[method-assign]
    resp = await stack.post("orion", "auth-service", "rollback")
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert body["queued"] == "rollback" and body["status_url"] == "/api/v1/canaries/orion/auth-service"
    assert resp.headers["Location"] == body["status_url"]
    # An alert for it meanwhile is queued too, not bounced; its redelivery is a duplicate, never a 2nd action.
    resp = await stack.alert(message(alert()))
    assert resp.status == 202 and (await resp.json())["alerts"][0]["result"].startswith("queued")
    release.set()
    await asyncio.gather(*(w.barrier() for w in stack.controller.workers.values()))
    status = await stack.canary()
    assert status["phase"] == "rolled_back" and status["weight"] == 0 and status["pending"] is None
    assert stack.routers("orion/auth-service").history[-1].canary_weight == 0
    resp = await stack.post("orion", "auth-service", "rollback")  # the caller looks again: done, not 409
    assert resp.status == 200 and "unchanged" in await resp.json()


async def test_a_rollback_not_yet_written_shows_the_routes_weight_and_pending(stack: Stack) -> None:
    """The route still sends 5 % to the canary: status and canaryd_canary_weight say so, and "pending"."""
    await stack.post("orion", "auth-service", "start")
    stack.actuators["orion/auth-service"].failing = True
    assert (await stack.post("orion", "auth-service", "rollback")).status == 503
    status = await stack.canary()
    assert (status["weight"], status["pending"]) == (5, "rollback"), status
    assert stack.sample("canaryd_canary_weight", namespace="orion", canary="auth-service") == 5
    await stack.tick()
    assert (await stack.canary())["pending"] == "rollback"
    stack.actuators["orion/auth-service"].failing = False
    await stack.tick()
    status = await stack.canary()
    assert (status["phase"], status["weight"], status["pending"]) == ("rolled_back", 0, None), status
    assert stack.sample("canaryd_canary_weight", namespace="orion", canary="auth-service") == 0
    assert stack.routers("orion/auth-service").history[-1].canary_weight == 0
