"""Routers: pure weight arithmetic and route finding, then each mesh against the fake API server.

Every object carries the platform strategy's other routes (header `x-canary: true` FIRST, then `x-user-tier: beta`
and `x-region`), and every write must leave them byte-for-byte as they were.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from canaryd.config import Mesh
from canaryd.kube import KubeClient
from canaryd.routers import ROUTERS, DryRunRouter, RouterError, make_router
from canaryd.routers.base import (
    STATE_ANNOTATION,
    RouteState,
    UnusableRoute,
    split_total,
    to_percent,
    weight_patch,
)
from canaryd.routers.gateway import GatewayRouter, find_httproute_rule
from canaryd.routers.istio import IstioRouter, find_istio_route
from canaryd.routers.smi import SmiRouter, find_smi_backends, format_quantity, quantity_milli
from fake_kube import FakeKube

NS = "orion"


# ------------------------------------------------------------------------------------ objects
def header_route(subset: str, header: str, value: str) -> dict[str, Any]:
    return {"match": [{"headers": {header: {"exact": value}}}],
            "route": [{"destination": {"host": "auth-service", "subset": subset}}]}


def virtual_service(stable: int = 95, canary: int = 5, *, api: str = "v1beta1") -> dict[str, Any]:
    """The platform strategy's VirtualService with header, user and region routes around the weighted one."""
    return {
        "apiVersion": f"networking.istio.io/{api}",
        "kind": "VirtualService",
        "metadata": {"name": "auth-service", "namespace": NS, "annotations": {"team": "identity"}},
        "spec": {
            "hosts": ["auth-service"],
            "http": [
                header_route("canary", "x-canary", "true"),
                header_route("canary", "x-user-tier", "beta"),
                {"match": [{"headers": {"x-region": {"exact": "us-west-2"}}}],
                 "route": [{"destination": {"host": "auth-service", "subset": "canary"}}],
                 "timeout": "5s"},
                {"route": [
                    {"destination": {"host": "auth-service", "subset": "stable", "port": {"number": 8080}},
                     "weight": stable},
                    {"destination": {"host": "auth-service", "subset": "canary", "port": {"number": 8080}},
                     "weight": canary},
                ], "retries": {"attempts": 3, "perTryTimeout": "2s"}},
                {"match": [{"uri": {"prefix": "/legacy"}}],
                 "route": [{"destination": {"host": "auth-legacy"}, "weight": 100}]},
            ],
        },
    }


def traffic_split(stable: Any = 950, canary: Any = 50, *, api: str = "v1alpha2") -> dict[str, Any]:
    return {
        "apiVersion": f"split.smi-spec.io/{api}",
        "kind": "TrafficSplit",
        "metadata": {"name": "auth-service-split", "namespace": NS},
        "spec": {"service": "auth-service", "backends": [
            {"service": "auth-service-stable", "weight": stable},
            {"service": "auth-service-canary", "weight": canary},
        ]},
    }


def http_route(stable: int | None = 9500, canary: int | None = 500, *, api: str = "v1") -> dict[str, Any]:
    def ref(name: str, weight: int | None) -> dict[str, Any]:
        r: dict[str, Any] = {"name": name, "port": 8080}
        if weight is not None:
            r["weight"] = weight
        return r

    return {
        "apiVersion": f"gateway.networking.k8s.io/{api}",
        "kind": "HTTPRoute",
        "metadata": {"name": "auth-service", "namespace": NS},
        "spec": {
            "parentRefs": [{"name": "auth-service", "kind": "Service", "group": "", "port": 8080}],
            "rules": [
                {"matches": [{"headers": [{"name": "x-canary", "value": "true"}]}],
                 "backendRefs": [{"name": "auth-service-canary", "port": 8080}]},
                {"matches": [{"headers": [{"name": "x-user-tier", "value": "beta"}]}],
                 "backendRefs": [{"name": "auth-service-canary", "port": 8080}]},
                {"matches": [{"headers": [{"name": "x-region", "value": "us-west-2"}]}],
                 "backendRefs": [{"name": "auth-service-canary", "port": 8080, "weight": 1}]},
                {"backendRefs": [ref("auth-service-stable", stable), ref("auth-service-canary", canary)]},
            ],
        },
    }


@dataclass(frozen=True)
class Case:
    """One router against one kind of object: where its weights are and what the rest is."""

    id: str
    cls: type
    obj: Callable[[], dict[str, Any]]
    resource: str
    route: str
    stable: str
    canary: str
    weights: Callable[[dict[str, Any]], tuple[Any, Any]]
    others: Callable[[dict[str, Any]], list[Any]]  # everything that must not change
    written_at_25: tuple[Any, Any]


def vs_weights(o: dict[str, Any]) -> tuple[Any, Any]:
    r = o["spec"]["http"][3]["route"]
    return r[0]["weight"], r[1]["weight"]


def vs_others(o: dict[str, Any]) -> list[Any]:
    weighted = copy.deepcopy(o["spec"]["http"][3])
    for d in weighted["route"]:
        d.pop("weight")
    return [o["spec"]["http"][i] for i in (0, 1, 2, 4)] + [weighted, o["spec"]["hosts"]]


def ts_weights(o: dict[str, Any]) -> tuple[Any, Any]:
    b = o["spec"]["backends"]
    return b[0]["weight"], b[1]["weight"]


def ts_others(o: dict[str, Any]) -> list[Any]:
    return [o["spec"]["service"], [b["service"] for b in o["spec"]["backends"]]]


def hr_weights(o: dict[str, Any]) -> tuple[Any, Any]:
    refs = o["spec"]["rules"][3]["backendRefs"]
    return refs[0].get("weight"), refs[1].get("weight")


def hr_others(o: dict[str, Any]) -> list[Any]:
    refs = [{k: v for k, v in r.items() if k != "weight"} for r in o["spec"]["rules"][3]["backendRefs"]]
    return [o["spec"]["rules"][i] for i in (0, 1, 2)] + [refs, o["spec"]["parentRefs"]]


CASES = [
    Case("istio", IstioRouter, virtual_service, "virtualservices", "auth-service", "stable", "canary",
         vs_weights, vs_others, (75, 25)),
    Case("smi-shares", SmiRouter, traffic_split, "trafficsplits", "auth-service-split",
         "auth-service-stable", "auth-service-canary", ts_weights, ts_others, (750, 250)),
    Case("smi-quantities", SmiRouter, lambda: traffic_split("950m", "50m", api="v1alpha1"), "trafficsplits",
         "auth-service-split", "auth-service-stable", "auth-service-canary", ts_weights, ts_others,
         ("750m", "250m")),
    Case("gateway-thousands", GatewayRouter, http_route, "httproutes", "auth-service",
         "auth-service-stable", "auth-service-canary", hr_weights, hr_others, (7500, 2500)),
]


def router_for(case: Case, kube: KubeClient | None, **kw: Any) -> Any:
    return case.cls(kube=kube, namespace=NS, route=case.route, stable_backend=case.stable,
                    canary_backend=case.canary, **kw)


def dumped(values: list[Any]) -> list[str]:
    return [json.dumps(v) for v in values]  # key order included: byte-for-byte


# ---------------------------------------------------------------------------- pure arithmetic
@pytest.mark.parametrize(("stable", "canary", "expect"), [
    (95, 5, (5, 95)), (950, 50, (5, 95)), (9500, 500, (5, 95)), (1, 1, (50, 50)), (0, 0, (0, 100)),
    (667, 333, (33, 67)), (1, 0, (0, 100)), (0, 7, (100, 0)), (995, 5, (1, 99)),
])
def test_to_percent(stable: int, canary: int, expect: tuple[int, int]) -> None:
    assert to_percent(stable, canary) == expect


@pytest.mark.parametrize(("stable", "canary", "pct", "max_weight", "expect"), [
    (95, 5, 25, None, (75, 25)),
    (950, 50, 25, None, (750, 250)),
    (950, 50, 100, None, (0, 1000)),
    (9500, 500, 50, 1_000_000, (5000, 5000)),
    (1, 1, 5, 1_000_000, (95, 5)),  # HTTPRoute default weights: rescaled to express 5 %
    (1, 1, 50, 1_000_000, (1, 1)),  # ... but only when needed
    (1, 0, 0, None, (1, 0)),
    (0, 0, 5, None, (95, 5)),
    (1_000_000, 1_000_000, 100, 1_000_000, (0, 1_000_000)),  # capped to the API's bound
    (1000, 0, 33, None, (670, 330)),
])
def test_split_total_keeps_scale(stable: int, canary: int, pct: int, max_weight: int | None,
                                 expect: tuple[int, int]) -> None:
    assert split_total(stable, canary, pct, max_weight=max_weight) == expect


def test_quantities() -> None:
    assert [quantity_milli(q, "w") for q in ("950m", "50m", "1", "0.5", "1k", 2, ".25")] == [
        950, 50, 1000, 500, 10**6, 2000, 250]
    for bad in ("abc", "1Ki", "-1", True, 1.5, None):
        with pytest.raises(UnusableRoute):
            quantity_milli(bad, "spec.backends[0].weight")
    assert format_quantity(750, milli_form=True) == "750m"
    assert format_quantity(1000, milli_form=True) == "1000m"
    assert format_quantity(1000, milli_form=False) == "1"
    assert format_quantity(250, milli_form=False) == "250m"


def test_smi_quantities_keep_their_form() -> None:
    for stable, canary, written in (("950m", "50m", ("750m", "250m")), ("1", "0", ("750m", "250m")),
                                    (950, 50, (750, 250)), (95, 5, (75, 25))):
        ts = traffic_split(stable, canary, api="v1alpha1")
        ts["metadata"]["resourceVersion"] = "7"
        pair = find_smi_backends(ts, "auth-service-stable", "auth-service-canary")
        assert to_percent(pair.stable, pair.canary)[0] == (5 if stable != "1" else 0)
        ops = weight_patch(ts, pair, 25, None)
        assert [op["value"] for op in ops if op["op"] == "replace"] == list(written)


def test_istio_finds_the_weighted_route_behind_header_routes() -> None:
    vs = virtual_service()
    pair = find_istio_route(vs, "stable", "canary")
    assert (pair.where, pair.stable_path, pair.canary_path) == (
        "spec.http[3]", "/spec/http/3/route/0/weight", "/spec/http/3/route/1/weight")
    assert (pair.stable, pair.canary) == (95, 5)

    by_host = virtual_service()
    for d, host in zip(by_host["spec"]["http"][3]["route"], ("auth-stable", "auth-canary.orion.svc.cluster.local"),
                       strict=True):
        d["destination"] = {"host": host}
    pair = find_istio_route(by_host, "auth-stable", "auth-canary")
    assert pair.where == "spec.http[3]"


def test_istio_route_errors_say_what_is_missing() -> None:
    vs = virtual_service()
    del vs["spec"]["http"][3]["route"][0]  # the weighted route loses its stable destination
    with pytest.raises(UnusableRoute) as e:
        find_istio_route(vs, "stable", "canary")
    msg = str(e.value)
    assert "no http route in spec.http holds both the stable and the canary destination" in msg
    assert "stable 'stable' is in none" in msg and "canary 'canary' is in http[0], http[1], http[2], http[3]" in msg

    with pytest.raises(UnusableRoute, match="has no spec.http"):
        find_istio_route({"spec": {"tcp": []}}, "stable", "canary")

    twice = virtual_service()
    twice["spec"]["http"].append(copy.deepcopy(twice["spec"]["http"][3]))
    with pytest.raises(UnusableRoute, match=r"2 http routes hold both destinations \(http\[3\], http\[5\]\)"):
        find_istio_route(twice, "stable", "canary")
    twice["spec"]["http"][5]["match"] = [{"uri": {"prefix": "/v2"}}]  # the plain one wins
    assert find_istio_route(twice, "stable", "canary").where == "spec.http[3]"


def test_httproute_rule_finding() -> None:
    route = http_route(None, None)
    pair = find_httproute_rule(route, "auth-service-stable", "auth-service-canary")
    assert (pair.where, pair.stable, pair.canary, pair.stable_raw) == ("spec.rules[3]", 1, 1, None)
    ops = weight_patch({"metadata": {"resourceVersion": "3"}}, pair, 5, None)
    assert ops == [{"op": "test", "path": "/metadata/resourceVersion", "value": "3"},
                   {"op": "add", "path": "/spec/rules/3/backendRefs/0/weight", "value": 95},
                   {"op": "add", "path": "/spec/rules/3/backendRefs/1/weight", "value": 5}]
    other_ns = http_route()
    other_ns["spec"]["rules"][3]["backendRefs"][1]["namespace"] = "elsewhere"
    with pytest.raises(UnusableRoute, match="canary 'auth-service-canary' is in rules\\[0\\], rules\\[1\\], rules\\[2\\]"):
        find_httproute_rule(other_ns, "auth-service-stable", "auth-service-canary")


def test_weight_patch_guards_and_state() -> None:
    vs = virtual_service()
    vs["metadata"]["resourceVersion"] = "12"
    pair = find_istio_route(vs, "stable", "canary")
    ops = weight_patch(vs, pair, 25, {"phase": "progressing", "step": 1})
    assert ops == [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "12"},
        {"op": "test", "path": "/spec/http/3/route/0/weight", "value": 95},
        {"op": "test", "path": "/spec/http/3/route/1/weight", "value": 5},
        {"op": "replace", "path": "/spec/http/3/route/0/weight", "value": 75},
        {"op": "replace", "path": "/spec/http/3/route/1/weight", "value": 25},
        {"op": "add", "path": "/metadata/annotations/canaryd.io~1state", "value": '{"phase":"progressing","step":1}'},
    ]
    assert weight_patch(vs, pair, 5, None) == []  # nothing to change: no request
    del vs["metadata"]["annotations"]
    assert weight_patch(vs, pair, 5, {"a": 1})[-1] == {
        "op": "add", "path": "/metadata/annotations", "value": {STATE_ANNOTATION: '{"a":1}'}}


# ------------------------------------------------------------------------- against the fake
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
async def test_write_changes_only_the_two_weights_and_state_in_one_request(
    case: Case, fake: FakeKube, kube: KubeClient
) -> None:
    fake.add(case.obj())
    before = fake.get_object(case.resource, NS, case.route)
    assert before is not None
    router = router_for(case, kube)
    assert await router.read() == RouteState(5, 95, None, "1")

    state = {"phase": "progressing", "step": 1, "step_started_at": "2025-01-01T00:00:00Z"}
    patches_before = fake.count("patch")
    after = await router.write(25, state)
    assert fake.count("patch") - patches_before == 1  # weights and state in ONE request
    assert after == RouteState(25, 75, state, "2")

    stored = fake.get_object(case.resource, NS, case.route)
    assert stored is not None
    assert case.weights(stored) == case.written_at_25
    assert dumped(case.others(stored)) == dumped(case.others(before))
    assert stored["spec"] == json.loads(json.dumps(stored["spec"]))  # plain JSON, nothing odd
    assert json.loads(stored["metadata"]["annotations"][STATE_ANNOTATION]) == state
    patch = fake.writes("canaryd-0")[-1]
    assert patch.content_type == "application/json-patch+json"
    assert {op["op"] for op in patch.body} == {"test", "replace", "add"}

    assert await router.read() == after  # round trip through the annotation
    rollback = await router.write(0, {**state, "phase": "rolled_back"})
    assert (rollback.canary_weight, rollback.stable_weight) == (0, 100)
    assert fake.count("patch") - patches_before == 2


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
async def test_conflict_between_read_and_write_is_retried(case: Case, fake: FakeKube, kube: KubeClient) -> None:
    fake.add(case.obj())
    conflicts: list[int] = []
    router = router_for(case, kube, on_conflict=lambda: conflicts.append(1))
    fake.inject_conflict_once(case.resource, NS, case.route)
    after = await router.write(50, {"step": 2})
    assert (after.canary_weight, after.state) == (50, {"step": 2})
    assert conflicts == [1]  # counted as canaryd_router_updates_total{outcome="conflict_retry"} by the daemon
    assert [w.status for w in fake.writes("canaryd-0")] == [422, 200]
    stored = fake.get_object(case.resource, NS, case.route)
    assert stored is not None and stored["metadata"]["annotations"]["fake-kube/conflict"] == "1"  # theirs kept


async def test_conflict_that_moves_the_weights_is_recomputed(fake: FakeKube, kube: KubeClient) -> None:
    fake.add(virtual_service())

    def operator_patch(o: dict[str, Any]) -> None:  # someone runs the platform strategy's kubectl patch meanwhile
        o["spec"]["http"][3]["route"][0]["weight"] = 50
        o["spec"]["http"][3]["route"][1]["weight"] = 50

    fake.inject_conflict_once("virtualservices", NS, "auth-service", mutate=operator_patch)
    router = router_for(CASES[0], kube)
    assert (await router.write(25)).canary_weight == 25
    first, second = fake.writes("canaryd-0")
    assert first.status == 422 and second.status == 200
    assert {"op": "test", "path": "/spec/http/3/route/0/weight", "value": 50} in second.body


async def test_persistent_conflict_gives_up_with_router_error(fake: FakeKube, kube: KubeClient) -> None:
    fake.add(virtual_service())
    fake.inject_conflict("virtualservices", NS, "auth-service", times=5)
    with pytest.raises(RouterError) as e:
        await router_for(CASES[0], kube).write(25)
    assert str(e.value).startswith("VirtualService orion/auth-service: every write conflicted")
    assert "5 attempts" in str(e.value)
    assert e.value.obj == "VirtualService orion/auth-service"
    assert len(fake.writes("canaryd-0")) == 5


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
async def test_missing_object_and_missing_destinations(case: Case, fake: FakeKube, kube: KubeClient) -> None:
    router = router_for(case, kube)
    with pytest.raises(RouterError, match=f"^{router.what} not found"):
        await router.read()
    fake.add(case.obj())
    wrong = case.cls(kube=kube, namespace=NS, route=case.route, stable_backend=case.stable,
                     canary_backend="auth-service-v3")
    with pytest.raises(RouterError) as e:
        await wrong.write(25)
    assert str(e.value).startswith(f"{router.what}: ")
    assert "auth-service-v3" in str(e.value)
    assert fake.writes() == []


async def test_istio_falls_back_to_v1beta1_and_reports_missing_api(fake: FakeKube, kube: KubeClient) -> None:
    fake.add(virtual_service())
    fake.unserve("networking.istio.io", "v1")
    router = router_for(CASES[0], kube)
    await router.write(25)
    assert {r.path.split("/")[3] for r in fake.requests} == {"v1", "v1beta1"}
    assert fake.writes()[0].path.startswith("/apis/networking.istio.io/v1beta1/")

    fake.unserve("networking.istio.io", "v1beta1")
    with pytest.raises(RouterError, match=r"the API networking.istio.io \(v1, v1beta1\) is not served.*Istio"):
        await router_for(CASES[0], kube).read()


async def test_gateway_v1beta1_and_smi_v1alpha1_only(fake: FakeKube, kube: KubeClient) -> None:
    fake.add(http_route(api="v1beta1"))
    fake.unserve("gateway.networking.k8s.io", "v1")
    assert (await router_for(CASES[3], kube).write(100)).canary_weight == 100
    stored = fake.get_object("httproutes", NS, "auth-service")
    assert stored is not None and hr_weights(stored) == (0, 10000)

    fake.add(traffic_split("950m", "50m", api="v1alpha1"))
    for v in ("v1alpha4", "v1alpha3", "v1alpha2"):
        fake.unserve("split.smi-spec.io", v)
    assert (await router_for(CASES[2], kube).write(25)).canary_weight == 25
    assert fake.writes()[-1].path.startswith("/apis/split.smi-spec.io/v1alpha1/")


async def test_no_op_write_sends_nothing(fake: FakeKube, kube: KubeClient) -> None:
    fake.add(virtual_service())
    router = router_for(CASES[0], kube)
    await router.write(25, {"step": 1})
    assert len(fake.writes()) == 1
    assert (await router.write(25, {"step": 1})).resource_version == "2"
    assert (await router.write(25)).canary_weight == 25
    assert len(fake.writes()) == 1
    assert await router.plan(25) == []
    assert len(await router.plan(50)) == 5  # rv + 2 weight tests, 2 replaces


async def test_damaged_state_annotation(fake: FakeKube, kube: KubeClient) -> None:
    vs = virtual_service()
    vs["metadata"]["annotations"][STATE_ANNOTATION] = "{not json"
    fake.add(vs)
    router = router_for(CASES[0], kube)
    with pytest.raises(RouterError, match="annotation canaryd.io/state is not valid JSON"):
        await router.read()
    assert (await router.write(0, {"phase": "idle"})).state == {"phase": "idle"}  # overwritable
    assert (await router.read()).state == {"phase": "idle"}


async def test_bad_arguments(kube: KubeClient) -> None:
    router = router_for(CASES[0], kube)
    for bad in (-1, 101, 12.5, True):
        with pytest.raises(RouterError, match="integer percent 0..100"):
            await router.write(bad)
    with pytest.raises(RouterError, match="a Kubernetes client is required"):
        router_for(CASES[0], None)
    with pytest.raises(RouterError, match="both 'x'"):
        IstioRouter(kube=kube, namespace=NS, route="r", stable_backend="x", canary_backend="x")


# --------------------------------------------------------------------------- registry, dry run
def test_registry_and_unknown_mesh(kube: KubeClient) -> None:
    assert set(ROUTERS) == {"istio", "linkerd", "gateway-api", "dry-run"}
    assert ROUTERS["linkerd"] is SmiRouter and ROUTERS["gateway-api"] is GatewayRouter
    for mesh in Mesh:
        assert mesh.value in ROUTERS
        r = make_router(mesh, kube=kube, namespace=NS, route="r", stable_backend="a", canary_backend="b")
        assert isinstance(r, ROUTERS[mesh.value])
    with pytest.raises(RouterError, match="unknown mesh 'consul'; expected one of: istio, linkerd, gateway-api"):
        make_router("consul", kube=kube, namespace=NS, route="r", stable_backend="a", canary_backend="b")
    with pytest.raises(TypeError):
        ROUTERS["consul"] = IstioRouter  # type: ignore[index]


async def test_dry_run_router_records_without_kubernetes() -> None:
    router = make_router("dry-run", kube=None, namespace=NS, route="auth-service",
                         stable_backend="stable", canary_backend="canary")
    assert isinstance(router, DryRunRouter)
    assert await router.read() == RouteState(0, 100, None, "1")
    assert await router.plan(5, {"step": 0}) == [
        {"set": "weights", "stable": 95, "canary": 5}, {"set": "state", "value": {"step": 0}}]
    await router.write(5, {"step": 0})
    await router.write(25)
    assert [(s.canary_weight, s.state) for s in router.history] == [(5, {"step": 0}), (25, {"step": 0})]
    assert (await router.read()).resource_version == "3"
    with pytest.raises(RouterError):
        await router.write(150)
