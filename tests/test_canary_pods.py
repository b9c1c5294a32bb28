"""The canary's pods and versions on a "cluster" (the fake API server), in process with the daemon's own
controller and cluster actuators:

- a rollout never routes to missing pods: the canary is scaled up first, and gets its first weight only
  once its pods are available (within progress_deadline; a hold, with no traffic, otherwise);
- promotion gives stable the canary's whole pod template, not only its images;
- a new canary version during a rollout sends the traffic back to 0 %, then to the first step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from canaryd.controller import Controller
from canaryd.watcher import DeploymentWatcher
from fake_kube import FakeKube, RequestRecord
from http_helpers import until
from test_cli_cluster import deployment, virtual_service
from test_cluster_e2e import NS, add_canary_objects, in_process, route_writes, state_in, weights


def controller_for(fake: FakeKube, tmp_path: Path, name: str, *, leader: bool = True,
                   **settings: Any) -> contextlib.AbstractAsyncContextManager[Controller]:
    """The in-process controller of test_cluster_e2e, its actuators polling the pods every 0.05 s."""
    return in_process(fake, tmp_path, name, leader=leader, poll_interval=0.05, **settings)


async def set_template(fake: FakeKube, name: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Change a Deployment's pod template as a release does (a PUT by client "kubectl"); returns it."""
    dep = fake.get_object("deployments", NS, name)
    assert dep is not None
    change(dep["spec"]["template"])
    async with aiohttp.ClientSession() as s, s.put(f"{fake.url}/apis/apps/v1/namespaces/{NS}/deployments/{name}",
                                                   json=dep, headers={"Authorization": "Bearer kubectl"}) as resp:
        assert resp.status == 200, await resp.text()
        return dict(await resp.json())


def written_weights(fake: FakeKube, name: str) -> list[int]:
    return [s["weight"] for r in route_writes(fake, "me", name) if r.status == 200 and (s := state_in(r))]


def is_scale(r: RequestRecord, deployment_name: str) -> bool:
    return r.is_write and r.resource == "deployments" and r.name == deployment_name and r.subresource == "scale"


def replicas(fake: FakeKube, name: str) -> int:
    dep = fake.get_object("deployments", NS, name)
    assert dep is not None
    return int(dep["spec"]["replicas"])


async def test_a_canary_at_0_replicas_gets_no_traffic_until_its_pods_are_available(tmp_path: Path) -> None:
    async with FakeKube() as fake:
        fake.add(virtual_service("zero", 100, 0))
        fake.add(deployment("zero-stable", "ghcr.io/orion/auth:v1", replicas=3, container="zero"))
        fake.complete_rollout(NS, "zero-stable")
        fake.add(deployment("zero-canary", "ghcr.io/orion/auth:v2", replicas=0, container="zero"))
        fake.complete_rollout(NS, "zero-canary")  # 0 of 0: "rolled out", and no pods at all
        async with controller_for(fake, tmp_path, "zero", interval="1s") as controller:
            status = await controller.command(NS, "zero", "start")
            assert (status["phase"], status["weight"]) == ("progressing", 0), status
            assert replicas(fake, "zero-canary") == 3  # stable's count
            assert weights(fake, "zero") == (100, 0)
            assert "no traffic until the canary's pods are available" in status["history"][-1]["reasons"][0]
            await asyncio.sleep(2.5)  # the pods are not there yet: still nothing for the canary
            assert weights(fake, "zero") == (100, 0)
            assert controller.workers[f"{NS}/zero"].status()["weight"] == 0

            fake.complete_rollout(NS, "zero-canary")  # the 3 new pods are available
            await until(lambda: weights(fake, "zero") == (95, 5), what="the first step's weight")
            status = controller.workers[f"{NS}/zero"].status()
            assert (status["phase"], status["step"], status["weight"]) == ("progressing", 0, 5)
        writes = [r for r in fake.requests if r.is_write and r.token == "me"]
        scale_at = next(i for i, r in enumerate(writes) if is_scale(r, "zero-canary"))
        first_route = next(i for i, r in enumerate(writes) if r.resource == "virtualservices")
        assert scale_at < first_route, [(r.resource, r.name, r.subresource) for r in writes]
        assert [w for w in written_weights(fake, "zero") if w > 0] == [5]
        assert written_weights(fake, "zero")[0] == 0  # the state was saved while waiting, at 0 %


async def test_canary_replicas_and_a_hold_when_the_pods_never_come(tmp_path: Path) -> None:
    async with FakeKube() as fake:
        fake.add(virtual_service("late", 100, 0))
        fake.add(deployment("late-stable", "ghcr.io/orion/auth:v1", replicas=4, container="late"))
        fake.complete_rollout(NS, "late-stable")
        fake.add(deployment("late-canary", "ghcr.io/orion/auth:v2", replicas=0, container="late"))
        async with controller_for(fake, tmp_path, "late", interval="1s", progress_deadline="1s",
                                  canary_replicas=1) as controller:
            await controller.command(NS, "late", "start")
            assert replicas(fake, "late-canary") == 1  # canary_replicas, not stable's 4
            worker = controller.workers[f"{NS}/late"]
            status = await until(lambda: (s := worker.status())["phase"] == "paused" and s, what="the hold")
            assert status["weight"] == 0 and "progress_deadline" in status["paused_reason"], status
            assert weights(fake, "late") == (100, 0)
            assert all(w == 0 for w in written_weights(fake, "late"))


async def test_promotion_copies_the_whole_pod_template(tmp_path: Path) -> None:
    async with FakeKube() as fake:
        add_canary_objects(fake, "envonly")
        env = [{"name": "FEATURE_X", "value": "on"}]

        def release(template: dict[str, Any]) -> None:  # only an env var (and an annotation) change
            template["spec"]["containers"][0]["env"] = env
            template["metadata"]["annotations"] = {"config/hash": "abc"}
        await set_template(fake, "envonly-canary", release)
        fake.complete_rollout(NS, "envonly-canary")
        fake.auto_rollout = 0.0
        async with controller_for(fake, tmp_path, "envonly") as controller:
            await controller.command(NS, "envonly", "start")
            status = await controller.command(NS, "envonly", "promote")
            assert status["phase"] == "succeeded", status
        stable = fake.get_object("deployments", NS, "envonly-stable")
        assert stable is not None
        template = stable["spec"]["template"]
        assert template["spec"]["containers"][0]["env"] == env
        assert template["metadata"]["annotations"] == {"config/hash": "abc"}
        assert template["metadata"]["labels"] == {"app": "envonly-stable"}  # its selector's label stays its own
        assert weights(fake, "envonly") == (100, 0)


async def test_a_new_canary_version_mid_rollout_sends_the_traffic_back_to_the_start(tmp_path: Path) -> None:
    async with FakeKube() as fake:
        add_canary_objects(fake, "newver")
        async with controller_for(fake, tmp_path, "newver", interval="1s") as controller:
            watcher = DeploymentWatcher(controller)
            dep = fake.get_object("deployments", NS, "newver-canary")
            assert dep is not None
            await watcher.observe("SYNC", dep)
            await controller.command(NS, "newver", "start")
            await controller.command(NS, "newver", "pause")  # stands in for the analysis reaching 50 %
            before = len(route_writes(fake, "me", "newver"))

            dep = await set_template(fake, "newver-canary", lambda t: t["spec"]["containers"][0].update(
                image="ghcr.io/orion/auth:v2.0.1"))
            await watcher.observe("MODIFIED", dep)
            worker = controller.workers[f"{NS}/newver"]
            status = worker.status()
            assert (status["phase"], status["step"], status["weight"]) == ("progressing", 0, 0), status
            assert status["history"][-2]["decision"] == "restart"
            assert "changed during the rollout" in status["history"][-2]["reasons"][0]
            assert written_weights(fake, "newver")[before:][:1] == [0]
            assert weights(fake, "newver") == (100, 0)

            fake.complete_rollout(NS, "newver-canary")
            await until(lambda: weights(fake, "newver") == (95, 5), what="the first step again")
            assert written_weights(fake, "newver")[before:] == [0, 5]


async def test_a_restarted_daemon_finds_a_release_still_rolling_out(tmp_path: Path) -> None:
    """The canary's template changed while no daemon watched, and its pods are not available yet: the
    first list counts it as a change, and the rollout starts once they are."""
    async with FakeKube() as fake:
        add_canary_objects(fake, "missed")
        dep = await set_template(fake, "missed-canary", lambda t: t["spec"]["containers"][0].update(
            image="ghcr.io/orion/auth:v3"))
        async with controller_for(fake, tmp_path, "missed", interval="1s") as controller:
            watcher = DeploymentWatcher(controller)
            await watcher.observe("SYNC", dep)
            assert controller.workers[f"{NS}/missed"].status()["phase"] == "idle"
            dep = fake.complete_rollout(NS, "missed-canary")
            await watcher.observe("MODIFIED", dep)
            status = controller.workers[f"{NS}/missed"].status()
            assert (status["phase"], status["weight"]) == ("progressing", 5), status
            assert "ghcr.io/orion/auth:v3" in status["history"][0]["reasons"][0]


async def test_a_restarted_daemon_finds_a_new_version_of_a_rollout_in_progress(tmp_path: Path) -> None:
    """The route's state names the version being judged; at start-up the canary runs another one."""
    async with FakeKube() as fake:
        vs = virtual_service("resumed", 75, 25)
        state = {"phase": "progressing", "step": 1, "weight": 25, "step_started_at": time.time(),
                 "started_at": time.time(), "paused_reason": None, "awaiting_promotion": False,
                 "last_decision": None, "trigger": None, "history": [], "preparing": False, "version": "0123abcd"}
        vs["metadata"]["annotations"] = {"canaryd.io/state": json.dumps(state)}
        fake.add(vs)
        for arm in ("stable", "canary"):
            fake.add(deployment(f"resumed-{arm}", "ghcr.io/orion/auth:v1", container="resumed"))
            fake.complete_rollout(NS, f"resumed-{arm}")
        async with controller_for(fake, tmp_path, "resumed", interval="1s") as controller:
            worker = controller.workers[f"{NS}/resumed"]
            assert (worker.status()["step"], worker.status()["weight"]) == (1, 25)
            dep = fake.get_object("deployments", NS, "resumed-canary")
            assert dep is not None
            await DeploymentWatcher(controller).observe("SYNC", dep)
            status = worker.status()
            assert (status["phase"], status["step"]) == ("progressing", 0), status
            assert status["history"][-2]["decision"] == "restart"
            await until(lambda: weights(fake, "resumed") == (95, 5), what="the first step with the new version")


async def test_a_follower_leaves_a_waiting_rollout_to_the_leader(tmp_path: Path) -> None:
    """A follower sees a rollout waiting for the canary's pods: it never scales, never times it out."""
    async with FakeKube() as fake:
        vs = virtual_service("waits", 100, 0)
        state = {"phase": "progressing", "step": 0, "weight": 0, "step_started_at": time.time(),
                 "started_at": time.time(), "history": [], "preparing": True, "version": "0123abcd"}
        vs["metadata"]["annotations"] = {"canaryd.io/state": json.dumps(state)}
        fake.add(vs)
        fake.add(deployment("waits-stable", "ghcr.io/orion/auth:v1", container="waits"))
        fake.add(deployment("waits-canary", "ghcr.io/orion/auth:v2", replicas=0, container="waits"))
        async with controller_for(fake, tmp_path, "waits", leader=False, interval="1s",
                                  progress_deadline="1s") as controller:
            assert controller.workers[f"{NS}/waits"].status()["preparing"] is True
            await asyncio.sleep(2.5)
            assert controller.workers[f"{NS}/waits"].status()["phase"] == "progressing"
        assert [r for r in fake.requests if r.is_write and r.token == "me"] == []
