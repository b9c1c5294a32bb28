"""Delivery patterns on a "cluster" (the fake API server) with local HTTP receivers: managed match routes
on Istio and HTTPRoute, a match-only stage, pre_rollout and confirm_promotion gates, rollout windows,
the feature-flag hook and crash loops read from the canary's pods.

Each test drives one CanaryWorker with a cluster actuator (KubeActuator) on a controlled clock; ticks
carry healthy traffic, so the judge advances on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from canaryd.config import ConfigError, parse_config
from canaryd.kube import KubeClient
from canaryd.kube_actuator import KubeActuator, router_for
from canaryd.metrics import Metrics
from canaryd.worker import CanaryWorker, Command, Tick
from fake_kube import FakeKube
from http_helpers import until
from test_cli_cluster import deployment, http_route, virtual_service
from test_cluster_e2e import NS, state_in
from test_worker_timing import arm

MONDAY_3AM = datetime(2026, 11, 30, 3, 0, tzinfo=UTC).timestamp()
SUNDAY_NOON = datetime(2026, 11, 29, 12, 0, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float = MONDAY_3AM) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def canary_config(name: str, mesh: str = "istio", **settings: Any) -> Any:
    c = {"name": name, "namespace": NS, "route": name, "mesh": mesh,
         "stable": {"deployment": f"{name}-stable", "selector": f'job="{name}-stable"'},
         "canary": {"deployment": f"{name}-canary", "selector": f'job="{name}-canary"'},
         "traffic_steps": [5, 25, 50, 100], "step_duration": "10s", "interval": "1s", "min_requests": 100,
         "auto_promote": True, **settings}
    return parse_config({"kubernetes": {"enabled": True}, "canaries": [c]}, "test").canaries[0]


def add_objects(fake: FakeKube, name: str, route: dict[str, Any]) -> None:
    fake.add(route)
    for arm_name in ("stable", "canary"):
        fake.add(deployment(f"{name}-{arm_name}", "ghcr.io/orion/auth:v1", container=name))
        fake.complete_rollout(NS, f"{name}-{arm_name}")


@contextlib.asynccontextmanager
async def worker_for(fake: FakeKube, tmp_path: Path, config: Any,
                     clock: Clock | None = None) -> AsyncIterator[tuple[CanaryWorker, Clock]]:
    clock = clock or Clock()
    async with await KubeClient.from_kubeconfig(str(fake.kubeconfig(tmp_path, "me"))) as kube:
        actuator = KubeActuator(kube, router_for(kube, config), config, poll_interval=0.05)
        worker = CanaryWorker(config, actuator, metrics=Metrics(CollectorRegistry()), notifier=None, clock=clock)
        task = asyncio.create_task(worker.run())
        try:
            yield worker, clock
            # What the worker has queued (a rollback's route writes, say) is finished, as the daemon's stop
            # drains before it cancels: a cancel could cut a write in half.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.barrier(), 5.0)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def tick(worker: CanaryWorker, clock: Clock, n: float = 500) -> None:
    clock.now += 1.0
    worker.post(Tick(clock.now, arm(n), arm(n)))
    await worker.barrier()



async def ticks_until(worker: CanaryWorker, clock: Clock, predicate: Callable[[], Any], limit: int = 400) -> None:
    for _ in range(limit):
        if predicate():
            return
        await tick(worker, clock)
    raise AssertionError(f"never reached: {worker.status()}")


def route_list(fake: FakeKube, plural: str, name: str) -> list[dict[str, Any]]:
    obj = fake.get_object(plural, NS, name)
    assert obj is not None
    return list(obj["spec"]["http" if plural == "virtualservices" else "rules"])


def owned(entries: list[dict[str, Any]]) -> list[str]:
    return [e["name"] for e in entries if str(e.get("name", "")).startswith("canaryd-")]


def others(entries: list[dict[str, Any]], weighted: Callable[[dict[str, Any]], bool]) -> list[str]:
    """Every route canaryd did not create and does not weigh, as its exact JSON text."""
    return [json.dumps(e, sort_keys=False) for e in entries
            if not str(e.get("name", "")).startswith("canaryd-") and not weighted(e)]


class Receiver:
    """A local HTTP receiver answering `status` and recording each JSON body."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.bodies: list[dict[str, Any]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Receiver:
        async def handle(request: web.Request) -> web.Response:
            self.bodies.append(await request.json())
            return web.Response(status=self.status, text="receiver says so")
        app = web.Application()
        app.router.add_post("/{tail:.*}", handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


# ------------------------------------------------------------------------------------- match routes
async def test_istio_gets_the_x_canary_route_first_at_start_and_loses_it_at_the_end(tmp_path: Path) -> None:
    async with FakeKube() as fake:
        add_objects(fake, "auth", virtual_service("auth", 100, 0))  # the user's own x-canary and beta routes
        before = copy.deepcopy(route_list(fake, "virtualservices", "auth"))
        is_weighted = lambda e: "match" not in e  # noqa: E731
        async with worker_for(fake, tmp_path, canary_config("auth")) as (worker, clock):
            await worker.submit(Command("start"))
            http = route_list(fake, "virtualservices", "auth")
            assert http[0]["name"] == "canaryd-x-canary"
            assert http[0]["match"] == [{"headers": {"x-canary": {"exact": "true"}}}]
            assert http[0]["route"] == [{"destination": {"host": "auth", "subset": "canary"}}]
            assert owned(http) == ["canaryd-x-canary"]
            assert others(http, is_weighted) == others(before, is_weighted)
            first = next(r for r in fake.writes("me", resource="virtualservices") if state_in(r))
            assert any(op.get("path") == "/spec/http/0" and op["op"] == "add" for op in first.body)  # same patch
            assert state_in(first)["weight"] == 5
            await ticks_until(worker, clock, lambda: worker.rollout.phase.value == "succeeded")
        after = route_list(fake, "virtualservices", "auth")
        assert owned(after) == []
        assert after == before  # weights back at 100/0: the whole list as it was, byte for byte
        assert json.dumps(after) == json.dumps(before)


async def test_httproute_gets_its_header_rule_and_a_rollback_removes_it(tmp_path: Path) -> None:
    async with FakeKube() as fake:
        add_objects(fake, "pay", http_route("pay", 10000, 0))
        before = copy.deepcopy(route_list(fake, "httproutes", "pay"))
        async with worker_for(fake, tmp_path, canary_config("pay", mesh="gateway-api")) as (worker, clock):
            await worker.submit(Command("start"))
            rules = route_list(fake, "httproutes", "pay")
            assert owned(rules) == ["canaryd-x-canary"] and rules[0]["name"] == "canaryd-x-canary"
            assert rules[0]["matches"] == [{"path": {"type": "PathPrefix", "value": "/"},
                                            "headers": [{"type": "Exact", "name": "x-canary", "value": "true"}]}]
            assert rules[0]["backendRefs"] == [{"name": "pay-canary", "port": 8080, "weight": 1}]
            assert rules[1:][0] == before[0]  # the user's own header rule, untouched
            await tick(worker, clock)
            await worker.submit(Command("rollback", reason="bad canary"))
        after = route_list(fake, "httproutes", "pay")
        assert owned(after) == [] and json.dumps(after) == json.dumps(before)


async def test_a_match_only_beta_stage_runs_before_5_percent_and_shows_in_status(tmp_path: Path) -> None:
    routes = [{"name": "x-canary", "headers": {"x-canary": "true"}},
              {"name": "beta", "headers": {"x-user-tier": "beta"}}]
    async with FakeKube() as fake:
        add_objects(fake, "tier", virtual_service("tier", 100, 0, headers_first=False))
        config = canary_config("tier", match_routes=routes, match_stages=["beta"])
        async with worker_for(fake, tmp_path, config) as (worker, clock):
            status = await worker.submit(Command("start"))
            assert (status["stage"], status["weight"], status["step"]) == ("beta", 0, 0), status
            assert status["steps"] == [0, 5, 25, 50, 100] and status["stages"] == ["beta"]
            http = route_list(fake, "virtualservices", "tier")
            assert owned(http) == ["canaryd-x-canary", "canaryd-beta"]
            assert http[1]["match"] == [{"headers": {"x-user-tier": {"exact": "beta"}}}]
            weighted = [r for r in http if "match" not in r][0]
            assert [d["weight"] for d in weighted["route"]] == [100, 0]
            await ticks_until(worker, clock, lambda: worker.rollout.weight == 5)
            status = worker.status()
            assert (status["stage"], status["step"]) == (None, 1)
            assert [h["decision"] for h in status["history"]].count("advance") == 1


async def test_linkerd_refuses_match_stages_with_a_clear_message() -> None:
    with pytest.raises(ConfigError, match="SMI TrafficSplit .* has no match routes"):
        canary_config("split", mesh="linkerd", match_stages=["x-canary"])


# --------------------------------------------------------------------------------------------- gates
async def test_a_failing_pre_rollout_webhook_means_no_weight_ever_and_a_rollback(tmp_path: Path) -> None:
    async with FakeKube() as fake, Receiver(status=500) as smoke:
        add_objects(fake, "smoke", virtual_service("smoke", 100, 0))
        config = canary_config("smoke", gates={"pre_rollout": {"url": smoke.url, "retries": 1, "timeout": "2s"}})
        async with worker_for(fake, tmp_path, config) as (worker, _clock):
            status = await worker.submit(Command("start"))
            assert (status["gate"], status["weight"]) == ("pre_rollout", 0)
            assert owned(route_list(fake, "virtualservices", "smoke")) == ["canaryd-x-canary"]  # smoke tests use it
            await until(lambda: worker.rollout.phase.value == "rolled_back", what="the rollback")
        assert len(smoke.bodies) == 2 and smoke.bodies[0]["gate"] == "pre_rollout"
        assert smoke.bodies[0]["match_routes"] == [{"name": "x-canary", "headers": {"x-canary": "true"}}]
        written = [s["weight"] for r in fake.writes("me", resource="virtualservices") if (s := state_in(r))]
        assert written and set(written) == {0}, written
        vs = fake.get_object("virtualservices", NS, "smoke")
        assert [d["weight"] for d in [r for r in vs["spec"]["http"] if "match" not in r][0]["route"]] == [100, 0]
        assert owned(vs["spec"]["http"]) == []
        last = worker.status()["last_decision"]
        assert last["trigger"] == "gate" and "pre_rollout gate failed" in last["reasons"][0]


async def test_confirm_promotion_503_holds_at_the_last_step_until_it_answers_200(tmp_path: Path) -> None:
    async with FakeKube() as fake, Receiver(status=503) as confirm:
        add_objects(fake, "conf", virtual_service("conf", 100, 0))
        config = canary_config("conf", gates={"confirm_promotion": {"url": confirm.url, "retries": 0}})
        async with worker_for(fake, tmp_path, config) as (worker, clock):
            await worker.submit(Command("start"))
            await ticks_until(worker, clock, lambda: worker.rollout.gate == "confirm_promotion")
            await until(lambda: len(confirm.bodies) >= 2, what="two confirm attempts")
            for _ in range(20):
                await tick(worker, clock)
            status = worker.status()
            assert (status["phase"], status["weight"], status["gate"]) == ("progressing", 100, "confirm_promotion")
            assert any("confirm_promotion gate failed" in r for h in status["history"] for r in h["reasons"])
            confirm.status = 200
            await until(lambda: worker.rollout.phase.value == "succeeded", what="the promotion")


# ------------------------------------------------------------------------------------------- windows
async def test_outside_its_window_a_healthy_canary_holds_and_inside_it_advances(tmp_path: Path) -> None:
    async with FakeKube() as fake:
        add_objects(fake, "win", virtual_service("win", 100, 0))
        config = canary_config("win", windows=["Mon-Fri 02:00-05:00 UTC"])
        async with worker_for(fake, tmp_path, config, Clock(SUNDAY_NOON)) as (worker, clock):
            await worker.submit(Command("start"))
            for _ in range(60):
                await tick(worker, clock)
            status = worker.status()
            assert (status["step"], status["weight"]) == (0, 5), status
            assert "outside the rollout windows" in status["last_decision"]["reasons"][0]
            clock.now = MONDAY_3AM
            await ticks_until(worker, clock, lambda: worker.rollout.weight == 25)
            # a manual promote is never held by a window
            clock.now = SUNDAY_NOON + 7 * 86400
            await worker.submit(Command("promote"))
            assert worker.rollout.phase.value == "succeeded"


# ------------------------------------------------------------------------------------ feature flags
async def test_the_flag_hook_follows_every_step(tmp_path: Path) -> None:
    async with FakeKube() as fake, Receiver() as flags:
        add_objects(fake, "flag", virtual_service("flag", 100, 0))
        config = canary_config("flag", feature_flags={"url": flags.url, "flag": "new-auth-flow"})
        async with worker_for(fake, tmp_path, config) as (worker, clock):
            await worker.submit(Command("start"))
            await ticks_until(worker, clock, lambda: worker.rollout.phase.value == "succeeded")
            await until(lambda: flags.bodies and flags.bodies[-1]["phase"] == "succeeded", what="the last flag call")
        weights = [b["weight"] for b in flags.bodies if b["phase"] == "progressing"]
        assert weights == [5, 25, 50, 100], weights
        last = flags.bodies[-1]["flags"]["new-auth-flow"]
        assert last["targeting"] == {"fractional": [["on", 100], ["off", 0]]} and last["defaultVariant"] == "on"
        assert flags.bodies[0]["flags"]["new-auth-flow"]["targeting"] == {"fractional": [["on", 5], ["off", 95]]}


# -------------------------------------------------------------------------------------- crash loops
def crash_looping_pod(name: str, app: str, restarts: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": {"app": app}},
            "spec": {"containers": [{"name": "app", "image": "ghcr.io/orion/auth:v2"}]},
            "status": {"phase": "Running", "containerStatuses": [{
                "name": "app", "ready": False, "restartCount": restarts, "image": "ghcr.io/orion/auth:v2",
                "imageID": "", "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}}]}}


async def test_a_canary_pod_in_crashloopbackoff_with_4_restarts_is_rolled_back_within_one_interval(
        tmp_path: Path) -> None:
    async with FakeKube() as fake:
        add_objects(fake, "crash", virtual_service("crash", 100, 0))
        fake.add(crash_looping_pod("crash-other-1", "crash-stable", 9))  # stable's pod: not the canary's
        async with worker_for(fake, tmp_path, canary_config("crash")) as (worker, clock):
            await worker.submit(Command("start"))
            await tick(worker, clock)
            await asyncio.sleep(1.2)
            assert worker.rollout.phase.value == "progressing"
            fake.add(crash_looping_pod("crash-canary-1", "crash-canary", 4))
            seen = time.monotonic()
            await until(lambda: worker.rollout.phase.value == "rolled_back", timeout=3.0, what="the rollback")
            assert time.monotonic() - seen <= 1.0 + 0.3  # one interval (1s), and a little scheduling
            # The phase says rolled_back once decided; the route's write follows (status `pending` meanwhile).

            def weights() -> list[int]:
                vs = fake.get_object("virtualservices", NS, "crash")
                return [d["weight"] for d in [r for r in vs["spec"]["http"] if "match" not in r][0]["route"]]

            await until(lambda: weights() == [100, 0], timeout=3.0, what="the rollback's route write")
        last = worker.status()["last_decision"]
        assert last["trigger"] == "pods" and "CrashLoopBackOff after 4 restarts" in last["reasons"][0]


async def test_a_pre_rollout_job_that_succeeds_lets_the_first_weight_through(tmp_path: Path) -> None:
    async with FakeKube() as fake:
        add_objects(fake, "jobs", virtual_service("jobs", 100, 0))
        job = {"image": "ghcr.io/orion/smoke:1", "command": ["./scripts/smoke-tests.sh", "--target", "canary"]}
        config = canary_config("jobs", gates={"pre_rollout": {"job": job, "timeout": "20s", "retries": 0}})
        async with worker_for(fake, tmp_path, config) as (worker, _clock):
            await worker.submit(Command("start"))
            created = await until(lambda: next((r for r in fake.requests if r.resource == "jobs"
                                                and r.verb == "create" and r.status == 201), None),
                                  what="the gate's Job")
            name = created.body["metadata"]["name"]
            spec = created.body["spec"]["template"]["spec"]
            assert spec["containers"][0]["command"] == job["command"] and spec["restartPolicy"] == "Never"
            env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
            assert env["CANARYD_GATE"] == "pre_rollout" and env["CANARYD_HEADERS"] == "x-canary: true"
            await asyncio.sleep(0.3)
            assert worker.rollout.weight == 0 and worker.rollout.gate == "pre_rollout"
            fake.set_status("jobs", NS, name, {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
            await until(lambda: worker.rollout.weight == 5, what="the first step's weight")
            assert worker.rollout.gate is None


def test_match_routes_copy_the_weighted_routes_matches_and_replace_stale_ones_only() -> None:
    from canaryd.config.model import MatchRoute
    from canaryd.routers.istio import find_istio_route
    from canaryd.routers.matches import istio_owned, istio_route, sync_ops
    from fake_kube import apply_json_patch

    weighted = {"match": [{"uri": {"prefix": "/api"}}], "timeout": "3s", "route": [
        {"destination": {"host": "a", "subset": "stable"}, "weight": 100},
        {"destination": {"host": "a", "subset": "canary"}, "weight": 0}]}
    mine_before = {"name": "canaryd-old", "route": [{"destination": {"host": "a", "subset": "canary"}}]}
    theirs = {"name": "admin", "match": [{"uri": {"prefix": "/admin"}}], "route": [{"destination": {"host": "b"}}]}
    vs = {"metadata": {"resourceVersion": "7"}, "spec": {"http": [theirs, mine_before, weighted]}}
    matches = [MatchRoute("x-canary", (("x-canary", "true"),))]
    pair = find_istio_route(vs, "stable", "canary")
    ops = sync_ops(vs, pair.canary_path, matches, istio_route, istio_owned)
    after = apply_json_patch(vs, ops)
    http = after["spec"]["http"]
    assert [r.get("name") for r in http] == ["canaryd-x-canary", "admin", None]
    assert http[0] == {"name": "canaryd-x-canary", "timeout": "3s",
                       "match": [{"uri": {"prefix": "/api"}, "headers": {"x-canary": {"exact": "true"}}}],
                       "route": [{"destination": {"host": "a", "subset": "canary"}}]}
    assert json.dumps(http[1]) == json.dumps(theirs) and json.dumps(http[2]) == json.dumps(weighted)
    again = find_istio_route(after, "stable", "canary")
    assert sync_ops(after, again.canary_path, matches, istio_route, istio_owned) == []  # nothing to do twice
