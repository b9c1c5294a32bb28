"""The cluster-facing commands (`status`, `promote`, `rollback [--emergency]`, `deploy --dry-run`,
`monitor`) against the fake API server over real HTTP, and `monitor` against real Prometheus.

Most runs are in-process (`canaryd.cli.main`, a fresh event loop each time, the fake in a thread of
its own); a few run `python -m canaryd.cli` as a subprocess to check what an operator sees. Every
command gets a kubeconfig whose token names it, so the fake counts its requests and writes apart
from anyone else's.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryd.cli import main
from canaryd.kube import rollout_status
from fake_kube import FakeKube, RequestRecord, deployment_object
from servers import ExporterProcess, PrometheusServer, missing_binaries

NS = "orion"
SERVICE = "auth-service"
V1, V2 = "ghcr.io/orion/auth:v1", "ghcr.io/orion/auth:v2"
STATE = "canaryd.io/state"


# ------------------------------------------------------------------------------------------- objects
def header_route(header: str, value: str, service: str = SERVICE) -> dict[str, Any]:
    return {"match": [{"headers": {header: {"exact": value}}}],
            "route": [{"destination": {"host": service, "subset": "canary"}}]}


def virtual_service(service: str = SERVICE, stable: int = 95, canary: int = 5, *,
                    headers_first: bool = True) -> dict[str, Any]:
    """The platform strategy's VirtualService; with `headers_first`, its x-canary and x-user-tier routes come first."""
    weighted = {"route": [
        {"destination": {"host": service, "subset": "stable"}, "weight": stable},
        {"destination": {"host": service, "subset": "canary"}, "weight": canary},
    ]}
    others = [header_route("x-canary", "true", service), header_route("x-user-tier", "beta", service)]
    http = [*others, weighted] if headers_first else [weighted, *others]
    return {"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
            "metadata": {"name": service, "namespace": NS},
            "spec": {"hosts": [service], "http": http}}


def traffic_split(service: str = SERVICE, stable: Any = 950, canary: Any = 50) -> dict[str, Any]:
    """The platform strategy's Linkerd TrafficSplit: shares, 950/50 is 95 %/5 %."""
    return {"apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit",
            "metadata": {"name": f"{service}-split", "namespace": NS},
            "spec": {"service": service, "backends": [
                {"service": f"{service}-stable", "weight": stable},
                {"service": f"{service}-canary", "weight": canary}]}}


def http_route(service: str = SERVICE, stable: int = 9500, canary: int = 500) -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": service, "namespace": NS},
            "spec": {"parentRefs": [{"name": service, "kind": "Service", "group": "", "port": 8080}],
                     "rules": [
                         {"matches": [{"headers": [{"name": "x-canary", "value": "true"}]}],
                          "backendRefs": [{"name": f"{service}-canary", "port": 8080}]},
                         {"backendRefs": [{"name": f"{service}-stable", "port": 8080, "weight": stable},
                                          {"name": f"{service}-canary", "port": 8080, "weight": canary}]}]}}


def broken_route(name: str) -> dict[str, Any]:
    """Routes to the canary and to stable, but none that holds both: nothing canaryd can weigh."""
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"hosts": [name], "http": [
                {"match": [{"headers": {"x-canary": {"exact": "true"}}}],
                 "route": [{"destination": {"host": name, "subset": "canary"}}]},
                {"route": [{"destination": {"host": name, "subset": "stable"}, "weight": 100}]}]}}


def deployment(name: str, image: str, replicas: int = 2, container: str = SERVICE,
               sidecar: bool = True) -> dict[str, Any]:
    return deployment_object(name, image, namespace=NS, replicas=replicas, container=container, sidecar=sidecar)


def add_deployments(fake: FakeKube, service: str = SERVICE, *, stable: str = V1, canary: str = V2) -> None:
    """Stable and canary Deployments, both rolled out and available."""
    for arm, image in (("stable", stable), ("canary", canary)):
        fake.add(deployment(f"{service}-{arm}", image))
        fake.complete_rollout(NS, f"{service}-{arm}")


def images(fake: FakeKube, name: str) -> dict[str, str]:
    dep = fake.get_object("deployments", NS, name)
    assert dep is not None
    return {c["name"]: c["image"] for c in dep["spec"]["template"]["spec"]["containers"]}


def replicas(fake: FakeKube, name: str) -> int:
    dep = fake.get_object("deployments", NS, name)
    assert dep is not None
    return int(dep["spec"]["replicas"])


def saved_state(obj: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(obj["metadata"]["annotations"][STATE]))


# ------------------------------------------------------------------------------------- weights per mesh
def vs_weights(obj: dict[str, Any]) -> tuple[Any, Any]:
    weighted = [r for r in obj["spec"]["http"] if "match" not in r]
    assert len(weighted) == 1
    return weighted[0]["route"][0]["weight"], weighted[0]["route"][1]["weight"]


def ts_weights(obj: dict[str, Any]) -> tuple[Any, Any]:
    return obj["spec"]["backends"][0]["weight"], obj["spec"]["backends"][1]["weight"]


def hr_weights(obj: dict[str, Any]) -> tuple[Any, Any]:
    refs = obj["spec"]["rules"][1]["backendRefs"]
    return refs[0]["weight"], refs[1]["weight"]


MESHES: dict[str, tuple[Callable[..., dict[str, Any]], str, str, Callable[[dict[str, Any]], tuple[Any, Any]],
                        tuple[Any, Any]]] = {
    # mesh: (object, resource, route name, its (stable, canary) weights, those weights after a rollback)
    "istio": (virtual_service, "virtualservices", SERVICE, vs_weights, (100, 0)),
    "linkerd": (traffic_split, "trafficsplits", f"{SERVICE}-split", ts_weights, (1000, 0)),
    "gateway-api": (http_route, "httproutes", SERVICE, hr_weights, (10000, 0)),
}


# ------------------------------------------------------------------------------------------- running
@pytest.fixture
def fake() -> Iterator[FakeKube]:
    with FakeKube().in_thread() as f:
        yield f


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`canaryd ARGV` in-process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_subprocess(*argv: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "canaryd.cli", *argv], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def kube_args(fake: FakeKube, tmp_path: Path, client: str) -> list[str]:
    return ["--kubeconfig", str(fake.kubeconfig(tmp_path, client))]


def writes(fake: FakeKube, client: str) -> list[RequestRecord]:
    return fake.writes(client, exclude=("leases",))


# ------------------------------------------------------------------------------------------- status
def test_status_text_and_json_as_a_subprocess(fake: FakeKube, tmp_path: Path) -> None:
    fake.add(virtual_service())
    add_deployments(fake)
    kc = kube_args(fake, tmp_path, "status")
    # Both at once: each subprocess pays the interpreter's start-up.
    procs = [subprocess.Popen([sys.executable, "-m", "canaryd.cli", "status", SERVICE, *kc, *extra],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
             for extra in ([], ["-o", "json"])]
    (text, text_err), (raw, raw_err) = (p.communicate(timeout=60) for p in procs)
    assert [p.returncode for p in procs] == [0, 0], text_err + raw_err
    assert f"canary    {NS}/{SERVICE} (istio route {SERVICE})" in text
    assert "phase     idle (no canaryd state on the route)" in text
    assert "weight    canary 5 % / stable 95 %" in text
    assert text_err == "" and raw_err == ""
    assert json.loads(raw) == {"namespace": NS, "name": SERVICE, "route": SERVICE, "mesh": "istio",
                               "weight": 5, "stable_weight": 95, "state": {}}
    assert writes(fake, "status") == []


def test_status_shows_the_daemons_state(fake: FakeKube, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vs = virtual_service(stable=75, canary=25)
    state = {"phase": "progressing", "step": 1, "weight": 25, "step_started_at": 1_700_000_000.0,
             "last_decision": {"decision": "advance", "trigger": "analysis", "at": 1_700_000_000.0,
                               "reasons": ["every metric passed at 5 %"]}}
    vs["metadata"]["annotations"] = {STATE: json.dumps(state)}
    fake.add(vs)
    code, out, err = run_cli(capsys, "status", SERVICE, *kube_args(fake, tmp_path, "cli"))
    assert code == 0, err
    assert "phase     progressing" in out
    assert "weight    canary 25 % / stable 75 %" in out
    assert "step      2 of 4 (5, 25, 50, 100)" in out
    assert "since     2023-11-14T22:13:20+00:00" in out
    assert "decision  advance (trigger analysis)" in out and "  - every metric passed at 5 %" in out
    code, out, _ = run_cli(capsys, "status", SERVICE, "-o", "json", *kube_args(fake, tmp_path, "cli"))
    assert code == 0 and json.loads(out)["state"] == state


def test_status_of_a_missing_route_is_one_line_naming_it(fake: FakeKube, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "status", "nosuch", *kube_args(fake, tmp_path, "cli"))
    assert code == 1 and out == ""
    assert err.strip().splitlines() == [f"canaryd status: VirtualService {NS}/nosuch not found "
                                        "(networking.istio.io/v1)"]


# --------------------------------------------------------------------------------- each mesh: status, rollback
@pytest.mark.parametrize("mesh", list(MESHES))
def test_each_mesh_status_and_rollback(mesh: str, fake: FakeKube, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    make, resource, route, weights, after = MESHES[mesh]
    fake.add(make())
    add_deployments(fake)
    before = fake.get_object(resource, NS, route)
    assert before is not None
    kc = kube_args(fake, tmp_path, "cli")

    code, out, err = run_cli(capsys, "status", SERVICE, "--mesh", mesh, "-o", "json", *kc)
    assert code == 0, err
    status = json.loads(out)
    assert (status["route"], status["mesh"], status["weight"], status["stable_weight"]) == (route, mesh, 5, 95)

    code, out, err = run_cli(capsys, "rollback", SERVICE, "--mesh", mesh, *kc)
    assert code == 0, err
    assert out.strip() == f"rolled back {NS}/{SERVICE}: traffic 100 % stable, {SERVICE}-canary scaled to 0"
    obj = fake.get_object(resource, NS, route)
    assert obj is not None
    assert weights(obj) == after  # in the object's own scale: SMI shares, HTTPRoute thousands
    assert replicas(fake, f"{SERVICE}-canary") == 0 and replicas(fake, f"{SERVICE}-stable") == 2
    state = saved_state(obj)
    assert (state["phase"], state["weight"], state["trigger"]) == ("rolled_back", 0, "manual")
    assert state["last_decision"]["reasons"] == ["manual rollback from the command line"]
    # Only the two weights and the annotation changed: the header routes are as they were.
    assert obj["spec"] == make(SERVICE, *after)["spec"]
    assert obj["apiVersion"] == before["apiVersion"] and obj["metadata"]["uid"] == before["metadata"]["uid"]

    # Weights first, then the scale; nothing else is written.
    done = [(r.resource, r.name, r.subresource, r.status) for r in writes(fake, "cli")]
    assert done == [(resource, route, None, 200), ("deployments", f"{SERVICE}-canary", "scale", 200)]

    code, out, err = run_cli(capsys, "status", SERVICE, "--mesh", mesh, *kc)
    assert code == 0, err
    assert "phase     rolled_back" in out and "weight    canary 0 % / stable 100 %" in out
    assert "decision  rollback (trigger manual)" in out


def test_smi_quantities_keep_their_form(fake: FakeKube, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake.add(traffic_split(stable="950m", canary="50m"))
    add_deployments(fake)
    kc = kube_args(fake, tmp_path, "cli")
    code, out, _ = run_cli(capsys, "status", SERVICE, "--mesh", "linkerd", "-o", "json", *kc)
    assert code == 0 and json.loads(out)["weight"] == 5
    code, _, err = run_cli(capsys, "rollback", SERVICE, "--mesh", "linkerd", "--emergency", *kc)
    assert code == 0, err
    obj = fake.get_object("trafficsplits", NS, f"{SERVICE}-split")
    assert obj is not None and ts_weights(obj) == ("1000m", "0m")


def test_emergency_rollback_is_one_write_and_no_scaling(fake: FakeKube, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    fake.add(virtual_service())
    add_deployments(fake)
    code, out, err = run_cli(capsys, "rollback", SERVICE, "--emergency", *kube_args(fake, tmp_path, "cli"))
    assert code == 0, err
    assert out.strip() == f"rolled back {NS}/{SERVICE}: traffic 100 % stable"
    done = writes(fake, "cli")
    assert len(done) == 1 and (done[0].verb, done[0].resource, done[0].status) == ("patch", "virtualservices", 200)
    assert fake.count(token="cli", resource="deployments") == 0  # not even read
    obj = fake.get_object("virtualservices", NS, SERVICE)
    assert obj is not None and vs_weights(obj) == (100, 0)
    assert saved_state(obj)["last_decision"]["reasons"] == ["manual emergency rollback from the command line"]
    assert replicas(fake, f"{SERVICE}-canary") == 2


# ------------------------------------------------------------------------------------------- promote
def test_promote_sets_images_waits_then_moves_traffic_then_scales(fake: FakeKube, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    fake.add(virtual_service(stable=50, canary=50))
    add_deployments(fake)
    fake.auto_rollout = 0.3  # the deployment controller takes 0.3 s to roll out a new template
    # When the route is written, has stable finished rolling out? Looked at as the request arrives.
    at_route_write: list[tuple[bool, str]] = []

    def on_request(r: RequestRecord) -> None:
        if r.resource == "virtualservices" and r.is_write:
            stable = fake.get_object("deployments", NS, f"{SERVICE}-stable")
            assert stable is not None
            at_route_write.append(rollout_status(stable))
    fake.on_request = on_request

    started = time.monotonic()
    code, out, err = run_cli(capsys, "promote", SERVICE, *kube_args(fake, tmp_path, "cli"))
    took = time.monotonic() - started
    fake.on_request = None
    assert code == 0, err
    assert f"promoted: {SERVICE}-stable runs the new version, traffic 100 % stable" in out
    assert images(fake, f"{SERVICE}-stable") == {SERVICE: V2, "sidecar": "envoy:1.30"}
    obj = fake.get_object("virtualservices", NS, SERVICE)
    assert obj is not None and vs_weights(obj) == (100, 0)
    assert replicas(fake, f"{SERVICE}-canary") == 0
    assert saved_state(obj)["phase"] == "succeeded"

    # The order, at the API server: images, (rollout), weights, scale.
    done = [(r.resource, r.name, r.subresource) for r in writes(fake, "cli")]
    assert done == [("deployments", f"{SERVICE}-stable", None), ("virtualservices", SERVICE, None),
                    ("deployments", f"{SERVICE}-canary", "scale")]
    assert at_route_write and at_route_write[0][0], f"weights moved before stable was rolled out: {at_route_write}"
    image_patch = writes(fake, "cli")[0]
    assert image_patch.content_type == "application/json-patch+json"
    assert {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": V2} in image_patch.body
    assert took < 10, f"promote took {took:.1f}s"


def test_promote_stops_when_stable_never_rolls_out(fake: FakeKube, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    fake.add(virtual_service(stable=50, canary=50))
    add_deployments(fake)
    assert fake.auto_rollout is None  # stable's new pods never become available
    config = tmp_path / "canaryd.yaml"
    config.write_text(yaml.safe_dump({
        "defaults": {"progress_deadline": "1s"},
        "canaries": [{"name": SERVICE, "namespace": NS, "route": SERVICE,
                      "stable": {"deployment": f"{SERVICE}-stable", "selector": f'job="{SERVICE}-stable"'},
                      "canary": {"deployment": f"{SERVICE}-canary", "selector": f'job="{SERVICE}-canary"'}}],
    }))
    route_before = fake.get_object("virtualservices", NS, SERVICE)

    started = time.monotonic()
    code, out, err = run_cli(capsys, "promote", SERVICE, "--config", str(config), *kube_args(fake, tmp_path, "cli"))
    took = time.monotonic() - started
    assert code == 1, out + err
    assert "waiting up to 1s for its rollout" in out
    message = err.strip().splitlines()
    assert len(message) == 1 and message[0].startswith("canaryd promote: promotion stopped before moving traffic: "
                                                       f"Deployment {NS}/{SERVICE}-stable rollout did not finish "
                                                       "within 1s"), err
    assert took < 8, f"the 1 s progress deadline took {took:.1f}s"
    # Stable was asked for the new version (step 1), but traffic and the canary are untouched.
    assert images(fake, f"{SERVICE}-stable")[SERVICE] == V2
    assert fake.get_object("virtualservices", NS, SERVICE) == route_before
    assert replicas(fake, f"{SERVICE}-canary") == 2
    assert [(r.resource, r.name) for r in writes(fake, "cli")] == [("deployments", f"{SERVICE}-stable")]


def test_promote_when_stable_lacks_the_canarys_container(fake: FakeKube, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    fake.add(virtual_service())
    fake.add(deployment(f"{SERVICE}-stable", V1, container="other", sidecar=False))
    fake.add(deployment(f"{SERVICE}-canary", V2))
    code, out, err = run_cli(capsys, "promote", SERVICE, *kube_args(fake, tmp_path, "cli"))
    assert code == 1
    assert f"Deployment {NS}/{SERVICE}-stable has none of the canary's containers" in err
    assert writes(fake, "cli") == []


# ------------------------------------------------------------------------------------------- deploy
def test_deploy_dry_run_prints_the_plan_and_writes_nothing(fake: FakeKube, tmp_path: Path) -> None:
    fake.add(virtual_service())
    add_deployments(fake)
    proc = run_subprocess("deploy", SERVICE, "ghcr.io/orion/auth:v3", "--dry-run", "--auto-promote",
                          "--traffic-steps", "5,25,50,100", "--step-duration", "5",
                          *kube_args(fake, tmp_path, "dry"))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"dry run: nothing will be changed in {NS}" in out
    assert f"would set image deployment/{SERVICE}-canary {SERVICE}=ghcr.io/orion/auth:v3 (now {V2})" in out
    assert f"route {SERVICE} (istio) now sends 5 % to the canary" in out
    for i, w in enumerate((5, 25, 50, 100), 1):
        assert f"step {i}: would set weights stable {100 - w} / canary {w} on {SERVICE}" in out
    assert "judge for at least 300s" in out
    assert f"would promote: set {SERVICE}-stable to ghcr.io/orion/auth:v3" in out
    assert fake.count(token="dry") > 0  # it did read the cluster
    assert fake.writes("dry") == []
    assert images(fake, f"{SERVICE}-canary")[SERVICE] == V2


@pytest.mark.parametrize("dry_run", [True, False])
def test_deploy_refuses_a_route_it_cannot_weigh_before_changing_anything(
        dry_run: bool, fake: FakeKube, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add_deployments(fake)
    kc = kube_args(fake, tmp_path, "deploy")
    flags = ["--dry-run"] if dry_run else ["--prometheus-url", "http://127.0.0.1:1"]
    code, _, err = run_cli(capsys, "deploy", SERVICE, "img:v3", *flags, *kc)
    assert code == 2
    assert err.strip().splitlines() == [f"canaryd deploy: VirtualService {NS}/{SERVICE} not found "
                                        "(networking.istio.io/v1)"]
    fake.add(broken_route(SERVICE))
    code, _, err = run_cli(capsys, "deploy", SERVICE, "img:v3", *flags, *kc)
    assert code == 2
    assert err.strip().splitlines() == [f"canaryd deploy: VirtualService {NS}/{SERVICE}: no http route in "
                                        "spec.http holds both the stable and the canary destination: stable "
                                        "'stable' is in http[1]; canary 'canary' is in http[0] (matched by "
                                        "destination.subset, else destination.host)"]
    assert fake.writes("deploy") == []
    assert images(fake, f"{SERVICE}-canary")[SERVICE] == V2


def test_deploy_dry_run_names_a_missing_container(fake: FakeKube, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    fake.add(virtual_service())
    add_deployments(fake)
    code, _, err = run_cli(capsys, "deploy", SERVICE, "img:v3", "--dry-run", "--container", "nope",
                           *kube_args(fake, tmp_path, "dry"))
    assert code == 2
    assert "Deployment has no container 'nope'; containers: auth-service, sidecar" in err
    assert fake.writes("dry") == []


# ------------------------------------------------------------------------------- with real Prometheus
@dataclass
class MetricsEnv:
    prometheus: PrometheusServer
    exporter: ExporterProcess


@pytest.fixture(scope="module")
def metrics_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetricsEnv]:
    """Real Prometheus scraping one exporter: services "good" (healthy) and "bad" (30 % 5xx canary)."""
    missing = missing_binaries()
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed; run: apt-get install -y prometheus prometheus-alertmanager")
    wd = tmp_path_factory.mktemp("cli-metrics")
    exporter = ExporterProcess([f"{n}-{arm}" for n in ("good", "bad") for arm in ("stable", "canary")],
                               labels={"namespace": NS}, rps=300, workdir=wd / "exporter")
    prometheus = PrometheusServer([exporter.address], workdir=wd / "prometheus")
    try:
        exporter.start()
        exporter.control(job="bad-canary", error_rate=0.3)
        prometheus.start()
        prometheus.wait_for_targets_up()
        yield MetricsEnv(prometheus, exporter)
    finally:
        prometheus.stop()
        exporter.stop()


def seed_canary(name: str) -> dict[str, Any]:
    return {"name": name, "namespace": NS, "route": name,
            "stable": {"deployment": f"{name}-stable", "selector": f'job="{name}-stable"'},
            "canary": {"deployment": f"{name}-canary", "selector": f'job="{name}-canary"'}}


def test_monitor_prints_the_table_and_exits_by_the_verdict(metrics_env: MetricsEnv, tmp_path: Path) -> None:
    config = tmp_path / "canaryd.yaml"
    config.write_text(yaml.safe_dump({
        "prometheus": {"url": metrics_env.prometheus.url, "timeout": "2s"},
        "defaults": {"step_duration": "3s", "interval": "1s", "min_requests": 200},
        "canaries": [seed_canary("good"), seed_canary("bad"), seed_canary("silent")],
    }))
    procs = {name: subprocess.Popen(
        [sys.executable, "-m", "canaryd.cli", "monitor", name, "--config", str(config),
         "--interval", "1.5", "--duration", "0.15"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        for name in ("good", "bad", "silent")}
    results = {name: (p.communicate(timeout=60), p.returncode) for name, p in procs.items()}
    for name, ((out, err), code) in results.items():
        print(f"--- monitor {name}: exit {code}\n{out}{err}")

    (out, err), code = results["bad"]
    assert code == 1, out + err
    assert f"{NS}/bad: ROLLBACK" in out
    assert "arm     requests  errors" in out
    row = [line for line in out.splitlines() if line.startswith("canary ")][-1]
    error, success = (float(x) for x in re.findall(r"([0-9.]+) %", row)[:2])
    assert 29 < error < 31 and 69 < success < 71, row  # the canary's error and success rates
    assert "error_rate     FAIL" in out

    (out, err), code = results["good"]
    assert code == 0, out + err
    last = out.strip().split("\n\n")[-1]
    assert f"{NS}/good: ADVANCE" in last, last
    for column in ("requests", "errors", "success", "P50", "P95", "P99", "cpu", "memory"):
        assert column in last
    assert "0.00 %" in last and "100.00 %" in last

    (out, err), code = results["silent"]
    assert code == 3, out + err  # no series at all: hold, never a pass
    assert f"{NS}/silent: HOLD" in out and "no request counts for the canary" in out


# ------------------------------------------------------------------------------------------- deploy
def test_deploy_walks_the_steps_then_promotes_or_rolls_back(metrics_env: MetricsEnv, fake: FakeKube,
                                                            tmp_path: Path) -> None:
    """`canaryd deploy` for real: the good canary is promoted (exit 0), the bad one rolled back (exit 1)."""
    for name in ("good", "bad"):
        fake.add(virtual_service(name, 100, 0))
        add_deployments(fake, name, canary=V1)
    fake.auto_rollout = 0.2
    procs = {name: subprocess.Popen(
        [sys.executable, "-m", "canaryd.cli", "deploy", name, V2, "--container", SERVICE,
         "--step-duration", "0.05", "--min-requests", "50", "--auto-promote",
         "--prometheus-url", metrics_env.prometheus.url, *kube_args(fake, tmp_path, f"deploy-{name}")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        for name in ("good", "bad")}
    results = {name: (p.communicate(timeout=90), p.returncode) for name, p in procs.items()}

    (out, err), code = results["good"]
    assert code == 0, out + err
    assert f"setting {NS}/good-canary {SERVICE}={V2} (was {V1})" in out
    assert "step 1/4: canary at 5 %" in out and "step 4/4 at 100 %" in out
    assert "s left in the step" in out and "error_rate=pass" in out  # progress and live verdicts
    assert "promoted: stable runs the new version, canary scaled to 0" in out
    canary_weights = [w for w in (_canary_weight(r) for r in writes(fake, "deploy-good")) if w is not None]
    assert canary_weights == [5, 25, 50, 100, 0], canary_weights
    assert images(fake, "good-stable")[SERVICE] == V2 and replicas(fake, "good-canary") == 0
    obj = fake.get_object("virtualservices", NS, "good")
    assert obj is not None and vs_weights(obj) == (100, 0) and saved_state(obj)["phase"] == "succeeded"

    (out, err), code = results["bad"]
    assert code == 1, out + err
    assert "rolled back:" in out and "error_rate" in out
    assert vs_weights(fake.get_object("virtualservices", NS, "bad") or {}) == (100, 0)
    assert replicas(fake, "bad-canary") == 0 and images(fake, "bad-stable")[SERVICE] == V1
    assert [w for w in (_canary_weight(r) for r in writes(fake, "deploy-bad")) if w is not None] == [5, 0]


def _canary_weight(r: RequestRecord) -> int | None:
    """The canary weight a VirtualService JSON patch sets (the platform strategy's layout: route[1] is the canary)."""
    if r.resource != "virtualservices":
        return None
    return next((op["value"] for op in r.body if op["op"] == "replace" and op["path"].endswith("/route/1/weight")),
                None)
