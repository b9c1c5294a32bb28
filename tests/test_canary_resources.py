"""Canary objects as canaries: the spec's validation, the status and Events derived from a rollout, the
recorder's rate limit, and end to end a daemon that watches Canaries in the fake API server while real
Prometheus scrapes test exporters."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryd.canary_events import SPAM_WINDOW, EventRecorder, ObjectRef
from canaryd.canary_resources import canary_config, defaults_as_written, merge_patch
from canaryd.canary_status import canary_status, comparable, invalid_status, transitions
from canaryd.config import AnalysisSettings, ConfigError, parse_config
from canaryd.daemon import Daemon
from canaryd.kube import KubeNotFound
from canaryd.rollout import AlreadyDone
from fake_kube import FakeKube, RequestRecord
from http_helpers import request
from servers import ExporterProcess, PrometheusServer, free_port, missing_binaries
from test_cli_cluster import deployment, kube_args, run_cli, virtual_service

ROOT = Path(__file__).resolve().parent.parent
NS = "orion"
JOBS = ("good", "bad")  # canaries with traffic in the exporter
CNR = "/apis/canaryd.io/v1alpha1/namespaces/orion/canaries"


def canary_object(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "canaryd.io/v1alpha1", "kind": "Canary", "metadata": {"name": name, "namespace": NS},
            "spec": {"route": name, "stable": {"deployment": f"{name}-stable", "selector": f'job="{name}-stable"'},
                     "canary": {"deployment": f"{name}-canary", "selector": f'job="{name}-canary"'}, **spec}}


DEFAULTS = defaults_as_written(AnalysisSettings())


# ---------------------------------------------------------------------------------------- the spec
def test_spec_is_validated_as_a_config_entry() -> None:
    example = yaml.safe_load((ROOT / "examples" / "canary.yaml").read_text())
    c = canary_config(example, DEFAULTS)
    assert (c.namespace, c.name, c.route) == ("orion", "auth-service", "auth-service")
    assert c.settings.step_duration == 300 and c.settings.interval == 30
    assert c.settings.thresholds.latency_p95_ms == 500 and c.stable.backend == "stable"
    with pytest.raises(ConfigError) as e:
        canary_config(canary_object("x", stpe_duration="5m"), DEFAULTS)
    assert e.value.problems == ["Canary orion/x: spec.stpe_duration: unknown key; did you mean 'step_duration'?"]
    with pytest.raises(ConfigError) as e:
        canary_config(canary_object("x", interval="10m"), DEFAULTS)  # beyond the default step_duration
    assert "spec.interval: must be at most step_duration" in str(e.value)
    bad = canary_object("x")
    bad["spec"] = ["route"]
    with pytest.raises(ConfigError, match="spec: must be a mapping"):
        canary_config(bad, DEFAULTS)


def test_spec_reads_over_the_file_defaults() -> None:
    file = parse_config({"defaults": {"step_duration": "10s", "interval": "2s", "mesh": "linkerd",
                                      "thresholds": {"error_rate": 2}}}, "file")
    defaults = defaults_as_written(file.defaults)
    assert "max_step_duration" not in defaults  # implied: 3 × the canary's own step_duration
    c = canary_config(canary_object("x", step_duration="20s", thresholds={"latency_p95_ms": 300}), defaults)
    assert c.settings.mesh.value == "linkerd" and c.settings.interval == 2
    assert c.settings.step_duration == 20 and c.settings.max_step_duration == 60
    assert c.settings.thresholds.error_rate == 2 and c.settings.thresholds.latency_p95_ms == 300
    assert c.canary.backend == "x-canary"


def test_a_status_write_removes_what_the_new_status_no_longer_has() -> None:
    old = {"phase": "Progressing", "stepStartedAt": "t", "lastDecision": {"decision": "advance", "trigger": "x"}}
    new = {"phase": "Succeeded", "lastDecision": {"decision": "promoted"}}
    patch = merge_patch(old, new)
    assert patch == {"stepStartedAt": None, "phase": "Succeeded", "lastDecision": {"trigger": None,
                                                                                   "decision": "promoted"}}
    from fake_kube import apply_merge_patch
    assert apply_merge_patch(old, patch) == new


# ------------------------------------------------------------------------------- status and events
def running(phase: str, step: int, weight: int, **more: Any) -> dict[str, Any]:
    return {"namespace": NS, "name": "x", "phase": phase, "step": step, "weight": weight, "steps": [5, 25, 50, 100],
            "step_started_at": 1_700_000_000.0, "started_at": 1_700_000_000.0, "paused_reason": None,
            "last_decision": {"decision": "advance", "trigger": "analysis", "at": 1_700_000_000.0,
                              "reasons": ["all checks passed"]}, "error": None, **more}


def test_status_shows_the_rollout() -> None:
    s = canary_status(running("progressing", 1, 25), generation=3, now=1_700_000_100.0)
    assert (s["phase"], s["weight"], s["step"], s["steps"], s["observedGeneration"]) == ("Progressing", 25, 2, 4, 3)
    assert s["stepStartedAt"] == "2023-11-14T22:13:20Z"
    assert s["lastDecision"] == {"decision": "advance", "trigger": "analysis", "time": "2023-11-14T22:13:20Z",
                                 "reasons": ["all checks passed"]}
    conditions = {c["type"]: c for c in s["conditions"]}
    assert [c["type"] for c in s["conditions"]] == ["Ready", "Progressing", "Promoted", "RolledBack"]
    assert conditions["Ready"]["status"] == "True" and conditions["Progressing"]["status"] == "True"
    # Nothing changed: the same status, transition times kept (nothing to write).
    again = canary_status(running("progressing", 1, 25), generation=3, now=1_700_000_200.0, previous=s)
    assert again == s and comparable(again) == comparable(s)
    gone = running("rolled_back", -1, 0, last_decision={"decision": "rollback", "trigger": "analysis", "at": 1.0,
                                                          "reasons": ["error_rate 30.00% > 5%"]})
    s2 = canary_status(gone, generation=3, now=1_700_000_300.0, previous=s)
    rolled = {c["type"]: c for c in s2["conditions"]}["RolledBack"]
    assert (rolled["status"], rolled["reason"], rolled["message"]) == ("True", "Analysis", "error_rate 30.00% > 5%")
    assert rolled["lastTransitionTime"] != conditions["RolledBack"]["lastTransitionTime"]
    invalid = invalid_status("Canary orion/x: spec.stpe_duration: unknown key", generation=2, now=0.0)
    assert invalid["phase"] == "Invalid" and invalid["conditions"][0]["reason"] == "InvalidSpec"


def test_transitions_are_the_events() -> None:
    idle = running("idle", -1, 0)
    assert transitions(None, running("progressing", 0, 5)) == []  # the first status seen replays nothing
    assert [t.reason for t in transitions(idle, running("progressing", 0, 5))] == ["Started"]
    (advanced,) = transitions(running("progressing", 0, 5), running("progressing", 1, 25))
    assert advanced.reason == "Advanced" and "step 2 of 4, weight 25%" in advanced.note
    assert transitions(running("progressing", 1, 25), running("progressing", 1, 25)) == []
    assert [t.reason for t in transitions(running("progressing", 1, 25), running("paused", 1, 25))] == ["Paused"]
    assert [t.reason for t in transitions(running("promoting", 3, 100), running("succeeded", -1, 0))] == ["Promoted"]
    failed = transitions(running("promoting", 3, 100), running("rolled_back", -1, 0))
    assert [t.reason for t in failed] == ["PromotionFailed", "RolledBack"]
    assert all(t.type == "Warning" for t in failed)
    new_version = running("progressing", 0, 5, started_at=1_800_000_000.0)
    assert [t.reason for t in transitions(running("progressing", 2, 50), new_version)] == ["Started"]


class FakeEvents:
    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.patched: list[tuple[str, dict[str, Any]]] = []
        self.gone = False

    async def create_event(self, namespace: str, body: Any) -> Any:
        self.created.append(copy.deepcopy(dict(body)))
        return body

    async def patch_event(self, namespace: str, name: str, patch: Any) -> Any:
        if self.gone:
            raise KubeNotFound("Event gone", reason="NotFound")
        self.patched.append((name, dict(patch)))
        return patch


async def test_recorder_sends_one_identical_event_per_minute_per_object() -> None:
    now = [1000.0]
    api = FakeEvents()
    recorder = EventRecorder(api, clock=lambda: now[0], instance="canaryd-0")
    (event,) = transitions(running("progressing", 0, 5), running("progressing", 1, 25))
    canary = ObjectRef("canaryd.io/v1alpha1", "Canary", NS, "x", "uid-1")
    dep = ObjectRef("apps/v1", "Deployment", NS, "x-canary")
    assert await recorder.record(canary, event)
    assert await recorder.record(dep, event, related=canary)  # another object: its own event
    for _ in range(5):
        now[0] += 5
        assert not await recorder.record(canary, event)  # identical, within the minute: counted only
    assert len(api.created) == 2 and api.patched == []
    body = api.created[0]
    assert (body["reason"], body["type"], body["regarding"]["uid"]) == ("Advanced", "Normal", "uid-1")
    assert body["reportingController"] == "canaryd.io/canaryd" and body["reportingInstance"] == "canaryd-0"
    assert api.created[1]["related"]["kind"] == "Canary"
    now[0] = 1000.0 + SPAM_WINDOW + 1
    assert await recorder.record(canary, event)  # a minute later: the first event's series counts on
    assert api.patched == [(body["metadata"]["name"], {"series": {"count": 7, "lastObservedTime": api.patched[0][1]
                                                                  ["series"]["lastObservedTime"]}})]
    api.gone = True
    now[0] += SPAM_WINDOW + 1
    assert await recorder.record(canary, event)  # the event expired: a new one
    assert len(api.created) == 3


# --------------------------------------------------------------------------------- canaryd status
def test_status_command_reads_the_canary_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeKube().in_thread() as fake:
        fake.add(virtual_service("auth-split", 75, 25))  # a route the default naming would not find
        obj = canary_object("auth-service")
        obj["spec"]["route"] = "auth-split"
        fake.add(obj)
        status = canary_status(running("progressing", 1, 25), generation=1, now=1_700_000_100.0)
        code, body = request("PATCH", f"{fake.url}{CNR}/auth-service/status", {"status": status},
                             {"Authorization": "Bearer leader"}, "application/merge-patch+json")
        assert code == 200, body
        code, out, err = run_cli(capsys, "status", "auth-service", *kube_args(fake, tmp_path, "cli"))
        assert code == 0, err
        assert "istio route auth-split" in out and "weight    canary 25 % / stable 75 %" in out
        assert "resource  Canary orion/auth-service: Progressing" in out
        assert "  Ready=True (Accepted)" in out
        code, out, err = run_cli(capsys, "status", "auth-service", "-o", "json", *kube_args(fake, tmp_path, "cli"))
        assert code == 0 and json.loads(out)["resource_status"]["weight"] == 25
        fake.unserve("canaryd.io", "v1alpha1")  # no CRD in the cluster: the route alone
        fake.add(virtual_service("auth-service"))
        code, out, err = run_cli(capsys, "status", "auth-service", *kube_args(fake, tmp_path, "cli"))
        assert code == 0 and "resource" not in out and "istio route auth-service" in out


# ------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def prometheus_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrometheusServer, ExporterProcess]]:
    missing = missing_binaries()
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")
    wd = tmp_path_factory.mktemp("canary-resources")
    exporter = ExporterProcess([f"{n}-{arm}" for n in JOBS for arm in ("stable", "canary")],
                               labels={"namespace": NS}, rps=200.0, workdir=wd / "exporter")
    prometheus = PrometheusServer([exporter.address], workdir=wd / "prometheus")
    try:
        exporter.start()
        prometheus.start()
        exporter.control("bad-canary", error_rate=0.3)
        prometheus.wait_for_targets_up()
        yield prometheus, exporter
    finally:
        prometheus.stop()
        exporter.stop()


def cluster_objects(fake: FakeKube, name: str) -> None:
    fake.add(virtual_service(name, 100, 0))
    for arm in ("stable", "canary"):
        fake.add(deployment(f"{name}-{arm}", "ghcr.io/orion/auth:v1", container=name))
        fake.complete_rollout(NS, f"{name}-{arm}")


def file_config(fake: FakeKube, tmp_path: Path, prometheus_url: str, **kubernetes: Any) -> dict[str, Any]:
    return {"server": {"listen": f"127.0.0.1:{free_port()}"},
            "prometheus": {"url": prometheus_url, "timeout": "2s", "retries": 1},
            "kubernetes": {"enabled": True, "kubeconfig": str(fake.kubeconfig(tmp_path, "canaryd")), **kubernetes},
            "defaults": {"traffic_steps": [5, 25, 50, 100], "step_duration": "2s", "interval": "1s",
                         "min_requests": 50, "auto_promote": True, "max_step_duration": "60s"}}


@contextlib.asynccontextmanager
async def running_daemon(config: dict[str, Any], tmp_path: Path) -> AsyncIterator[Daemon]:
    path = tmp_path / "canaryd.yaml"
    path.write_text(yaml.safe_dump(config))
    daemon = Daemon(parse_config(config, str(path)), config_path=str(path))
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.ready.wait(), 20)
        yield daemon
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 10)


async def until(check: Any, timeout: float, what: str) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = check()
        if found:
            return found
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def status_writes(fake: FakeKube, name: str) -> list[dict[str, Any]]:
    return [r.body["status"] for r in list(fake.requests)
            if r.resource == "canaries" and r.subresource == "status" and r.name == name and r.status == 200]


def condition(status: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    return next((c for c in (status or {}).get("conditions", ()) if c["type"] == kind), {})


def events_of(fake: FakeKube) -> list[RequestRecord]:
    return [r for r in list(fake.requests) if r.resource == "events" and r.is_write]


def weights_over_time(writes: list[dict[str, Any]]) -> list[int]:
    out: list[int] = []
    for w in writes:
        if "weight" in w and (not out or out[-1] != w["weight"]):
            out.append(w["weight"])
    return out


async def annotate(session: Any, fake: FakeKube, name: str, action: str) -> None:
    async with session.patch(f"{fake.url}{CNR}/{name}", json={"metadata": {"annotations": {"canaryd.io/action": action}}},
                             headers={"Authorization": "Bearer kubectl",
                                      "Content-Type": "application/merge-patch+json"}) as r:
        assert r.status == 200, await r.text()


async def test_canary_objects_roll_out_with_status_and_events(prometheus_env: tuple[PrometheusServer, ExporterProcess],
                                                              tmp_path: Path) -> None:
    import aiohttp

    prometheus, _ = prometheus_env
    async with FakeKube() as fake, aiohttp.ClientSession() as session:
        for name in JOBS:
            cluster_objects(fake, name)
        config = file_config(fake, tmp_path, prometheus.url)
        async with running_daemon(config, tmp_path) as daemon:
            assert daemon.controller is not None and daemon.controller.config.canaries == ()
            # Picked up within one interval (1 s) of its creation, and shown Ready.
            fake.add(canary_object("good"))
            await until(lambda: "orion/good" in daemon.controller.workers, 1.5, "the Canary to be picked up")
            await until(lambda: condition(status_writes(fake, "good")[-1:] and status_writes(fake, "good")[-1],
                                          "Ready").get("status") == "True", 5, "Ready=True")
            # A misspelt key: Ready=False saying why; the daemon carries on.
            fake.add(canary_object("typo", stpe_duration="2s"))
            typo = await until(lambda: status_writes(fake, "typo"), 5, "the invalid Canary's status")
            ready = condition(typo[-1], "Ready")
            assert (ready["status"], ready["reason"], typo[-1]["phase"]) == ("False", "InvalidSpec", "Invalid")
            assert "spec.stpe_duration: unknown key; did you mean 'step_duration'?" in ready["message"]
            assert "orion/typo" not in daemon.controller.workers

            # kubectl annotate canary good canaryd.io/action=start: applied, then removed.
            await annotate(session, fake, "good", "start")
            await until(lambda: "canaryd.io/action" not in (fake.get_object("canaries", NS, "good") or {})
                        ["metadata"].get("annotations", {}), 5, "the action annotation to be removed")
            final = await until(lambda: [s for s in status_writes(fake, "good") if s.get("phase") == "Succeeded"],
                                40, "the promotion")
            writes = status_writes(fake, "good")
            weights = weights_over_time(writes)
            assert [w for w in weights if w in (5, 25, 50, 100)][:4] == [5, 25, 50, 100], weights
            assert any(condition(w, "Progressing").get("status") == "True" for w in writes)
            assert condition(final[-1], "Promoted")["status"] == "True"

            # The bad one: rolled back, the failing metric named in the condition.
            fake.add(canary_object("bad"))
            await until(lambda: "orion/bad" in daemon.controller.workers, 1.5, "the bad Canary")
            await annotate(session, fake, "bad", "start")
            rolled = await until(lambda: [s for s in status_writes(fake, "bad") if s.get("phase") == "RolledBack"],
                                 30, "the rollback")
            message = condition(rolled[-1], "RolledBack")
            assert message["status"] == "True" and "error" in message["message"], message

            await asyncio.sleep(1.5)  # a few more passes: nothing more to write, no event repeated
            seen = [(r.body["regarding"]["kind"], r.body["regarding"]["name"], r.body["reason"])
                    for r in events_of(fake) if r.verb == "create"]
            for obj in (("Canary", "good"), ("Deployment", "good-canary")):
                mine = [reason for kind, name, reason in seen if (kind, name) == obj]
                assert mine[:1] == ["Started"] and mine[-1] == "Promoted" and mine.count("Advanced") == 3, mine
            for obj in (("Canary", "bad"), ("Deployment", "bad-canary")):
                mine = [reason for kind, name, reason in seen if (kind, name) == obj]
                assert mine[0] == "Started" and mine[-1] == "RolledBack", mine
            notes = [(r.body["regarding"]["kind"], r.body["regarding"]["name"], r.body["reason"], r.body["note"])
                     for r in events_of(fake) if r.verb == "create"]
            assert len(notes) == len(set(notes)), "an identical event twice within a minute"
            rolled_back = [n for n in notes if n[2] == "RolledBack"]
            assert rolled_back and all("error" in n[3] for n in rolled_back)
            count = len(status_writes(fake, "good"))
            await asyncio.sleep(2.5)
            assert len(status_writes(fake, "good")) == count, "a status written again with nothing changed"

            # SIGHUP: the file is read again; the Canaries stay.
            path = Path(daemon.config_path or "")
            path.write_text(path.read_text() + "# edited\n")
            assert await daemon.reload()
            assert {"orion/good", "orion/bad"} <= set(daemon.controller.workers)
            # A deleted Canary stops being a canary; one deleted mid-rollout is rolled back first.
            fake.remove("canaries", NS, "bad")
            await until(lambda: "orion/bad" not in daemon.controller.workers, 3, "the deleted Canary to go")
            cluster_objects(fake, "late")
            fake.add(canary_object("late", step_duration="30s", max_step_duration="90s"))
            await until(lambda: "orion/late" in daemon.controller.workers, 1.5, "the late Canary")
            with contextlib.suppress(AlreadyDone):  # a passive start may have been first
                await daemon.controller.command(NS, "late", "start")
            vs = fake.get_object("virtualservices", NS, "late")
            assert vs is not None and vs["spec"]["http"][-1]["route"][1]["weight"] == 5
            fake.remove("canaries", NS, "late")
            await until(lambda: "orion/late" not in daemon.controller.workers, 3, "the late Canary to go")
            vs = fake.get_object("virtualservices", NS, "late")
            assert vs is not None and vs["spec"]["http"][-1]["route"][1]["weight"] == 0, "traffic left on the canary"


# ------------------------------------------------------------------------------ batched, leader only
class StubController:
    """What CanaryResources reads of the controller: its config, its canaries' statuses, reload."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.statuses: dict[str, dict[str, Any]] = {}
        self.reloads = 0

    def canaries(self) -> list[dict[str, Any]]:
        return list(self.statuses.values())

    def tick_interval(self) -> float:
        return 1.0

    async def reload(self, config: Any) -> None:
        self.reloads += 1
        self.config = config
        for c in config.canaries:
            self.statuses.setdefault(c.key, running("idle", -1, 0, name=c.name, last_decision=None))


class StubApi(FakeEvents):
    def __init__(self) -> None:
        super().__init__()
        self.status_writes: list[tuple[str, dict[str, Any]]] = []

    async def patch_status(self, namespace: str, name: str, status: Any) -> Any:
        self.status_writes.append((name, dict(status)))
        return status


async def test_a_tick_of_1000_unchanged_canaries_writes_nothing() -> None:
    from canaryd.canary_resources import CanaryResources
    from canaryd.kube import WatchEvent
    from canaryd.leadership import Leadership

    file = parse_config({}, "file")
    controller, api, leadership = StubController(file), StubApi(), Leadership(leading=False)
    resources = CanaryResources(controller, api, file, leadership=leadership,  # type: ignore[arg-type]
                                clock=lambda: 1_700_000_000.0)
    for i in range(1000):
        obj = canary_object(f"c{i}")
        obj["metadata"].update(uid=f"u{i}", generation=1, resourceVersion=str(i))
        resources._on_event(WatchEvent("ADDED", obj))
    await resources.apply()
    assert controller.reloads == 1 and len(controller.config.canaries) == 1000
    await resources.publish()
    assert api.status_writes == [], "a follower writes no status"
    leadership.set(True)
    await resources.publish()
    assert len(api.status_writes) == 1000  # the first pass shows each one
    await resources.publish()
    assert len(api.status_writes) == 1000, "nothing changed: no write"
    controller.statuses["orion/c7"] = running("progressing", 0, 5, name="c7")
    await resources.publish()
    assert [name for name, _ in api.status_writes[1000:]] == ["c7"]
    await resources.apply()
    assert controller.reloads == 1, "the same Canaries: no reload"
