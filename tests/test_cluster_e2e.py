"""End to end on a "cluster": `canaryd run` subprocesses with `kubernetes.enabled: true`, talking through
kubeconfigs to the fake API server (tests/fake_kube.py, real HTTP), judging real Prometheus scraping
test exporters.

Each daemon's kubeconfig carries a token of its own, so the fake's request log says which daemon
wrote what, and when. Everything else is observed as an operator would: the HTTP API, /metrics,
/readyz and the objects in the cluster.

- kill -9 mid-rollout, restart: the rollout resumes at its step from the route's state annotation.
- two daemons, one Lease: only the leader writes; the other takes over after a kill -9.
- passive start: a new canary pod template that becomes available, or a weight set by hand.
- a conflict between read and write is retried; an unusable route is an error, not a crash.

A few races that a subprocess cannot hit on demand (the lease lost between the leader check and the
write; a read failing at start) run in-process, on the daemon's own controller and cluster actuators.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from canaryd.actuator import ActuationError
from canaryd.config import parse_config
from canaryd.controller import Controller
from canaryd.kube import KubeClient
from canaryd.kube_actuator import KubeActuator, router_for
from canaryd.leader import LeaderGuard
from canaryd.leadership import Leadership
from canaryd.metrics import Metrics
from canaryd.sources.prometheus import PrometheusClient
from canaryd.watcher import poll_manual_weights
from daemon_process import DaemonProcess
from fake_kube import FakeKube, RequestRecord
from http_helpers import request, wait_for
from servers import ExporterProcess, PrometheusServer, free_port, missing_binaries
from test_cli_cluster import broken_route, deployment, virtual_service

NS = "orion"
STATE = "canaryd.io/state"
STATE_PATH = "/metadata/annotations/canaryd.io~1state"
RPS = 200.0  # per arm: a 2 s step sees ~400 canary requests, enough for the pass bound at 0 errors
# kubernetes_asyncio requires every duration >= 1 s and lease > renew > 1.2 x retry.
LEASE = {"lease_duration": 3.0, "renew_deadline": 2.0, "retry_period": 1.0}


# ---------------------------------------------------------------------------------------------- helpers
def kubectl_patch(fake: FakeKube, path: str, patch: Any, content_type: str) -> Any:
    """What `kubectl patch` / `kubectl set image` sends, as client "kubectl"."""
    status, body = request("PATCH", fake.url + path, patch, {"Authorization": "Bearer kubectl"}, content_type)
    assert status == 200, body
    return body


def canary(name: str, **settings: Any) -> dict[str, Any]:
    return {"name": name, "namespace": NS, "route": name,
            "stable": {"deployment": f"{name}-stable", "selector": f'job="{name}-stable"'},
            "canary": {"deployment": f"{name}-canary", "selector": f'job="{name}-canary"'}, **settings}


def daemon_config(port: int, kubeconfig: Path, prometheus_url: str, canaries: list[dict[str, Any]], *,
                  leader_election: bool = False) -> dict[str, Any]:
    return {
        "server": {"listen": f"127.0.0.1:{port}"},
        "prometheus": {"url": prometheus_url, "timeout": "2s", "retries": 1},
        "kubernetes": {"enabled": True, "kubeconfig": str(kubeconfig),
                       "leader_election": {"enabled": leader_election, "namespace": NS, "lease": "canaryd",
                                           **({k: f"{v}s" for k, v in LEASE.items()} if leader_election else {})}},
        "defaults": {"traffic_steps": [5, 25, 50, 100], "step_duration": "60s", "interval": "1s",
                     "min_requests": 50, "auto_promote": False, "max_step_duration": "120s"},
        "alerts": [{"alertname": "CanaryHighErrorRate", "action": "rollback"}],
        "canaries": canaries,
    }


class Daemon(DaemonProcess):
    """A `canaryd run` subprocess (JSON logs to a file), talking to the fake as client `token`."""

    def __init__(self, workdir: Path, fake: FakeKube, token: str, prometheus_url: str,
                 canaries: list[dict[str, Any]], *, leader_election: bool = False) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.token = token
        config = daemon_config(free_port(), fake.kubeconfig(workdir, token), prometheus_url, canaries,
                               leader_election=leader_election)
        super().__init__(workdir / f"canaryd-{token}.yaml", workdir / f"canaryd-{token}.log", config,
                         namespace=NS, name=f"canaryd {token}")

    def log_lines(self) -> list[dict[str, Any]]:
        # kubernetes_asyncio's lease lock prints a traceback of its own when two replicas race to create
        # the Lease: only canaryd's JSON lines are read here.
        return [json.loads(line) for line in self.logs().splitlines() if line.startswith("{")]


def route_writes(fake: FakeKube, token: str, route: str) -> list[RequestRecord]:
    return [r for r in fake.writes(token, resource="virtualservices") if r.name == route]


def state_in(record: RequestRecord) -> dict[str, Any] | None:
    """The canaryd.io/state annotation a JSON patch writes, if any."""
    for op in record.body or []:
        if op.get("op") in ("add", "replace") and op.get("path") == STATE_PATH:
            return dict(json.loads(op["value"]))
        if op.get("op") == "add" and op.get("path") == "/metadata/annotations" and STATE in op.get("value", {}):
            return dict(json.loads(op["value"][STATE]))
    return None


def weights(fake: FakeKube, route: str) -> tuple[int, int]:
    obj = fake.get_object("virtualservices", NS, route)
    assert obj is not None
    weighted = [r for r in obj["spec"]["http"] if "match" not in r]
    return weighted[0]["route"][0]["weight"], weighted[0]["route"][1]["weight"]


def annotation(fake: FakeKube, route: str) -> dict[str, Any]:
    obj = fake.get_object("virtualservices", NS, route)
    assert obj is not None
    return dict(json.loads(obj["metadata"].get("annotations", {}).get(STATE, "{}")))


def add_canary_objects(fake: FakeKube, name: str, *, headers_first: bool = True) -> None:
    fake.add(virtual_service(name, 100, 0, headers_first=headers_first))
    for arm in ("stable", "canary"):
        fake.add(deployment(f"{name}-{arm}", "ghcr.io/orion/auth:v1", container=name))
        fake.complete_rollout(NS, f"{name}-{arm}")


# ---------------------------------------------------------------------------------------------- Prometheus
@dataclass
class MetricsEnv:
    prometheus: PrometheusServer
    exporter: ExporterProcess


ANALYSED = ("resume", "elect")  # the canaries with traffic in the exporter


@pytest.fixture(scope="module")
def metrics_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetricsEnv]:
    missing = missing_binaries()
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed; run: apt-get install -y prometheus prometheus-alertmanager")
    wd = tmp_path_factory.mktemp("cluster-e2e")
    exporter = ExporterProcess([f"{n}-{arm}" for n in ANALYSED for arm in ("stable", "canary")],
                               labels={"namespace": NS}, rps=RPS, workdir=wd / "exporter")
    prometheus = PrometheusServer([exporter.address], workdir=wd / "prometheus")
    try:
        exporter.start()
        prometheus.start()
        yield MetricsEnv(prometheus, exporter)
    finally:
        prometheus.stop()
        exporter.stop()


# ---------------------------------------------------------------------------------------------- kill -9
def test_kill9_mid_rollout_resumes_at_the_same_step(metrics_env: MetricsEnv, tmp_path: Path,
                                                    daemons: list[Daemon]) -> None:
    prom = metrics_env.prometheus
    with FakeKube().in_thread() as fake:
        add_canary_objects(fake, "resume")
        config = [canary("resume", step_duration="2s")]
        first = Daemon(tmp_path, fake, "first", prom.url, config)
        daemons.append(first)
        prom.wait_for_targets_up()  # meanwhile the daemon starts
        first.wait_ready()
        status, body = first.command("resume", "start")
        assert status == 200 and body["weight"] == 5, body

        # Step 2 (25 %) reached on the cluster: kill -9 right then.
        wait_for(lambda: weights(fake, "resume") == (75, 25), timeout=30, what="the first advance to 25 %")
        first.kill9()
        at_kill = annotation(fake, "resume")
        assert (at_kill["phase"], at_kill["step"], at_kill["weight"]) == ("progressing", 1, 25), at_kill
        assert [w for w in (state_in(r) for r in route_writes(fake, "first", "resume")) if w] \
            and fake.writes("first", resource="deployments") == []

        second = Daemon(tmp_path, fake, "second", prom.url, config)
        daemons.append(second)
        second.wait_ready()
        resumed = [x for x in second.log_lines() if x["msg"] == "resumed rollout from the route's state annotation"]
        assert resumed and (resumed[0]["phase"], resumed[0]["step"], resumed[0]["weight"]) == ("progressing", 1, 25)
        s = second.canary("resume")
        assert s["phase"] == "progressing" and s["step"] >= 1 and s["weight"] >= 25, s
        assert s["step_started_at"] == at_kill["step_started_at"] or s["step"] > 1
        assert s["history"][0]["decision"] == "start"  # the history came back with the state

        # It carries on from 25 % to 50 %, and nothing it writes goes back to 5 % or promotes.
        wait_for(lambda: weights(fake, "resume") == (50, 50), timeout=30, what="the resumed rollout to reach 50 %")
        written = [state_in(r) for r in route_writes(fake, "second", "resume")]
        assert written and all(w is not None for w in written)
        assert written[0]["weight"] == 50 and written[0]["step"] == 2, written[0]
        assert all(w["weight"] >= 25 and w["step"] >= 1 for w in written if w), written
        assert fake.writes("second", resource="deployments") == []  # never re-promotes
        assert all(r.status == 200 for r in fake.writes("second", exclude=("leases",)))


# ---------------------------------------------------------------------------------------------- leader
def alert_payload(name: str) -> dict[str, Any]:
    return {"version": "4", "status": "firing", "receiver": "canaryd", "groupKey": "{}:{}",
            "alerts": [{"status": "firing", "labels": {"alertname": "CanaryHighErrorRate", "canary": name,
                                                       "namespace": NS},
                        "annotations": {}, "startsAt": "2024-05-01T12:00:00.5Z",
                        "endsAt": "0001-01-01T00:00:00Z"}]}


def test_two_daemons_one_lease_only_the_leader_writes(metrics_env: MetricsEnv, tmp_path: Path,
                                                      daemons: list[Daemon]) -> None:
    prom = metrics_env.prometheus
    with FakeKube().in_thread() as fake:
        add_canary_objects(fake, "elect")
        config = [canary("elect")]
        for token in ("replica-a", "replica-b"):
            daemons.append(Daemon(tmp_path, fake, token, prom.url, config, leader_election=True))
        for d in daemons:
            d.wait_ready()

        def one_leader() -> tuple[Daemon, Daemon] | None:
            leading = [d for d in daemons if d.metric("canaryd_is_leader") == 1]
            return (leading[0], next(d for d in daemons if d is not leading[0])) if len(leading) == 1 else None

        leader, follower = wait_for(one_leader, timeout=15, interval=0.1, what="a leader")
        assert follower.metric("canaryd_is_leader") == 0
        lease = fake.get_object("leases", NS, "canaryd")
        assert lease is not None and lease["spec"]["leaseDurationSeconds"] == 3

        # The follower answers reads; a verb that advances a rollout is the leader's (503 names why).
        status, body = request("GET", follower.url + "/api/v1/canaries")
        assert status == 200 and body["canaries"][0]["name"] == "elect"
        status, body = follower.command("elect", "start")
        assert status == 503 and "not the leader" in body["error"], body
        status, body = request("GET", follower.url + "/readyz")
        assert status == 200 and body["leader"] is False

        # The leader acts; the follower's view follows the route's annotation.
        status, body = leader.command("elect", "start")
        assert status == 200 and body["weight"] == 5, body
        assert weights(fake, "elect") == (95, 5)
        wait_for(lambda: follower.canary("elect")["phase"] == "progressing", timeout=10,
                 what="the follower to see the rollout")
        assert follower.canary("elect")["weight"] == 5
        assert fake.writes(follower.token, exclude=("leases",)) == []
        assert route_writes(fake, leader.token, "elect")

        # The follower takes an alert itself: the weights are written when it answers 200.
        status, body = request("POST", follower.url + "/webhooks/alertmanager", alert_payload("elect"))
        assert status == 200 and body["alerts"][0]["result"] == "rollback applied", body
        assert weights(fake, "elect") == (100, 0) and annotation(fake, "elect")["phase"] == "rolled_back"
        wait_for(lambda: leader.canary("elect")["phase"] == "rolled_back", timeout=10,
                 what="the leader to adopt the follower's rollback")
        status, body = leader.command("elect", "start")  # and the leader goes on from there
        assert status == 200 and body["phase"] == "progressing", body
        fake.complete_rollout(NS, "elect-canary")  # the canary's pods (scaled to 0 by the rollback) are back
        wait_for(lambda: weights(fake, "elect") == (95, 5), timeout=10, what="the new rollout's first step")
        wait_for(lambda: follower.canary("elect")["phase"] == "progressing", timeout=10,
                 what="the follower to see the new rollout")
        before_takeover = len(fake.writes(follower.token, exclude=("leases",)))

        # kill -9 the leader: the follower takes over within the lease duration (plus a margin).
        leader.kill9()
        killed = time.monotonic()
        wait_for(lambda: follower.metric("canaryd_is_leader") == 1, timeout=15, interval=0.05,
                 what="the survivor to lead")
        takeover = time.monotonic() - killed
        print(f"\nleader kill -9 -> survivor's canaryd_is_leader 1: {takeover:.2f}s "
              f"(lease {LEASE['lease_duration']:g}s, retry {LEASE['retry_period']:g}s)")
        assert takeover <= LEASE["lease_duration"] + 3.0, f"takeover took {takeover:.2f}s"

        # It acts now: a rollback through the API (traffic to stable, canary scaled to 0).
        status, body = follower.command("elect", "rollback")
        assert status == 200 and body["phase"] == "rolled_back", body
        assert weights(fake, "elect") == (100, 0)
        dep = fake.get_object("deployments", NS, "elect-canary")
        assert dep is not None and dep["spec"]["replicas"] == 0

        # Its writes as a follower were the alert's rollback only (route and scale-down); the rest came
        # after it acquired the lease.
        acquired = [r.received_at for r in fake.writes(follower.token, resource="leases") if r.status in (200, 201)]
        assert acquired, "the survivor never wrote the lease"
        own = fake.writes(follower.token, exclude=("leases",))
        assert own and all(r.received_at > min(acquired) for r in own[before_takeover:])
        assert [(r.resource, r.subresource) for r in own[:before_takeover]] == [
            ("virtualservices", None), ("deployments", "scale")]
        holder = fake.get_object("leases", NS, "canaryd")
        assert holder is not None and holder["spec"]["holderIdentity"] != lease["spec"]["holderIdentity"]


async def test_an_advance_refused_for_lost_leadership_is_not_replayed_later(tmp_path: Path) -> None:
    """In-process, the daemon's own pieces: the lease is lost between the controller's leader check and
    the write. A verb that advances is refused (503 to its caller, who retries against the leader);
    once this replica has caught up with the route, regaining the lease must not replay it."""
    async with FakeKube() as fake:
        add_canary_objects(fake, "stale")
        config = parse_config({"kubernetes": {"enabled": True}, "canaries": [canary("stale")]}, "test")
        leading = [True]
        async with aiohttp.ClientSession() as session, \
                await KubeClient.from_kubeconfig(str(fake.kubeconfig(tmp_path, "me"))) as kube:
            controller = Controller(
                config, metrics=Metrics(CollectorRegistry()),
                prometheus=PrometheusClient(session, f"http://127.0.0.1:{free_port()}"),
                actuator_factory=lambda c: LeaderGuard(KubeActuator(kube, router_for(kube, c), c), lambda: leading[0]))
            await controller.start()
            try:
                await controller.command(NS, "stale", "start")
                await controller.command(NS, "stale", "pause")
                leading[0] = False  # lost after the controller's check, before the worker writes
                with pytest.raises(ActuationError, match="not the leader"):
                    await controller.command(NS, "stale", "resume")
                controller.leadership.set(False)
                await controller.refresh_from_routes()  # a follower's tick
                assert controller.workers[f"{NS}/stale"].status()["phase"] == "paused"
                leading[0] = True  # leader again, later
                controller.leadership.set(True)
                await controller.refresh_from_routes()
                status = await controller.command(NS, "stale", "rollback")
                assert status["phase"] == "rolled_back" and status["weight"] == 0
                assert weights(fake, "stale") == (100, 0)
                assert [state_in(r)["phase"] for r in route_writes(fake, "me", "stale")] == [  # type: ignore[index]
                    "progressing", "paused", "rolled_back"]
            finally:
                await controller.stop()


@contextlib.asynccontextmanager
async def in_process(fake: FakeKube, tmp_path: Path, name: str, *, leader: bool = True, start: bool = True,
                     poll_interval: float = 2.0, **settings: Any) -> AsyncIterator[Controller]:
    """The daemon's controller with its real cluster actuators (behind LeaderGuard), in this process;
    `settings` are the canary's own config keys, `poll_interval` its actuator's pod poll."""
    config = parse_config({"kubernetes": {"enabled": True}, "canaries": [canary(name, **settings)]}, "test")
    async with aiohttp.ClientSession() as session, \
            await KubeClient.from_kubeconfig(str(fake.kubeconfig(tmp_path, "me"))) as kube:
        leadership = Leadership(leading=leader)
        controller = Controller(
            config, metrics=Metrics(CollectorRegistry()),
            prometheus=PrometheusClient(session, f"http://127.0.0.1:{free_port()}"),
            actuator_factory=lambda c: LeaderGuard(KubeActuator(kube, router_for(kube, c), c,
                                                                poll_interval=poll_interval),
                                                   lambda: leadership.is_leader),
            leadership=leadership)
        if start:
            await controller.start()
        try:
            yield controller
        finally:
            await controller.stop()


async def test_a_follower_is_ready_again_after_a_transient_read_error(tmp_path: Path) -> None:
    async with FakeKube() as fake:
        add_canary_objects(fake, "blip")
        async with in_process(fake, tmp_path, "blip", leader=False) as controller:
            worker = controller.workers[f"{NS}/blip"]
            fake.inject_error(500, verb="get", resource="virtualservices")
            await controller.tick()  # a follower's tick: re-read the route
            await worker.barrier()
            ready, problems = controller.health.readiness()
            assert not ready and "500 InternalError" in problems[0]
            await controller.tick()
            await worker.barrier()
            assert controller.health.readiness() == (True, [])


async def test_a_failed_read_at_start_does_not_restart_a_paused_rollout(tmp_path: Path) -> None:
    """The route says canaryd paused this rollout at 50 %; the first read after a restart fails. The
    50 % on the route is canaryd's own, not an operator's: the next pass resumes the saved state."""
    async with FakeKube() as fake:
        vs = virtual_service("held", 50, 50)
        state = {"phase": "paused", "step": 2, "weight": 50, "step_started_at": 1.0, "started_at": 1.0,
                 "paused_reason": "alert CanaryLatencyHigherThanStable firing", "awaiting_promotion": False,
                 "last_decision": None, "trigger": "alert", "history": []}
        vs["metadata"]["annotations"] = {STATE: json.dumps(state)}
        fake.add(vs)
        fake.inject_error(500, verb="get", resource="virtualservices")
        async with in_process(fake, tmp_path, "held") as controller:
            worker = controller.workers[f"{NS}/held"]
            assert worker.status()["phase"] == "idle" and worker.error
            await poll_manual_weights(controller)
            status = worker.status()
            assert (status["phase"], status["step"], status["weight"]) == ("paused", 2, 50), status
            assert status["paused_reason"] == state["paused_reason"]
            assert fake.writes("me") == []
            assert controller.health.readiness() == (True, [])


async def test_the_promotions_weight_write_records_the_weight_it_sets(tmp_path: Path) -> None:
    """Traffic back to stable is written with a state that says 0 %: a daemon killed right after it
    resumes an interrupted promotion at the weight the route really has."""
    async with FakeKube() as fake:
        add_canary_objects(fake, "prom")
        fake.auto_rollout = 0.0
        async with in_process(fake, tmp_path, "prom") as controller:
            await controller.command(NS, "prom", "start")
            status = await controller.command(NS, "prom", "promote")
            assert status["phase"] == "succeeded"
        written = [state_in(r) for r in route_writes(fake, "me", "prom")]
        assert [(w["phase"], w["weight"]) for w in written if w] == [
            ("progressing", 5), ("promoting", 0), ("succeeded", 0)]
        assert weights(fake, "prom") == (100, 0)


# ---------------------------------------------------------------------------------------------- shared daemon
@dataclass
class Cluster:
    fake: FakeKube
    daemon: Daemon


SHARED = ("passive-image", "passive-manual", "conflict", "broken", "missing")


@pytest.fixture(scope="module")
def cluster(metrics_env: MetricsEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One daemon for the passive-start, conflict and error scenarios, each on a canary of its own."""
    wd = tmp_path_factory.mktemp("cluster-shared")
    with FakeKube().in_thread() as fake:
        add_canary_objects(fake, "passive-image")
        add_canary_objects(fake, "passive-manual", headers_first=False)  # the platform strategy's layout: http[0] weighted
        add_canary_objects(fake, "conflict")
        fake.add(broken_route("broken"))
        daemon = Daemon(wd, fake, "daemon", metrics_env.prometheus.url, [canary(n) for n in SHARED])
        try:
            daemon.wait_ready()
            yield Cluster(fake, daemon)
        finally:
            daemon.stop()


def test_passive_start_on_a_new_available_pod_template(cluster: Cluster) -> None:
    fake, d = cluster.fake, cluster.daemon
    watching = lambda n: fake.count("watch", token="daemon", resource="deployments") >= n  # noqa: E731
    wait_for(lambda: watching(1), timeout=10, what="the daemon's deployment watch")
    # The API server forgets old versions and ends the watch: the daemon must re-list (410 Gone).
    before = fake.count("list", token="daemon", resource="deployments")
    other = deployment("elsewhere", "busybox:1")
    fake.add({**other, "metadata": {"name": "elsewhere", "namespace": "other"}})  # history moves on
    fake.compact()
    fake.close_watches()
    wait_for(lambda: fake.count("list", token="daemon", resource="deployments") > before
             and watching(2), timeout=15, what="the daemon to re-list and watch again")
    assert d.canary("passive-image")["phase"] == "idle"

    # `kubectl set image deployment/passive-image-canary passive-image=...:v2`: a strategic merge patch.
    kubectl_patch(fake, f"/apis/apps/v1/namespaces/{NS}/deployments/passive-image-canary",
                  {"spec": {"template": {"spec": {"containers": [
                      {"name": "passive-image", "image": "ghcr.io/orion/auth:v2"}]}}}},
                  "application/strategic-merge-patch+json")
    # Changed, but not yet available: no rollout.
    assert route_writes(fake, "daemon", "passive-image") == []
    fake.complete_rollout(NS, "passive-image-canary")

    wait_for(lambda: route_writes(fake, "daemon", "passive-image"), timeout=10, what="the daemon to start a rollout")
    assert weights(fake, "passive-image") == (95, 5)
    state = annotation(fake, "passive-image")
    assert (state["phase"], state["step"], state["weight"]) == ("progressing", 0, 5)
    reason = state["last_decision"]["reasons"][0]
    assert reason.startswith(f"canary Deployment {NS}/passive-image-canary changed and is available"), reason
    assert "passive-image=ghcr.io/orion/auth:v2" in reason
    s = d.canary("passive-image")
    assert (s["phase"], s["weight"], s["history"][0]["trigger"]) == ("progressing", 5, "start")


def test_passive_start_from_a_weight_set_by_hand(cluster: Cluster) -> None:
    fake, d = cluster.fake, cluster.daemon
    assert d.canary("passive-manual")["phase"] == "idle"
    # The platform strategy's kubectl command, verbatim: the weighted route is http[0].
    kubectl_patch(fake, f"/apis/networking.istio.io/v1beta1/namespaces/{NS}/virtualservices/passive-manual",
                  [{"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 75},
                   {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": 25}],
                  "application/json-patch+json")

    s = wait_for(lambda: (c := d.canary("passive-manual"))["phase"] == "progressing" and c, timeout=10,
                 what="the daemon to take up the hand-set weight")
    assert (s["step"], s["weight"]) == (1, 25), s
    assert "set to 25 % by hand" in s["history"][0]["reasons"][0]
    # The API shows the new phase while its write is in flight: wait for the write itself.
    wait_for(lambda: route_writes(fake, "daemon", "passive-manual"), timeout=10, what="the daemon's state write")
    assert weights(fake, "passive-manual") == (75, 25)  # left where the operator put it
    written = [state_in(r) for r in route_writes(fake, "daemon", "passive-manual")]
    assert written and all(w is not None and w["weight"] == 25 and w["step"] == 1 for w in written), written


def test_conflict_between_read_and_write_is_retried(cluster: Cluster) -> None:
    fake, d = cluster.fake, cluster.daemon
    ok = d.metric("canaryd_router_updates_total", namespace=NS, canary="conflict", outcome="ok")
    fake.inject_conflict_once("virtualservices", NS, "conflict")  # another writer, just before ours
    status, body = d.command("conflict", "start")
    assert status == 200 and body["weight"] == 5 and body["error"] is None, body
    attempts = route_writes(fake, "daemon", "conflict")
    assert [r.status for r in attempts] == [422, 200]  # the failed `test`, then the re-read write
    assert attempts[1].body[0] != attempts[0].body[0]  # re-read: tested against the new resourceVersion
    assert weights(fake, "conflict") == (95, 5)
    obj = fake.get_object("virtualservices", NS, "conflict")
    assert obj is not None and obj["metadata"]["annotations"]["fake-kube/conflict"] == "1"  # theirs kept
    assert d.metric("canaryd_router_updates_total", namespace=NS, canary="conflict", outcome="ok") == ok + 1
    assert d.metric("canaryd_router_updates_total", namespace=NS, canary="conflict", outcome="error") == 0
    assert d.metric("canaryd_router_updates_total", namespace=NS, canary="conflict", outcome="conflict_retry") == 1


def test_unusable_routes_are_errors_that_name_the_object(cluster: Cluster) -> None:
    fake, d = cluster.fake, cluster.daemon
    s = d.canary("broken")
    assert s["error"] and s["error"].startswith(f"VirtualService {NS}/broken: no http route in spec.http holds "
                                                "both the stable and the canary destination"), s
    assert d.canary("missing")["error"].startswith(f"VirtualService {NS}/missing not found"), d.canary("missing")

    errors = d.metric("canaryd_router_updates_total", namespace=NS, canary="broken", outcome="error")
    status, body = d.command("broken", "start")
    assert status == 503 and f"VirtualService {NS}/broken" in body["error"], body
    assert d.metric("canaryd_router_updates_total", namespace=NS, canary="broken", outcome="error") == errors + 1
    s = d.canary("broken")
    assert s["phase"] == "idle" and f"VirtualService {NS}/broken" in s["error"]
    assert route_writes(fake, "daemon", "broken") == []  # refused before any request was sent

    # The daemon keeps running and says what is wrong.
    assert d.proc.poll() is None
    status, body = request("GET", d.url + "/readyz")  # ready (it takes webhooks), not healthy
    assert status == 200 and body["healthy"] is False, body
    assert any(f"VirtualService {NS}/broken" in p for p in body["problems"]), body
    assert request("GET", d.url + "/healthz")[0] == 200
    assert not [x for x in d.log_lines() if x["msg"] in ("canary task died", "canary task error", "tick failed")]
