"""The fake API server, exercised through kubernetes_asyncio itself over real HTTP and a kubeconfig.

These tests pin the kube-apiserver behaviour canaryd relies on: resourceVersion, 409 on a stale
replace, 422 on a failed JSON-patch test, 404/415 with Status bodies, patch types, watch and 410
Gone, leases and a real LeaderElection run.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.leaderelection import electionconfig, leaderelection
from kubernetes_asyncio.leaderelection.resourcelock.leaselock import LeaseLock

from fake_kube import (
    FakeKube,
    PatchError,
    apply_json_patch,
    apply_merge_patch,
    apply_strategic_merge_patch,
    deployment_object,
    weighted_virtual_service,
)

NS = "orion"
VS = ("networking.istio.io", "v1", NS, "virtualservices")


def virtual_service(name: str = "auth-service") -> dict[str, Any]:
    return weighted_virtual_service(name, 95, 5, namespace=NS, api="v1beta1")


def deployment(name: str = "auth-service-canary", replicas: int = 2) -> dict[str, Any]:
    return deployment_object(name, namespace=NS, replicas=replicas)


@pytest.fixture
async def fake() -> AsyncIterator[FakeKube]:
    async with FakeKube() as f:
        yield f


@pytest.fixture
async def api(fake: FakeKube, tmp_path: Path) -> AsyncIterator[client.ApiClient]:
    c = await config.new_client_from_config(config_file=str(fake.kubeconfig(tmp_path, "alice")))
    try:
        yield c
    finally:
        await c.close()


def status_of(e: ApiException) -> dict[str, Any]:
    return json.loads(e.body)


# ----------------------------------------------------------------------------------- basics
async def test_discovery_and_auth(fake: FakeKube, api: client.ApiClient) -> None:
    groups = await client.ApisApi(api).get_api_versions()
    names = {g.name for g in groups.groups}
    assert {"apps", "coordination.k8s.io", "networking.istio.io", "split.smi-spec.io",
            "gateway.networking.k8s.io"} <= names
    assert fake.count("get", token="alice") == 1 and fake.requests[0].path.rstrip("/") == "/apis"


async def test_resource_version_is_global_and_bumps_on_every_write(fake: FakeKube, api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    fake.add(virtual_service("a"))
    fake.add(virtual_service("b"))
    a = await custom.get_namespaced_custom_object(*VS, "a")
    b = await custom.get_namespaced_custom_object(*VS, "b")
    assert (a["metadata"]["resourceVersion"], b["metadata"]["resourceVersion"]) == ("1", "2")
    assert a["apiVersion"] == "networking.istio.io/v1"  # served in the version asked for

    patched = await custom.patch_namespaced_custom_object(
        *VS, "a", {"metadata": {"labels": {"x": "y"}}}, _content_type="application/merge-patch+json")
    assert patched["metadata"]["resourceVersion"] == "3"
    assert patched["metadata"]["generation"] == 1  # metadata only: generation stays
    patched = await custom.patch_namespaced_custom_object(
        *VS, "a", [{"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 90},
                   {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": 10}])
    assert (patched["metadata"]["resourceVersion"], patched["metadata"]["generation"]) == ("4", 2)
    # one store across versions: v1beta1 sees the write made through v1
    old = await custom.get_namespaced_custom_object("networking.istio.io", "v1beta1", NS, "virtualservices", "a")
    assert old["spec"]["http"][0]["route"][1]["weight"] == 10
    assert old["apiVersion"] == "networking.istio.io/v1beta1"


async def test_replace_with_stale_resource_version_is_409_status(fake: FakeKube, api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    fake.add(virtual_service())
    obj = await custom.get_namespaced_custom_object(*VS, "auth-service")
    obj["spec"]["hosts"] = ["auth-service.orion.svc.cluster.local"]
    replaced = await custom.replace_namespaced_custom_object(*VS, "auth-service", obj)
    assert replaced["metadata"]["resourceVersion"] == "2"
    with pytest.raises(ApiException) as err:
        await custom.replace_namespaced_custom_object(*VS, "auth-service", obj)  # still carries "1"
    assert err.value.status == 409
    status = status_of(err.value)
    assert {k: status[k] for k in ("kind", "apiVersion", "status", "reason", "code")} == {
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409}
    assert "the object has been modified" in status["message"]


async def test_not_found_and_unserved_api_are_404_status(fake: FakeKube, api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    with pytest.raises(ApiException) as err:
        await custom.get_namespaced_custom_object(*VS, "nope")
    status = status_of(err.value)
    assert (err.value.status, status["kind"], status["reason"], status["code"]) == (404, "Status", "NotFound", 404)
    assert status["details"]["name"] == "nope"
    assert status["message"] == 'virtualservices.networking.istio.io "nope" not found'

    fake.unserve("networking.istio.io", "v1")
    with pytest.raises(ApiException) as err:
        await custom.get_namespaced_custom_object(*VS, "nope")
    status = status_of(err.value)
    assert (status["reason"], status["details"]) == ("NotFound", {})  # the API, not the object, is missing


async def test_json_patch_test_failure_is_422_and_applies_nothing(fake: FakeKube, api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    fake.add(virtual_service())
    with pytest.raises(ApiException) as err:
        await custom.patch_namespaced_custom_object(*VS, "auth-service", [
            {"op": "test", "path": "/spec/http/0/route/0/weight", "value": 50},
            {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 0},
        ])
    status = status_of(err.value)
    assert (err.value.status, status["kind"], status["reason"]) == (422, "Status", "Invalid")
    assert "/spec/http/0/route/0/weight" in status["message"]
    stored = fake.get_object("virtualservices", NS, "auth-service")
    assert stored is not None and stored["spec"]["http"][0]["route"][0]["weight"] == 95
    assert stored["metadata"]["resourceVersion"] == "1"
    ok = await custom.patch_namespaced_custom_object(*VS, "auth-service", [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
        {"op": "test", "path": "/spec/http/0/route/0/weight", "value": 95},
        {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 0},
    ])
    assert ok["spec"]["http"][0]["route"][0]["weight"] == 0


async def test_resource_version_in_a_patch_is_a_precondition(fake: FakeKube, api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    fake.add(virtual_service())
    with pytest.raises(ApiException) as err:
        await custom.patch_namespaced_custom_object(
            *VS, "auth-service", {"metadata": {"resourceVersion": "0"}, "spec": {"hosts": []}},
            _content_type="application/merge-patch+json")
    assert err.value.status == 409


async def test_patch_type_follows_content_type(fake: FakeKube, api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    fake.add(virtual_service())
    merged = await custom.patch_namespaced_custom_object(
        *VS, "auth-service", {"metadata": {"annotations": {"a": "1"}}, "spec": {"gateways": ["mesh"]}},
        _content_type="application/merge-patch+json")
    assert merged["spec"]["gateways"] == ["mesh"] and merged["spec"]["hosts"] == ["auth-service"]
    merged = await custom.patch_namespaced_custom_object(
        *VS, "auth-service", {"spec": {"gateways": None}}, _content_type="application/merge-patch+json")
    assert "gateways" not in merged["spec"]  # null deletes
    # a dict without _content_type goes out as a JSON patch, which must be an array: 400
    with pytest.raises(ApiException) as err:
        await custom.patch_namespaced_custom_object(*VS, "auth-service", {"spec": {"hosts": []}})
    assert err.value.status == 400
    assert fake.requests[-1].content_type == "application/json-patch+json"
    # strategic merge is for built-in types only; anything else is 415
    for ctype in ("application/strategic-merge-patch+json", "application/apply-patch+yaml"):
        with pytest.raises(ApiException) as err:
            await custom.patch_namespaced_custom_object(*VS, "auth-service", {"spec": {}}, _content_type=ctype)
        assert err.value.status == 415, ctype
        assert status_of(err.value)["reason"] == "UnsupportedMediaType"


async def test_deployment_strategic_merge_scale_and_status(fake: FakeKube, api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    fake.add(deployment())
    # a dict body is a strategic merge patch for built-in types: containers merge by name
    dep = await apps.patch_namespaced_deployment("auth-service-canary", NS, {"spec": {"template": {"spec": {
        "containers": [{"name": "auth-service", "image": "ghcr.io/orion/auth:v2"}]}}}})
    containers = dep.spec.template.spec.containers
    assert [(c.name, c.image) for c in containers] == [
        ("auth-service", "ghcr.io/orion/auth:v2"), ("sidecar", "envoy:1.30")]
    assert containers[0].ports[0].container_port == 8080
    assert fake.requests[-1].content_type == "application/strategic-merge-patch+json"
    assert (dep.metadata.generation, dep.status.observed_generation) == (2, None)

    fake.set_deployment_status(NS, "auth-service-canary", observed_generation=2, replicas=2,
                               updated_replicas=2, available_replicas=1)
    dep = await apps.read_namespaced_deployment("auth-service-canary", NS)
    assert (dep.status.observed_generation, dep.status.available_replicas) == (2, 1)
    # status written through the main resource is ignored, as with a status subresource
    body = api.sanitize_for_serialization(dep)
    body["status"]["availableReplicas"] = 99
    dep = await apps.replace_namespaced_deployment("auth-service-canary", NS, body)
    assert dep.status.available_replicas == 1

    scale = await apps.read_namespaced_deployment_scale("auth-service-canary", NS)
    assert (scale.spec.replicas, scale.status.selector) == (2, "app=auth-service-canary")
    scale = await apps.patch_namespaced_deployment_scale("auth-service-canary", NS, {"spec": {"replicas": 0}})
    assert scale.spec.replicas == 0
    dep = await apps.read_namespaced_deployment("auth-service-canary", NS)
    assert (dep.spec.replicas, dep.metadata.generation) == (0, 3)
    scale.spec.replicas = 3
    scale = await apps.replace_namespaced_deployment_scale("auth-service-canary", NS, scale)
    assert scale.spec.replicas == 3
    with pytest.raises(ApiException) as err:  # the old resourceVersion again
        await apps.replace_namespaced_deployment_scale("auth-service-canary", NS, {
            "metadata": {"name": "auth-service-canary", "resourceVersion": "1"}, "spec": {"replicas": 1}})
    assert err.value.status == 409


async def test_auto_rollout_completes_status(fake: FakeKube, api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    fake.add(deployment(replicas=3))
    fake.auto_rollout = 0.0
    await apps.patch_namespaced_deployment_scale("auth-service-canary", NS, {"spec": {"replicas": 4}})
    dep = await apps.read_namespaced_deployment("auth-service-canary", NS)
    assert (dep.status.observed_generation, dep.status.updated_replicas, dep.status.available_replicas) == (
        dep.metadata.generation, 4, 4)


# ------------------------------------------------------------------------------------ hooks
async def test_writes_are_counted_per_client_token(fake: FakeKube, tmp_path: Path) -> None:
    fake.add(virtual_service())
    clients = [await config.new_client_from_config(config_file=str(fake.kubeconfig(tmp_path, who)))
               for who in ("replica-0", "replica-1")]
    try:
        a, b = (client.CustomObjectsApi(c) for c in clients)
        await a.get_namespaced_custom_object(*VS, "auth-service")
        await a.patch_namespaced_custom_object(*VS, "auth-service", [
            {"op": "replace", "path": "/spec/hosts", "value": ["x"]}])
        await b.get_namespaced_custom_object(*VS, "auth-service")
    finally:
        for c in clients:
            await c.close()
    assert [w.verb for w in fake.writes("replica-0")] == ["patch"]
    assert fake.writes("replica-1") == []
    path = "/apis/networking.istio.io/v1/namespaces/orion/virtualservices/auth-service"
    assert fake.request_counts()[("get", path)] == 2
    assert fake.count("patch", path=path, token="replica-0") == 1
    assert fake.writes("replica-0")[0].body == [{"op": "replace", "path": "/spec/hosts", "value": ["x"]}]


async def test_requests_without_a_token_are_401(fake: FakeKube, tmp_path: Path) -> None:
    from fake_kube import write_kubeconfig

    cfg = write_kubeconfig(tmp_path / "kc", fake.url, "t")
    text = cfg.read_text().replace("token: t", "username: nobody")
    cfg.write_text(text)
    c = await config.new_client_from_config(config_file=str(cfg))
    try:
        with pytest.raises(ApiException) as err:
            await client.CustomObjectsApi(c).get_namespaced_custom_object(*VS, "auth-service")
        assert err.value.status == 401
    finally:
        await c.close()


async def test_injected_conflict_lands_between_read_and_write(fake: FakeKube, api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    fake.add(virtual_service())
    obj = await custom.get_namespaced_custom_object(*VS, "auth-service")
    fake.inject_conflict_once("VirtualService", NS, "auth-service")
    with pytest.raises(ApiException) as err:
        await custom.replace_namespaced_custom_object(*VS, "auth-service", obj)
    assert err.value.status == 409
    obj = await custom.get_namespaced_custom_object(*VS, "auth-service")
    assert obj["metadata"]["annotations"]["fake-kube/conflict"] == "1"
    await custom.replace_namespaced_custom_object(*VS, "auth-service", obj)  # the next one goes through

    def set_weights(o: dict[str, Any]) -> None:
        o["spec"]["http"][0]["route"][0]["weight"] = 50

    fake.inject_conflict_once("virtualservices", NS, "auth-service", mutate=set_weights)
    with pytest.raises(ApiException) as err:
        await custom.patch_namespaced_custom_object(*VS, "auth-service", [
            {"op": "test", "path": "/spec/http/0/route/0/weight", "value": 95}])
    assert err.value.status == 422


async def test_injected_errors(fake: FakeKube, api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    fake.add(virtual_service())
    fake.inject_error(503, verb="get", resource="virtualservices", times=2, reason="ServiceUnavailable")
    for _ in range(2):
        with pytest.raises(ApiException) as err:
            await custom.get_namespaced_custom_object(*VS, "auth-service")
        assert (err.value.status, status_of(err.value)["reason"]) == (503, "ServiceUnavailable")
    await custom.get_namespaced_custom_object(*VS, "auth-service")


# ------------------------------------------------------------------------------------ watch
async def next_event(stream: Any) -> dict[str, Any]:
    return await asyncio.wait_for(stream.__anext__(), 5)


async def test_watch_streams_changes_and_410_after_compaction(fake: FakeKube, api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    fake.add(virtual_service("a"))
    w = watch.Watch()
    stream = w.stream(custom.list_namespaced_custom_object, *VS, timeout_seconds=10)
    try:
        ev = await next_event(stream)
        assert (ev["type"], ev["object"]["metadata"]["name"]) == ("ADDED", "a")  # initial state
        fake.add(virtual_service("b"))
        await custom.patch_namespaced_custom_object(*VS, "a", {"spec": {"hosts": ["z"]}},
                                                    _content_type="application/merge-patch+json")
        await custom.delete_namespaced_custom_object(*VS, "b")
        seen = [await next_event(stream) for _ in range(3)]
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in seen] == [
            ("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
        assert seen[1]["object"]["spec"]["hosts"] == ["z"]
        assert [e["object"]["metadata"]["resourceVersion"] for e in seen] == ["2", "3", "4"]
    finally:
        await w.close()

    # resuming from a resourceVersion replays what came after it
    w = watch.Watch()
    stream = w.stream(custom.list_namespaced_custom_object, *VS, resource_version="2", timeout_seconds=10)
    try:
        assert [(await next_event(stream))["type"] for _ in range(2)] == ["MODIFIED", "DELETED"]
    finally:
        await w.close()

    fake.compact()
    w = watch.Watch()
    stream = w.stream(custom.list_namespaced_custom_object, *VS, resource_version="2", timeout_seconds=10)
    try:
        with pytest.raises(ApiException) as err:
            await next_event(stream)
        assert err.value.status == 410
        assert "Expired" in err.value.reason
    finally:
        await w.close()
    for _ in range(100):  # the server notices the closed connections
        if fake.watch_count == 0:
            break
        await asyncio.sleep(0.01)
    assert fake.watch_count == 0


async def test_watch_ends_on_timeout_and_close(fake: FakeKube, api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    fake.add(deployment())
    w = watch.Watch()
    stream = w.stream(apps.list_namespaced_deployment, NS, timeout_seconds=1,
                      field_selector="metadata.name=auth-service-canary")
    try:
        ev = await next_event(stream)
        assert ev["object"].metadata.name == "auth-service-canary"  # typed for built-in kinds
        with pytest.raises(StopAsyncIteration):
            await next_event(stream)
    finally:
        await w.close()
    w = watch.Watch()
    stream = w.stream(apps.list_namespaced_deployment, NS, resource_version="1", timeout_seconds=30)
    try:
        task = asyncio.ensure_future(next_event(stream))
        while fake.watch_count == 0:
            await asyncio.sleep(0.01)
        fake.close_watches()
        with pytest.raises(StopAsyncIteration):
            await task
    finally:
        await w.close()


# ----------------------------------------------------------------------------------- leases
async def test_lease_get_create_replace(fake: FakeKube, api: client.ApiClient) -> None:
    coord = client.CoordinationV1Api(api)
    with pytest.raises(ApiException) as err:
        await coord.read_namespaced_lease("canaryd", NS)
    assert err.value.status == 404
    body = client.V1Lease(metadata=client.V1ObjectMeta(name="canaryd"),
                          spec=client.V1LeaseSpec(holder_identity="a", lease_duration_seconds=15))
    created = await coord.create_namespaced_lease(NS, body)
    assert created.spec.holder_identity == "a" and created.kind == "Lease"
    with pytest.raises(ApiException) as err:
        await coord.create_namespaced_lease(NS, body)
    assert (err.value.status, status_of(err.value)["reason"]) == (409, "AlreadyExists")
    lease = await coord.read_namespaced_lease("canaryd", NS)
    lease.spec.holder_identity = "b"
    updated = await coord.replace_namespaced_lease("canaryd", NS, lease)
    assert updated.spec.holder_identity == "b"
    with pytest.raises(ApiException) as err:
        await coord.replace_namespaced_lease("canaryd", NS, lease)  # stale resourceVersion
    assert err.value.status == 409


async def test_leader_election_becomes_leader(fake: FakeKube, api: client.ApiClient) -> None:
    leading = asyncio.Event()

    async def started() -> None:
        leading.set()

    async def stopped() -> None:
        pass

    lock = LeaseLock("canaryd", NS, "replica-0", api)
    cfg = electionconfig.Config(lock, lease_duration=3, renew_deadline=2, retry_period=1,
                                onstarted_leading=started, onstopped_leading=stopped)
    task = asyncio.create_task(leaderelection.LeaderElection(cfg).run())
    try:
        await asyncio.wait_for(leading.wait(), 5)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    lease = fake.get_object("leases", NS, "canaryd")
    assert lease is not None and lease["spec"]["holderIdentity"] == "replica-0"
    assert lease["spec"]["leaseDurationSeconds"] == 3
    assert [w.verb for w in fake.writes("alice", resource="leases")][:1] == ["create"]


# ---------------------------------------------------------------------------- thread mode
def test_runs_in_a_thread_for_sync_code(tmp_path: Path) -> None:
    import urllib.request

    with FakeKube().in_thread() as fake:
        fake.add(virtual_service())
        fake.inject_conflict_once("virtualservices", NS, "auth-service")  # hooks work across threads
        req = urllib.request.Request(
            f"{fake.url}/apis/networking.istio.io/v1beta1/namespaces/{NS}/virtualservices/auth-service",
            headers={"Authorization": "Bearer sync"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert json.load(resp)["metadata"]["name"] == "auth-service"
        assert fake.count("get", token="sync") == 1


# ------------------------------------------------------------------------------ patch algebra
def test_json_patch_operations() -> None:
    doc = {"a": {"b": [1, 2]}, "c": True, "x/y": 1}
    assert apply_json_patch(doc, [{"op": "add", "path": "/a/b/-", "value": 3}])["a"]["b"] == [1, 2, 3]
    assert apply_json_patch(doc, [{"op": "add", "path": "/a/b/0", "value": 0}])["a"]["b"] == [0, 1, 2]
    assert apply_json_patch(doc, [{"op": "remove", "path": "/a/b/1"}])["a"]["b"] == [1]
    assert apply_json_patch(doc, [{"op": "remove", "path": "/x~1y"}]) == {"a": {"b": [1, 2]}, "c": True}
    moved = apply_json_patch(doc, [{"op": "move", "from": "/a/b", "path": "/d"}])
    assert moved["d"] == [1, 2] and moved["a"] == {}
    assert apply_json_patch(doc, [{"op": "copy", "from": "/a/b/0", "path": "/e"}])["e"] == 1
    assert apply_json_patch(doc, [{"op": "test", "path": "/a/b/0", "value": 1.0}]) == doc  # 1 == 1.0
    assert doc == {"a": {"b": [1, 2]}, "c": True, "x/y": 1}  # never modified in place
    for bad in (
        [{"op": "test", "path": "/c", "value": 1}],  # true is not 1 in JSON
        [{"op": "replace", "path": "/missing", "value": 1}],
        [{"op": "remove", "path": "/a/b/5"}],
        [{"op": "add", "path": "/a/b/01", "value": 1}],
        [{"op": "frobnicate", "path": "/a"}],
        {"op": "add"},
    ):
        with pytest.raises(PatchError):
            apply_json_patch(doc, bad)


def test_merge_patch_rfc7386_examples() -> None:
    assert apply_merge_patch({"a": "b"}, {"a": "c"}) == {"a": "c"}
    assert apply_merge_patch({"a": "b"}, {"b": "c"}) == {"a": "b", "b": "c"}
    assert apply_merge_patch({"a": "b"}, {"a": None}) == {}
    assert apply_merge_patch({"a": [{"b": "c"}]}, {"a": [1]}) == {"a": [1]}
    assert apply_merge_patch({"e": None}, {"a": 1}) == {"e": None, "a": 1}
    assert apply_merge_patch({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}) == {"a": {"b": "d"}}
    assert apply_merge_patch(["a"], {"a": "b"}) == {"a": "b"}


def test_strategic_merge_keeps_unnamed_lists_as_replace() -> None:
    target = {"c": [{"name": "a", "image": "1", "x": 1}, {"name": "b", "image": "2"}], "args": ["x"]}
    out = apply_strategic_merge_patch(target, {"c": [{"name": "b", "image": "3"}, {"name": "n"}], "args": ["y"]})
    assert out == {"c": [{"name": "a", "image": "1", "x": 1}, {"name": "b", "image": "3"}, {"name": "n"}],
                   "args": ["y"]}


# ------------------------------------------------------------------- fixtures for other modules
from fake_kube import fake_kube, fake_kube_thread  # noqa: E402, F401 - what other test modules do


async def test_fixture_and_request_waiting(fake_kube: FakeKube, tmp_path: Path) -> None:  # noqa: F811
    seen: list[str] = []
    fake_kube.on_request = lambda r: seen.append(r.verb)
    fake_kube.add(virtual_service())
    c = await config.new_client_from_config(config_file=str(fake_kube.kubeconfig(tmp_path, "bench")))
    try:
        custom = client.CustomObjectsApi(c)
        later = asyncio.ensure_future(fake_kube.wait_for_request(lambda r: r.verb == "patch", timeout=5))
        await custom.patch_namespaced_custom_object(*VS, "auth-service", [
            {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": 0}])
        rec = await later
        assert rec.token == "bench" and rec.received_at > 0
        assert seen == ["patch"]
        with pytest.raises(TimeoutError):
            await fake_kube.wait_for_request(lambda r: r.verb == "delete", timeout=0.05)
    finally:
        await c.close()


def test_thread_fixture(fake_kube_thread: FakeKube) -> None:  # noqa: F811
    fake_kube_thread.add(virtual_service())
    assert fake_kube_thread.get_object("virtualservices", NS, "auth-service") is not None
    assert fake_kube_thread.url.startswith("http://127.0.0.1:")


# --------------------------------------------------------------------------- Canary objects, events
CNR = ("canaryd.io", "v1alpha1", NS, "canaries")


def canary_object(name: str = "auth-service", namespace: str = NS) -> dict[str, Any]:
    return {"apiVersion": "canaryd.io/v1alpha1", "kind": "Canary", "metadata": {"name": name, "namespace": namespace},
            "spec": {"route": name, "stable": {"deployment": f"{name}-stable", "selector": 'job="s"'},
                     "canary": {"deployment": f"{name}-canary", "selector": 'job="c"'}}}


async def test_canary_status_subresource(fake: FakeKube, api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    body = canary_object()
    body["status"] = {"phase": "Forged"}  # a create does not set the status
    created = await custom.create_namespaced_custom_object(*CNR, body)
    assert "status" not in created and created["metadata"]["generation"] == 1
    patched = await custom.patch_namespaced_custom_object_status(
        *CNR, "auth-service", {"status": {"phase": "Progressing", "weight": 5}},
        _content_type="application/merge-patch+json")
    assert patched["status"] == {"phase": "Progressing", "weight": 5}
    assert patched["metadata"]["generation"] == 1, "a status write is not a spec change"
    # through the main resource: the status stays, the spec and metadata change
    patched = await custom.patch_namespaced_custom_object(
        *CNR, "auth-service", {"metadata": {"annotations": {"canaryd.io/action": "pause"}},
                               "spec": {"interval": "10s"}, "status": {"phase": "Forged"}},
        _content_type="application/merge-patch+json")
    assert patched["status"]["phase"] == "Progressing"
    assert patched["metadata"]["generation"] == 2 and patched["spec"]["interval"] == "10s"
    # a /status write leaves the spec and the metadata alone
    patched = await custom.patch_namespaced_custom_object_status(
        *CNR, "auth-service", {"spec": {"interval": "1s"}, "status": {"weight": 25}},
        _content_type="application/merge-patch+json")
    assert patched["spec"]["interval"] == "10s" and patched["status"] == {"phase": "Progressing", "weight": 25}
    got = await custom.get_namespaced_custom_object_status(*CNR, "auth-service")
    assert got["status"]["weight"] == 25


async def test_canaries_listed_and_watched_in_every_namespace(fake: FakeKube, api: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api)
    fake.add(canary_object("a"))
    fake.add(canary_object("b", namespace="other"))
    listing = await custom.list_cluster_custom_object("canaryd.io", "v1alpha1", "canaries")
    assert sorted(i["metadata"]["namespace"] for i in listing["items"]) == ["orion", "other"]
    w = watch.Watch()
    stream = w.stream(custom.list_cluster_custom_object, "canaryd.io", "v1alpha1", "canaries",
                      resource_version=listing["metadata"]["resourceVersion"], timeout_seconds=10)
    try:
        fake.add(canary_object("c", namespace="third"))
        ev = await next_event(stream)
        assert (ev["type"], ev["object"]["metadata"]["namespace"]) == ("ADDED", "third")
    finally:
        await w.close()
    fake.unserve("canaryd.io", "v1alpha1")  # a cluster without the CRD
    with pytest.raises(ApiException) as err:
        await custom.list_cluster_custom_object("canaryd.io", "v1alpha1", "canaries")
    assert err.value.status == 404


async def test_events_create_and_patch(fake: FakeKube, api: client.ApiClient) -> None:
    events = client.EventsV1Api(api)
    body = {"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "auth-service.1", "namespace": NS},
            "eventTime": "2026-01-01T00:00:00.000000Z", "reason": "Advanced", "note": "to 25%", "type": "Normal",
            "action": "Advance", "reportingController": "canaryd.io/canaryd", "reportingInstance": "canaryd-0",
            "regarding": {"apiVersion": "canaryd.io/v1alpha1", "kind": "Canary", "name": "auth-service",
                          "namespace": NS}}
    created = await events.create_namespaced_event(NS, body)
    assert created.reason == "Advanced" and created.regarding.kind == "Canary"
    patched = await events.patch_namespaced_event(
        "auth-service.1", NS, {"series": {"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000000Z"}},
        _content_type="application/merge-patch+json")
    assert patched.series.count == 2
    stored = fake.get_object("events", NS, "auth-service.1")
    assert stored is not None and stored["note"] == "to 25%" and stored["series"]["count"] == 2
    assert fake.count("create", resource="events") == 1 and fake.count("patch", resource="events") == 1
