"""The Deployment watches follow the configured canaries' namespaces when the config is reloaded.

A canary moved to another namespace by a reload is watched there (a release in the new namespace starts
its rollout), and the old namespace's watch stops: no watch request on it is opened again after the
reload, and the fake sees its connection closed.
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import aiohttp

from canaryd.config import parse_config
from canaryd.kube import KubeClient
from canaryd.watcher import run_watchers
from fake_kube import FakeKube
from http_helpers import until
from test_canary_pods import controller_for
from test_cli_cluster import deployment, virtual_service
from test_cluster_e2e import NS, canary

OTHER = "orion-b"
WATCHER = "watcher"  # the watches' client token, to tell their requests from the controller's


def _in(namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
    moved = copy.deepcopy(obj)
    moved["metadata"]["namespace"] = namespace
    return moved


def _add_objects(fake: FakeKube, name: str, namespace: str) -> None:
    fake.add(_in(namespace, virtual_service(name, 100, 0)))
    for arm in ("stable", "canary"):
        fake.add(_in(namespace, deployment(f"{name}-{arm}", "ghcr.io/orion/auth:v1", container=name)))
        fake.complete_rollout(namespace, f"{name}-{arm}")


def _watches(fake: FakeKube, namespace: str) -> int:
    return sum(1 for r in list(fake.requests)
               if r.token == WATCHER and r.verb == "watch" and r.resource == "deployments"
               and r.namespace == namespace)


async def _release(fake: FakeKube, namespace: str, name: str, image: str) -> None:
    dep = fake.get_object("deployments", namespace, name)
    assert dep is not None
    dep["spec"]["template"]["spec"]["containers"][0]["image"] = image
    url = f"{fake.url}/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
    async with aiohttp.ClientSession() as s, s.put(url, data=json.dumps(dep), headers={
            "Authorization": "Bearer kubectl", "Content-Type": "application/json"}) as resp:
        assert resp.status == 200, await resp.text()
    fake.complete_rollout(namespace, name)


async def test_a_reload_that_moves_a_canary_moves_its_deployment_watch(tmp_path: Path) -> None:
    async with FakeKube() as fake:
        _add_objects(fake, "moved", NS)
        _add_objects(fake, "moved", OTHER)
        async with controller_for(fake, tmp_path, "moved", interval="1s") as controller, \
                await KubeClient.from_kubeconfig(str(fake.kubeconfig(tmp_path, WATCHER))) as kube:
            task = asyncio.create_task(run_watchers(controller, kube))
            try:
                await until(lambda: _watches(fake, NS) >= 1, what="a Deployment watch on the first namespace")
                config = parse_config({"kubernetes": {"enabled": True},
                                       "canaries": [{**canary("moved", interval="1s"), "namespace": OTHER}]},
                                      "test")
                await controller.reload(config)
                await until(lambda: _watches(fake, OTHER) >= 1, timeout=10.0,
                            what="a Deployment watch on the canary's new namespace")
                before = _watches(fake, NS)
                await _release(fake, OTHER, "moved-canary", "ghcr.io/orion/auth:v2")
                worker = controller.workers[f"{OTHER}/moved"]
                await until(lambda: worker.status()["phase"] == "progressing", timeout=10.0,
                            what="the release in the new namespace starting a rollout")
                assert "ghcr.io/orion/auth:v2" in worker.status()["history"][0]["reasons"][0]
                assert f"{NS}/moved" not in controller.workers
                await until(lambda: fake.open_watches("deployments") == [OTHER], timeout=10.0,
                            what="the old namespace's watch closed, the new one's open")
                await asyncio.sleep(1.5)  # more than a pass of the watch loop: a live old watch would re-open
                assert _watches(fake, NS) == before
                assert fake.open_watches("deployments") == [OTHER]
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
