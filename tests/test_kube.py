"""canaryd.kube against the fake API server: error mapping (no ApiException leaks), conditional writes
with retry, deployments (images, rollout wait, scale, watch with re-list on 410) and leader election."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from canaryd.kube import (
    VIRTUAL_SERVICE,
    KubeClient,
    KubeConflict,
    KubeError,
    KubeNotFound,
    RolloutFailed,
    RolloutTimeout,
    WatchEvent,
    container_images,
    read_modify_write,
    rollout_status,
)
from canaryd.kube import lazy as kube_module  # the one module that imports kubernetes_asyncio
from fake_kube import FakeKube, deployment_object, weighted_virtual_service

NS = "orion"
DAEMON = Path(__file__).resolve().parents[1] / "daemon" / "canaryd"


def virtual_service(name: str = "auth-service") -> dict[str, Any]:
    return weighted_virtual_service(name, 100, 0, namespace=NS, api="v1")


def deployment(name: str, image: str = "ghcr.io/orion/auth:v1", replicas: int = 2) -> dict[str, Any]:
    return deployment_object(name, image, namespace=NS, replicas=replicas)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------- errors
async def test_errors_name_object_and_verb(fake: FakeKube, kube: KubeClient) -> None:
    with pytest.raises(KubeNotFound) as nf:
        await kube.patch_custom(VIRTUAL_SERVICE, NS, "auth-service", {"spec": {}})
    assert str(nf.value).startswith("VirtualService orion/auth-service patch failed: 404 NotFound: ")
    assert not nf.value.api_missing

    fake.add(virtual_service())
    fake.unserve("networking.istio.io", "v1")
    with pytest.raises(KubeNotFound) as nf:
        await kube.get_custom(VIRTUAL_SERVICE, NS, "auth-service")
    assert nf.value.api_missing
    fake.serve("networking.istio.io", "v1")

    obj = await kube.get_custom(VIRTUAL_SERVICE, NS, "auth-service")
    await kube.patch_custom(VIRTUAL_SERVICE, NS, "auth-service", {"metadata": {"labels": {"a": "b"}}})
    with pytest.raises(KubeConflict) as c:
        await kube.replace_custom(VIRTUAL_SERVICE, NS, "auth-service", obj)  # stale
    assert "VirtualService orion/auth-service replace failed: 409 Conflict" in str(c.value)
    with pytest.raises(KubeConflict) as c:  # a failed `test` is a conflict too
        await kube.patch_custom(VIRTUAL_SERVICE, NS, "auth-service",
                                [{"op": "test", "path": "/metadata/resourceVersion", "value": "1"}])
    assert c.value.status == 422
    with pytest.raises(KubeError) as e:  # a 422 that is not a failed test is not retried
        await kube.patch_custom(VIRTUAL_SERVICE, NS, "auth-service",
                                [{"op": "replace", "path": "/spec/nope", "value": 1}])
    assert type(e.value) is KubeError and e.value.status == 422

    fake.inject_error(500, verb="get")
    with pytest.raises(KubeError) as e:
        await kube.get_deployment(NS, "x")
    assert str(e.value).startswith("Deployment orion/x get failed: 500 InternalError")


async def test_no_client_exception_leaks(fake: FakeKube, tmp_path: Path) -> None:
    """Every failure mode, through every kind of call, comes out as one of our errors."""
    fake.add(deployment("auth-service-canary"))
    fake.inject_error(503, times=100)
    calls: list[Callable[[KubeClient], Awaitable[Any]]] = [
        lambda k: k.get_custom(VIRTUAL_SERVICE, NS, "x"),
        lambda k: k.list_custom(VIRTUAL_SERVICE, NS),
        lambda k: k.create_custom(VIRTUAL_SERVICE, NS, virtual_service("x")),
        lambda k: k.replace_custom(VIRTUAL_SERVICE, NS, "x", virtual_service("x")),
        lambda k: k.patch_custom(VIRTUAL_SERVICE, NS, "x", [{"op": "test", "path": "/a", "value": 1}]),
        lambda k: k.delete_custom(VIRTUAL_SERVICE, NS, "x"),
        lambda k: k.get_deployment(NS, "auth-service-canary"),
        lambda k: k.list_deployments(NS),
        lambda k: k.set_images(NS, "auth-service-canary", {"auth-service": "v2"}),
        lambda k: k.scale(NS, "auth-service-canary", 0),
        lambda k: k.wait_for_rollout(NS, "auth-service-canary", timeout=1),
        lambda k: anext(aiter(k.watch_deployments(NS))),
    ]
    unreachable = tmp_path / "unreachable"
    from fake_kube import write_kubeconfig

    write_kubeconfig(unreachable, f"http://127.0.0.1:{closed_port()}", "t")
    for path in (fake.kubeconfig(tmp_path, "c"), unreachable):
        async with await KubeClient.from_kubeconfig(str(path)) as k:
            for call in calls:
                with pytest.raises(KubeError) as e:
                    await asyncio.wait_for(call(k), 10)
                assert type(e.value).__module__ == "canaryd.kube.errors", repr(e.value)
                assert "failed" in str(e.value)
    with pytest.raises(KubeError, match="kubeconfig .*missing does not exist; point canaryd at a cluster"):
        await KubeClient.from_kubeconfig(str(tmp_path / "missing"))


def test_only_kube_module_imports_kubernetes_asyncio() -> None:
    pattern = re.compile(r"^\s*(import|from)\s+kubernetes_asyncio\b", re.MULTILINE)
    offenders = [str(p.relative_to(DAEMON)) for p in DAEMON.rglob("*.py")
                 if p != Path(kube_module.__file__) and pattern.search(p.read_text())]
    assert offenders == []
    assert Path(kube_module.__file__).parent == DAEMON / "kube"
    assert pattern.search(Path(kube_module.__file__).read_text())


# ---------------------------------------------------------------------- read-modify-write
async def test_read_modify_write_retries_a_conflict(fake: FakeKube, kube: KubeClient) -> None:
    fake.add(virtual_service())
    reads: list[str] = []

    async def read() -> dict[str, Any]:
        obj = await kube.get_custom(VIRTUAL_SERVICE, NS, "auth-service")
        reads.append(obj["metadata"]["resourceVersion"])
        return obj

    def compute(obj: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"op": "test", "path": "/metadata/resourceVersion", "value": obj["metadata"]["resourceVersion"]},
                {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": 5}]

    async def write(ops: list[dict[str, Any]]) -> dict[str, Any]:
        return await kube.patch_custom(VIRTUAL_SERVICE, NS, "auth-service", ops)

    fake.inject_conflict_once("virtualservices", NS, "auth-service")
    result = await read_modify_write(read, compute, write)
    assert result["spec"]["http"][0]["route"][1]["weight"] == 5
    assert reads == ["1", "2"]  # re-read after the conflict
    assert fake.count("patch") == 2

    fake.inject_conflict("virtualservices", NS, "auth-service", times=3)
    with pytest.raises(KubeConflict, match="gave up after 3 attempts"):
        await read_modify_write(read, compute, write, attempts=3)


async def test_merge_patch_is_sent_as_merge_patch(fake: FakeKube, kube: KubeClient) -> None:
    fake.add(virtual_service())
    out = await kube.patch_custom(VIRTUAL_SERVICE, NS, "auth-service", {"metadata": {"annotations": {"a": "1"}}})
    assert out["metadata"]["annotations"] == {"a": "1"}
    assert fake.requests[-1].content_type == "application/merge-patch+json"


# ----------------------------------------------------------------------------- deployments
def test_rollout_status_like_kubectl() -> None:
    def dep(gen: int = 2, **status: int) -> dict[str, Any]:
        return {"metadata": {"generation": gen}, "spec": {"replicas": 3}, "status": status}

    assert rollout_status(dep(observedGeneration=1, replicas=3, updatedReplicas=3, availableReplicas=3))[0] is False
    assert "1 of 3 updated" in rollout_status(dep(observedGeneration=2, replicas=3, updatedReplicas=1))[1]
    assert "old replicas" in rollout_status(dep(observedGeneration=2, replicas=4, updatedReplicas=3))[1]
    assert "2 of 3 updated replicas are available" in rollout_status(
        dep(observedGeneration=2, replicas=3, updatedReplicas=3, availableReplicas=2))[1]
    assert rollout_status(dep(observedGeneration=2, replicas=3, updatedReplicas=3, availableReplicas=3))[0]
    assert rollout_status({"metadata": {"generation": 1}, "spec": {"replicas": 0},
                           "status": {"observedGeneration": 1}})[0]


async def test_set_images_wait_and_scale(fake: FakeKube, kube: KubeClient) -> None:
    fake.add(deployment("auth-service-stable"))
    fake.complete_rollout(NS, "auth-service-stable")
    dep = await kube.wait_for_rollout(NS, "auth-service-stable", timeout=1, poll_interval=0.01)
    assert container_images(dep) == {"auth-service": "ghcr.io/orion/auth:v1", "sidecar": "envoy:1.30"}

    dep = await kube.set_images(NS, "auth-service-stable", {"auth-service": "ghcr.io/orion/auth:v2"})
    assert container_images(dep) == {"auth-service": "ghcr.io/orion/auth:v2", "sidecar": "envoy:1.30"}
    assert dep["spec"]["template"]["spec"]["containers"][0]["ports"] == [{"containerPort": 8080}]
    assert dep["metadata"]["generation"] == 2
    with pytest.raises(RolloutTimeout, match="Deployment orion/auth-service-stable rollout did not finish"):
        await kube.wait_for_rollout(NS, "auth-service-stable", timeout=0.05, poll_interval=0.01)

    waiter = asyncio.create_task(kube.wait_for_rollout(NS, "auth-service-stable", timeout=5, poll_interval=0.01))
    await asyncio.sleep(0.05)
    fake.set_deployment_status(NS, "auth-service-stable", observed_generation=2, replicas=3,
                               updated_replicas=2, available_replicas=2)  # old pod still terminating
    await asyncio.sleep(0.05)
    assert not waiter.done()
    fake.complete_rollout(NS, "auth-service-stable")
    assert (await waiter)["status"]["availableReplicas"] == 2

    with pytest.raises(KubeError, match="has no container named app"):
        await kube.set_images(NS, "auth-service-stable", {"app": "x"})

    await kube.scale(NS, "auth-service-stable", 0)
    assert fake.requests[-1].subresource == "scale"
    assert (await kube.get_deployment(NS, "auth-service-stable"))["spec"]["replicas"] == 0


async def test_set_images_retries_when_containers_change_underneath(fake: FakeKube, kube: KubeClient) -> None:
    fake.add(deployment("d"))

    def reorder(obj: dict[str, Any]) -> None:
        obj["spec"]["template"]["spec"]["containers"].reverse()

    fake.inject_conflict_once("deployments", NS, "d", mutate=reorder)
    dep = await kube.set_images(NS, "d", {"auth-service": "v2"})
    assert container_images(dep) == {"sidecar": "envoy:1.30", "auth-service": "v2"}
    assert [r.status for r in fake.writes("canaryd-0")] == [422, 200]


async def test_rollout_failed_condition(fake: FakeKube, kube: KubeClient) -> None:
    fake.add(deployment("d"))
    fake.set_deployment_status(NS, "d", observed_generation=1, conditions=[
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
         "message": 'ReplicaSet "d-123" has timed out progressing.'}])
    with pytest.raises(RolloutFailed, match="timed out progressing"):
        await kube.wait_for_rollout(NS, "d", timeout=5, poll_interval=0.01)


async def test_auto_rollout_for_other_tests(fake: FakeKube, kube: KubeClient) -> None:
    fake.add(deployment("d"))
    fake.auto_rollout = 0.02
    await kube.set_images(NS, "d", {"auth-service": "v3"})
    dep = await kube.wait_for_rollout(NS, "d", timeout=2, poll_interval=0.01)
    assert dep["status"]["observedGeneration"] == 2


# ----------------------------------------------------------------------------------- watch
async def next_event(it: AsyncIterator[WatchEvent]) -> WatchEvent:
    return await asyncio.wait_for(anext(it), 5)


async def test_watch_deployments_relists_after_410(fake: FakeKube, kube: KubeClient) -> None:
    fake.add(deployment("auth-service-canary"))
    fake.add(deployment("auth-service-stable"))
    events = kube.watch_deployments(NS, timeout_seconds=30)
    try:
        first = [await next_event(events) for _ in range(2)]
        assert {(e.type, e.name) for e in first} == {("SYNC", "auth-service-canary"), ("SYNC", "auth-service-stable")}
        pending = asyncio.ensure_future(next_event(events))  # the generator opens the watch on demand
        while fake.watch_count == 0:
            await asyncio.sleep(0.01)
        await kube.set_images(NS, "auth-service-canary", {"auth-service": "v2"})
        ev = await pending
        assert (ev.type, ev.name) == ("MODIFIED", "auth-service-canary")
        assert container_images(ev.object)["auth-service"] == "v2"

        # The stream ends, a deployment goes away unseen and history is compacted: the watch
        # resumes from a resourceVersion that is gone, gets 410, and re-lists.
        fake.close_watches()
        fake.remove("deployments", NS, "auth-service-stable")
        fake.add({**deployment("other"), "metadata": {"name": "other", "namespace": "elsewhere"}})
        fake.compact()
        relisted = [await next_event(events) for _ in range(2)]
        assert [(e.type, e.name) for e in relisted] == [("DELETED", "auth-service-stable"),
                                                       ("SYNC", "auth-service-canary")]
        assert fake.count("list", resource="deployments") == 2
        assert any(r.verb == "watch" and r.status == 200 for r in fake.requests)

        await kube.scale(NS, "auth-service-canary", 5)  # the new watch is live
        ev = await next_event(events)
        assert (ev.type, ev.object["spec"]["replicas"]) == ("MODIFIED", 5)
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def test_watch_one_deployment_resumes_after_server_timeout(fake: FakeKube, kube: KubeClient) -> None:
    fake.add(deployment("a"))
    fake.add(deployment("b"))
    events = kube.watch_deployments(NS, name="a", timeout_seconds=1)
    try:
        assert [(e.type, e.name) for e in [await next_event(events)]] == [("SYNC", "a")]
        pending = asyncio.ensure_future(next_event(events))
        while fake.watch_count == 0:
            await asyncio.sleep(0.01)
        fake.close_watches()  # as if the server's timeout ended the request
        await asyncio.sleep(0.05)
        await kube.scale(NS, "b", 0)  # filtered out
        await kube.scale(NS, "a", 0)
        ev = await pending
        assert (ev.type, ev.name, ev.object["spec"]["replicas"]) == ("MODIFIED", "a", 0)
        assert fake.count("list", resource="deployments") == 1  # resumed, not re-listed
    finally:
        await events.aclose()  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------- leases
async def test_run_leader_election(fake: FakeKube, kube: KubeClient) -> None:
    leading = asyncio.Event()

    async def started() -> None:
        leading.set()
        await asyncio.sleep(3600)

    async def stopped() -> None:
        pass

    task = asyncio.create_task(kube.run_leader_election(
        namespace=NS, lease="canaryd", identity="canaryd-0", on_started_leading=started,
        on_stopped_leading=stopped, lease_duration=3, renew_deadline=2, retry_period=1))
    try:
        await asyncio.wait_for(leading.wait(), 5)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    lease = fake.get_object("leases", NS, "canaryd")
    assert lease is not None and lease["spec"]["holderIdentity"] == "canaryd-0"


async def test_leader_steps_down_when_the_api_server_goes_away(fake: FakeKube, kube: KubeClient) -> None:
    leading = asyncio.Event()
    log: list[str] = []

    async def started() -> None:
        leading.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            log.append("leading task cancelled")
            raise

    async def stopped() -> None:
        log.append("stopped")

    task = asyncio.create_task(kube.run_leader_election(
        namespace=NS, lease="canaryd", identity="canaryd-0", on_started_leading=started,
        on_stopped_leading=stopped, lease_duration=3, renew_deadline=2, retry_period=1))
    await asyncio.wait_for(leading.wait(), 5)
    await fake.stop()
    with pytest.raises(KubeError, match="Lease orion/canaryd renew failed: cannot reach the API server"):
        await asyncio.wait_for(task, 5)
    assert log == ["leading task cancelled", "stopped"]


async def test_leader_steps_down_when_renewals_hang(fake: FakeKube, kube: KubeClient) -> None:
    leading = asyncio.Event()
    stopped = asyncio.Event()

    async def started() -> None:
        leading.set()
        await asyncio.sleep(3600)

    async def on_stopped() -> None:
        stopped.set()

    task = asyncio.create_task(kube.run_leader_election(
        namespace=NS, lease="canaryd", identity="canaryd-0", on_started_leading=started,
        on_stopped_leading=on_stopped, lease_duration=3, renew_deadline=2, retry_period=1))
    await asyncio.wait_for(leading.wait(), 5)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    fake.inject_delay(30, resource="leases", times=100)  # the connection hangs; no error ever comes
    await asyncio.wait_for(task, 6)
    assert stopped.is_set()
    assert loop.time() - t0 < 2 + 0.5  # renew_deadline, well within lease_duration (3 s)
