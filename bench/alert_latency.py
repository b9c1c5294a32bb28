"""Alert → rollback latency: Alertmanager webhook POST until the routing decision has been applied.

    python bench/alert_latency.py [--mode dry-run|kube|ha|both] [--alerts 1000] [--canaries 1000] [--warmup 50]
    python bench/alert_latency.py --load [--alerts 1000] [--canaries 1000]   (see bench/load.py)

Three modes, each against its own bare-handler baseline measured in the same run (`both`, the default,
runs dry-run then kube, one after the other; `ha` runs alone):

**dry-run.** The real daemon (`canaryd run`, `kubernetes.enabled: false`) runs as a subprocess on a free
loopback port, with N distinct canaries. For each alert, untimed, the target canary is started
(`POST /api/v1/canaries/{ns}/{name}/start`); then `POST /webhooks/alertmanager` with an Alertmanager v4
payload (CanaryHighErrorRate, labels canary/namespace, a unique fingerprint) is timed from the client.
The webhook answers only after the canary's task has applied the rollback (the dry-run router's
write), so the response time is the measure. Each answer is checked (outcome accepted, "rollback
applied") and so is the canary's state through the API (rolled_back, weight 0, trigger alert), untimed.

**kube.** The same daemon with `kubernetes: {enabled: true, kubeconfig: ...}` (no leader election)
against the fake API server (tests/fake_kube.py, on a thread of this process), which holds N Istio
canaries: a VirtualService in the seed's layout (x-canary and x-user-tier header routes first, then
the weighted route) and stable/canary Deployments, rolled out. Untimed, the start writes 5 % (a PATCH
of the VirtualService). Timed: from sending the webhook POST until the fake *receives* the PATCH that
sets that VirtualService's canary weight to 0 (the issue's measure), and, separately, until the
webhook's response, which comes after the rollback's second write (the canary Deployment scaled to 0
through its scale subresource). Both ends are on one clock: the fake stamps `received_at` with
`time.monotonic()` when its handler starts, and the sender reads `time.monotonic()` too (on Linux
CLOCK_MONOTONIC, in one process). The fake's `on_request` callback stamps when its handler has
finished (the response body already encoded), so each alert is also split into the daemon's part and
the fake's own processing; a short calibration afterwards times the fake's full round trip (HTTP layer
included) for the same GET the daemon makes. Verified per alert, untimed: the PATCH and the scale were
answered 200, the VirtualService reads 100/0 with state rolled_back by alert in its annotation, the
canary Deployment has 0 replicas, and the API says rolled_back at 0 %.

**ha.** Two such daemons against one fake API server, both with leader election on one Lease, as two
replicas behind one Service: the alerts alternate between them (a Service's round robin), so half
reach the follower. Each alert fires for a different progressing canary (started, untimed, through
the leader). Timed: the webhook POST until its answer, which comes once the weights are written
(the follower writes a rollback itself, as a compare-and-set on the route's state). Verified per
alert, untimed: HTTP 200 and "rollback applied" (any other answer stops the bench), the
VirtualService reads 100/0 with state rolled_back; the report counts the answers by status and by
replica.

In each mode the same client times the same payload against a bare aiohttp server whose handler only
answers 200 (bench/bare_server.py, also a subprocess). The two are interleaved alert by alert,
alternating which goes first, so that noise from the shared machine hits both alike; each timed
request directly follows an untimed one to the same server (the daemon's start, the bare server's
GET /healthz), so neither is timed just out of a long idle. Targets: p99 ≤ 20 ms and canaryd / bare ≤ 3.

What is swappable: a `Target` (prepare, fire, verify) says what is timed; `Shot.parts` carries further
measures of the same alert (the kube target's breakdown).

Workarounds and choices:
- The analysis interval is set far out (12 h), so no Prometheus tick runs during the measurement:
  this measures the alert path alone (Prometheus is not needed; its URL points at a closed port).
  In kube mode that also keeps the manual-weight poll (once per interval) out of the measurement.
- Logs stay at the daemon's defaults (JSON, info) and go to a file, as in production.
- On this VM a process woken after a few ms idle answers slower: the bare server's p50 went from
  0.6 to 1.1 ms when it idled while the daemon worked, which flattered the ratio. Hence the
  untimed request to the same server right before each timed one.
- "Received" is the fake's handler start: aiohttp has read the request head by then, so the few tens
  of microseconds the fake's HTTP layer takes to parse it count against the daemon, not for it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fake_kube import FakeKube, RequestRecord  # noqa: E402
from servers import HOST, ServerError, ServerProcess, free_port  # noqa: E402

NAMESPACE = "bench"
ALERTNAME = "CanaryHighErrorRate"
JSON_HEADERS = {"Content-Type": "application/json"}
P99_TARGET_MS = 20.0
RATIO_TARGET = 3.0
MODES = ("dry-run", "kube", "ha", "both")
HA_CLIENTS = ("canaryd-a", "canaryd-b")  # the two replicas' bearer tokens in the fake

# The kube mode's objects. The weighted route sits after two header routes (the seed's layout, header
# match first), so the PATCH that matters is on http[2]; route[1] is the canary destination.
WEIGHTED_ROUTE = 2
CANARY_WEIGHT_PATH = f"/spec/http/{WEIGHTED_ROUTE}/route/1/weight"
STATE_ANNOTATION = "canaryd.io/state"
STABLE_IMAGE, CANARY_IMAGE = "ghcr.io/orion/app:v1", "ghcr.io/orion/app:v2"
DAEMON_CLIENT = "canaryd"  # the daemon's bearer token in the fake: its requests are told apart by it
BENCH_CLIENT = "bench"
CALIBRATION_GETS = 200


# ---------------------------------------------------------------------------------------------- processes


class CanarydProcess(ServerProcess):
    """`canaryd run --config <workdir>/canaryd.yaml` as a subprocess, from this checkout's daemon/."""

    name = "canaryd"
    ready_path = "/healthz"

    def __init__(self, config: dict[str, Any], *, extra_args: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.extra_args = list(extra_args)
        self.config_path = self.workdir / "canaryd.yaml"

    def prepare(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))

    def command(self) -> list[str]:
        # -c with sys.path set: works whether or not the package is installed in this interpreter.
        boot = (f"import sys; sys.path.insert(0, {str(ROOT / 'daemon')!r}); "
                "from canaryd.cli import main; sys.exit(main())")
        return [sys.executable, "-c", boot, "run", "--config", str(self.config_path), *self.extra_args]


class KubeCanarydProcess(CanarydProcess):
    # Ready, not just up: every canary's route read at start and no watch failing.
    ready_path = "/readyz"


class BareProcess(ServerProcess):
    """bench/bare_server.py: answers 200, does nothing else."""

    name = "bare"
    ready_path = "/healthz"

    def command(self) -> list[str]:
        return [sys.executable, str(ROOT / "bench" / "bare_server.py"), "--host", HOST, "--port", str(self.port)]


def canary_name(i: int) -> str:
    return f"svc-{i}"


def daemon_config(canaries: int, port: int, *, prometheus_url: str | None = None,
                  kubernetes: dict[str, Any] | None = None) -> dict[str, Any]:
    """A config with `canaries` distinct canaries svc-0..svc-{N-1} in namespace "bench"."""
    return {
        "server": {"listen": f"{HOST}:{port}"},
        # Nothing listens there: no tick runs during the bench (see the interval below).
        "prometheus": {"url": prometheus_url or f"http://{HOST}:{free_port()}", "timeout": "2s"},
        "kubernetes": kubernetes or {"enabled": False},
        "defaults": {"interval": "12h", "step_duration": "24h"},
        "canaries": [
            {"name": canary_name(i), "namespace": NAMESPACE, "route": canary_name(i),
             "stable": {"deployment": f"{canary_name(i)}-stable", "selector": f'job="{canary_name(i)}-stable"'},
             "canary": {"deployment": f"{canary_name(i)}-canary", "selector": f'job="{canary_name(i)}-canary"'}}
            for i in range(canaries)
        ],
        "alerts": [{"alertname": ALERTNAME, "action": "rollback"}],
    }


def launch_daemon(canaries: int, workdir: Path) -> CanarydProcess:
    """Build and start the dry-run daemon."""
    port = free_port()
    proc = CanarydProcess(daemon_config(canaries, port), port=port, workdir=workdir / "canaryd", start_timeout=60)
    proc.start()
    return proc


# ---------------------------------------------------------------------------------------------- the cluster


def virtual_service(name: str) -> dict[str, Any]:
    """The seed's VirtualService at 100/0: x-canary and x-user-tier header routes first, then the weights."""
    def header_route(header: str, value: str) -> dict[str, Any]:
        return {"match": [{"headers": {header: {"exact": value}}}],
                "route": [{"destination": {"host": name, "subset": "canary"}}]}

    weighted = {"route": [{"destination": {"host": name, "subset": "stable"}, "weight": 100},
                          {"destination": {"host": name, "subset": "canary"}, "weight": 0}]}
    http = [header_route("x-canary", "true"), header_route("x-user-tier", "beta"), weighted]
    assert http.index(weighted) == WEIGHTED_ROUTE
    return {"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": NAMESPACE}, "spec": {"hosts": [name], "http": http}}


def deployment(name: str, image: str, replicas: int = 2) -> dict[str, Any]:
    containers = [{"name": "app", "image": image, "ports": [{"containerPort": 8080}]},
                  {"name": "sidecar", "image": "envoy:1.30"}]
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": containers}}}}


def populate(fake: FakeKube, canaries: int) -> None:
    """N Istio canaries: a VirtualService and stable/canary Deployments each, both rolled out."""
    for i in range(canaries):
        name = canary_name(i)
        fake.add(virtual_service(name))
        for arm, image in (("stable", STABLE_IMAGE), ("canary", CANARY_IMAGE)):
            fake.add(deployment(f"{name}-{arm}", image))
            fake.complete_rollout(NAMESPACE, f"{name}-{arm}")


@dataclass(frozen=True)
class Handled:
    """One request the fake answered: its record (with `received_at`) and when its handler finished."""

    record: RequestRecord
    done_at: float

    @property
    def handler_seconds(self) -> float:
        return self.done_at - self.record.received_at


@dataclass
class RequestLog:
    """Filled by the fake's `on_request` (on its loop thread); list.append is atomic, so reading from
    the bench's thread is safe. A request is recorded before the fake answers it, so a response seen
    by the daemon (and the webhook answer that follows) happens after the record is here."""

    handled: list[Handled] = field(default_factory=list)

    def __call__(self, record: RequestRecord) -> None:
        self.handled.append(Handled(record, time.monotonic()))

    def since(self, cursor: int) -> list[Handled]:
        return self.handled[cursor:]


def launch_kube_daemon(canaries: int, workdir: Path, fake: FakeKube) -> CanarydProcess:
    """Fill the fake with N canaries and start `canaryd run` against it (no leader election)."""
    populate(fake, canaries)
    kubeconfig = fake.kubeconfig(workdir, DAEMON_CLIENT)
    port = free_port()
    config = daemon_config(canaries, port, kubernetes={"enabled": True, "kubeconfig": str(kubeconfig)})
    proc = KubeCanarydProcess(config, port=port, workdir=workdir / "canaryd-kube", start_timeout=120)
    proc.start()
    return proc


# ---------------------------------------------------------------------------------------------- payloads


def alert_payload(canary: str, fingerprint: str, starts_at: datetime) -> bytes:
    """An Alertmanager webhook v4 body with one firing alert, as Alertmanager sends it."""
    labels = {"alertname": ALERTNAME, "canary": canary, "namespace": NAMESPACE, "severity": "critical"}
    annotations = {"summary": f"{canary} 5xx rate above 5 %", "description": "canary error rate is 7.3 %"}
    # Go writes 9 fractional digits; so do we, so the daemon's timestamp parser does its real work.
    stamp = starts_at.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"
    doc = {
        "version": "4",
        "groupKey": '{}/{severity="critical"}:{alertname="' + ALERTNAME + '", canary="' + canary + '"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "canaryd",
        "groupLabels": {"alertname": ALERTNAME, "canary": canary},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "http://alertmanager.monitoring:9093",
        "alerts": [{
            "status": "firing",
            "labels": labels,
            "annotations": annotations,
            "startsAt": stamp,
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.monitoring:9090/graph?g0.expr=canary_error_rate",
            "fingerprint": fingerprint,
        }],
    }
    return json.dumps(doc).encode()


# ---------------------------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Shot:
    seconds: float  # the measure compared with the bare handler; nan when it could not be taken
    status: int
    body: bytes
    parts: tuple[tuple[str, float], ...] = ()  # further measures of the same alert, in seconds
    problem: str = ""  # why `seconds` is missing, for verify to report


class Target(Protocol):
    """What one timed alert is. `prepare` and `verify` are not timed; `fire` is."""

    name: str

    async def prepare(self, session: aiohttp.ClientSession, i: int) -> None: ...

    async def fire(self, session: aiohttp.ClientSession, i: int, payload: bytes) -> Shot: ...

    async def verify(self, session: aiohttp.ClientSession, i: int, shot: Shot) -> None: ...


class BenchError(RuntimeError):
    pass


async def timed_post(session: aiohttp.ClientSession, url: str, payload: bytes) -> Shot:
    started = time.perf_counter()
    async with session.post(url, data=payload, headers=JSON_HEADERS) as resp:
        body = await resp.read()
    return Shot(time.perf_counter() - started, resp.status, body)


async def _expect(session: aiohttp.ClientSession, method: str, url: str, status: int = 200) -> Any:
    async with session.request(method, url) as resp:
        body = await resp.read()
        if resp.status != status:
            raise BenchError(f"{method} {url}: HTTP {resp.status} (expected {status}): {body[:300]!r}")
    return json.loads(body)


def _check_applied(i: int, name: str, shot: Shot) -> None:
    if shot.status != 200:
        raise BenchError(f"alert {i} ({name}): HTTP {shot.status}: {shot.body[:300]!r}")
    outcomes = json.loads(shot.body).get("alerts") or [{}]
    got = outcomes[0]
    if got.get("outcome") != "accepted" or got.get("result") != "rollback applied":
        raise BenchError(f"alert {i} ({name}): not applied: {got}")


async def _check_rolled_back(session: aiohttp.ClientSession, base_url: str, i: int, name: str) -> None:
    state = await _expect(session, "GET", f"{base_url}/api/v1/canaries/{NAMESPACE}/{name}")
    trigger = (state.get("last_decision") or {}).get("trigger")
    if state.get("phase") != "rolled_back" or state.get("weight") != 0 or trigger != "alert":
        raise BenchError(f"alert {i} ({name}): canary is {state.get('phase')} at {state.get('weight')} % "
                         f"(trigger {trigger}), expected rolled_back at 0 % by alert")


async def _start(session: aiohttp.ClientSession, base_url: str, name: str) -> None:
    status = await _expect(session, "POST", f"{base_url}/api/v1/canaries/{NAMESPACE}/{name}/start")
    if status.get("phase") != "progressing" or status.get("weight") != 5:
        raise BenchError(f"start of {name} left it {status.get('phase')!r} at {status.get('weight')} %, "
                         "not progressing at 5 %")


@dataclass(frozen=True)
class DryRunDaemon:
    """Webhook answered after the dry-run router's write: the routing decision applied."""

    base_url: str
    canaries: int
    name: str = "canaryd webhook → rollback applied"

    def canary(self, i: int) -> str:
        return canary_name(i % self.canaries)

    async def prepare(self, session: aiohttp.ClientSession, i: int) -> None:
        await _start(session, self.base_url, self.canary(i))

    async def fire(self, session: aiohttp.ClientSession, i: int, payload: bytes) -> Shot:
        return await timed_post(session, f"{self.base_url}/webhooks/alertmanager", payload)

    async def verify(self, session: aiohttp.ClientSession, i: int, shot: Shot) -> None:
        name = self.canary(i)
        _check_applied(i, name, shot)
        await _check_rolled_back(session, self.base_url, i, name)


# The kube target's measures of one alert, in the order they happen. Names are the report's rows.
WEBHOOK_RESPONSE = "webhook response (PATCH and scale to 0 done)"
TO_GET = "daemon: webhook sent → GET VirtualService received"
GET_HANDLER = "fake: GET handler"
GET_TO_PATCH = "fake answers GET + daemon → PATCH received"
PATCH_HANDLER = "fake: PATCH handler"
PATCH_TO_SCALE = "fake answers PATCH + daemon → scale received"
SCALE_HANDLER = "fake: scale handler"
SCALE_TO_RESPONSE = "fake answers scale + daemon → webhook response"
FAKE_IN_PATCH = "fake handlers within webhook → PATCH"
FAKE_IN_RESPONSE = "fake handlers within webhook response"
PATCH_LESS_FAKE = "webhook → PATCH, less the fake's GET handler"
BREAKDOWN = (TO_GET, GET_HANDLER, GET_TO_PATCH, PATCH_HANDLER, PATCH_TO_SCALE, SCALE_HANDLER, SCALE_TO_RESPONSE)


def _sets_canary_weight(record: RequestRecord, weight: int) -> bool:
    ops = record.body if isinstance(record.body, list) else []
    return any(isinstance(op, dict) and op.get("op") in ("add", "replace") and op.get("path") == CANARY_WEIGHT_PATH
               and op.get("value") == weight for op in ops)


def _is(h: Handled, verb: str, resource: str, name: str, subresource: str | None = None) -> bool:
    r = h.record
    return (r.token == DAEMON_CLIENT and r.verb == verb and r.resource == resource and r.name == name
            and r.subresource == subresource)


@dataclass(frozen=True)
class KubeDaemon:
    """Webhook sent → the fake API server receives the PATCH setting the canary's weight to 0."""

    base_url: str
    canaries: int
    fake: FakeKube
    log: RequestLog
    name: str = "canaryd (kube) webhook → PATCH received by the fake"

    def canary(self, i: int) -> str:
        return canary_name(i % self.canaries)

    async def prepare(self, session: aiohttp.ClientSession, i: int) -> None:
        await _start(session, self.base_url, self.canary(i))

    async def fire(self, session: aiohttp.ClientSession, i: int, payload: bytes) -> Shot:
        cursor = len(self.log.handled)
        # time.monotonic: the clock the fake stamps `received_at` with (same process, CLOCK_MONOTONIC).
        sent = time.monotonic()
        async with session.post(f"{self.base_url}/webhooks/alertmanager", data=payload, headers=JSON_HEADERS) as resp:
            body = await resp.read()
        answered = time.monotonic()
        # The clock has stopped: what follows reads the fake's timestamps of this alert's requests.
        return self._shot(self.canary(i), sent, answered, resp.status, body, self.log.since(cursor))

    @staticmethod
    def _shot(name: str, sent: float, answered: float, status: int, body: bytes, seen: list[Handled]) -> Shot:
        patch = next((h for h in seen if _is(h, "patch", "virtualservices", name)
                      and h.record.status == 200 and _sets_canary_weight(h.record, 0)), None)
        if patch is None:
            writes = [f"{h.record.verb} {h.record.path} → {h.record.status}" for h in seen if h.record.is_write]
            return Shot(math.nan, status, body, problem=f"no PATCH setting {CANARY_WEIGHT_PATH} to 0 was answered "
                        f"200; the daemon's writes: {writes or 'none'}")
        get = next((h for h in reversed(seen) if _is(h, "get", "virtualservices", name)
                    and h.record.received_at <= patch.record.received_at), None)
        scale = next((h for h in seen if _is(h, "patch", "deployments", f"{name}-canary", "scale")
                      and h.record.received_at >= patch.record.received_at), None)
        if get is None or scale is None:
            return Shot(math.nan, status, body, problem=f"missing the daemon's {'GET' if get is None else 'scale'} "
                        "request around the PATCH")
        if scale.record.status != 200 or (scale.record.body or {}).get("spec", {}).get("replicas") != 0:
            return Shot(math.nan, status, body, problem=f"the scale of {name}-canary was {scale.record.body} "
                        f"→ {scale.record.status}, expected replicas 0 → 200")
        to_patch = patch.record.received_at - sent
        fake_in_patch = get.handler_seconds
        fake_in_response = get.handler_seconds + patch.handler_seconds + scale.handler_seconds
        parts = {
            WEBHOOK_RESPONSE: answered - sent,
            TO_GET: get.record.received_at - sent,
            GET_HANDLER: get.handler_seconds,
            GET_TO_PATCH: patch.record.received_at - get.done_at,
            PATCH_HANDLER: patch.handler_seconds,
            PATCH_TO_SCALE: scale.record.received_at - patch.done_at,
            SCALE_HANDLER: scale.handler_seconds,
            SCALE_TO_RESPONSE: answered - scale.done_at,
            FAKE_IN_PATCH: fake_in_patch,
            FAKE_IN_RESPONSE: fake_in_response,
            PATCH_LESS_FAKE: to_patch - fake_in_patch,
        }
        return Shot(to_patch, status, body, tuple(parts.items()))

    async def verify(self, session: aiohttp.ClientSession, i: int, shot: Shot) -> None:
        name = self.canary(i)
        _check_applied(i, name, shot)
        if shot.problem:
            raise BenchError(f"alert {i} ({name}): {shot.problem}")
        vs = self.fake.get_object("virtualservices", NAMESPACE, name) or {}
        route = vs["spec"]["http"][WEIGHTED_ROUTE]["route"]
        saved = json.loads(vs["metadata"].get("annotations", {}).get(STATE_ANNOTATION, "{}"))
        trigger = (saved.get("last_decision") or {}).get("trigger")
        if (route[0]["weight"], route[1]["weight"]) != (100, 0) or saved.get("phase") != "rolled_back" \
                or trigger != "alert":
            raise BenchError(f"alert {i} ({name}): the VirtualService has {route[0]['weight']}/{route[1]['weight']} "
                             f"and state {saved.get('phase')} (trigger {trigger}), expected 100/0, rolled_back by alert")
        canary = self.fake.get_object("deployments", NAMESPACE, f"{name}-canary") or {}
        if canary.get("spec", {}).get("replicas") != 0:
            raise BenchError(f"alert {i} ({name}): {name}-canary has {canary.get('spec', {}).get('replicas')} "
                             "replicas after the rollback, expected 0")
        await _check_rolled_back(session, self.base_url, i, name)


@dataclass(frozen=True)
class Bare:
    base_url: str
    name: str = "bare aiohttp handler (answers 200)"

    async def prepare(self, session: aiohttp.ClientSession, i: int) -> None:
        # The counterpart of the daemon's untimed start request, so both are equally warm.
        async with session.get(f"{self.base_url}/healthz") as resp:
            await resp.read()

    async def fire(self, session: aiohttp.ClientSession, i: int, payload: bytes) -> Shot:
        return await timed_post(session, f"{self.base_url}/webhooks/alertmanager", payload)

    async def verify(self, session: aiohttp.ClientSession, i: int, shot: Shot) -> None:
        if shot.status != 200:
            raise BenchError(f"bare server: HTTP {shot.status}")


# ---------------------------------------------------------------------------------------------- measuring


@dataclass
class Measured:
    times: dict[str, list[float]]  # target name → its measure per alert, seconds
    parts: dict[str, dict[str, list[float]]]  # target name → part name → seconds per alert
    took: float = 0.0


async def measure(targets: Sequence[Target], alerts: int, warmup: int, canaries: int) -> Measured:
    """Interleaved: for each alert, every target once, the order alternating. Seconds per target."""
    out = Measured({t.name: [] for t in targets}, {t.name: {} for t in targets})
    run = uuid.uuid4().hex[:8]
    started = time.monotonic()
    connector = aiohttp.TCPConnector(limit_per_host=1)  # keep-alive: one connection per server
    async with aiohttp.ClientSession(connector=connector) as session:
        for i in range(warmup + alerts):
            starts_at = datetime.now(UTC)
            order = list(targets) if i % 2 == 0 else list(reversed(targets))
            shots = []
            for k, t in enumerate(order):
                # Each timed request directly follows an untimed one to the same server, for both
                # targets alike: a server just woken from a long idle answers slower (measured: the
                # bare server's p50 goes from 0.6 to 1.1 ms when it idles while the other works).
                await t.prepare(session, i)
                # Built before the clock starts: the client's JSON encoding is not the daemon's time.
                payload = alert_payload(canary_name(i % canaries), f"{run}{i:08x}{k}", starts_at)
                shots.append(await t.fire(session, i, payload))
            # Verified after both shots, so no verification request sits between them.
            for t, shot in zip(order, shots, strict=True):
                await t.verify(session, i, shot)
                if i >= warmup:
                    out.times[t.name].append(shot.seconds)
                    for part, seconds in shot.parts:
                        out.parts[t.name].setdefault(part, []).append(seconds)
    out.took = time.monotonic() - started
    return out


async def calibrate_fake(fake: FakeKube, log: RequestLog, n: int) -> tuple[list[float], list[float]]:
    """The fake's full cost of the daemon's GET of a VirtualService, HTTP layer included: round trips
    from a plain aiohttp client (same keep-alive set-up as the bench's) and the handler's share of each."""
    url = f"{fake.url}/apis/networking.istio.io/v1/namespaces/{NAMESPACE}/virtualservices/{canary_name(0)}"
    headers = {"Authorization": f"Bearer {BENCH_CLIENT}", "Accept": "application/json"}
    trips: list[float] = []
    handlers: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit_per_host=1)) as session:
        for k in range(n + 10):
            cursor = len(log.handled)
            started = time.monotonic()
            async with session.get(url, headers=headers) as resp:
                await resp.read()
            took = time.monotonic() - started
            if resp.status != 200:
                raise BenchError(f"calibration GET {url}: HTTP {resp.status}")
            mine = [h for h in log.since(cursor) if h.record.token == BENCH_CLIENT]
            if k >= 10 and mine:  # the first few warm the connection
                trips.append(took)
                handlers.append(mine[0].handler_seconds)
    return trips, handlers


# ---------------------------------------------------------------------------------------------- reporting


def stats_ms(seconds: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000.0
    return {"n": float(len(ms)), "p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
            "p99": float(np.percentile(ms, 99)), "max": float(ms.max()), "mean": float(ms.mean())}


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _stats_table(rows: Iterator[tuple[str, dict[str, float]]], label: str = "endpoint") -> list[str]:
    lines = [f"| {label} | n | p50 ms | p90 ms | p99 ms | max ms | mean ms |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, s in rows:
        lines.append(f"| {name} | {s['n']:.0f} | {s['p50']:.2f} | {s['p90']:.2f} | {s['p99']:.2f} | "
                     f"{s['max']:.2f} | {s['mean']:.2f} |")
    return lines


def _target_rows(what: str, daemon: dict[str, float], bare: dict[str, float]) -> list[str]:
    r50, r99 = daemon["p50"] / bare["p50"], daemon["p99"] / bare["p99"]
    return [f"| p99 {what} | {daemon['p99']:.2f} ms | ≤ {P99_TARGET_MS:.0f} ms | "
            f"{verdict(daemon['p99'] <= P99_TARGET_MS)} |",
            f"| ratio {what} / bare, p50 | {r50:.2f} ({daemon['p50']:.2f} / {bare['p50']:.2f} ms) | "
            f"≤ {RATIO_TARGET:.0f} | {verdict(r50 <= RATIO_TARGET)} |",
            f"| ratio {what} / bare, p99 | {r99:.2f} ({daemon['p99']:.2f} / {bare['p99']:.2f} ms) | "
            f"≤ {RATIO_TARGET:.0f} | {verdict(r99 <= RATIO_TARGET)} |"]


def report(daemon: dict[str, float], bare: dict[str, float], daemon_name: str, bare_name: str,
           meta: str) -> str:
    """The dry-run mode's tables."""
    lines = [meta, "", *_stats_table(iter(((daemon_name, daemon), (bare_name, bare))))]
    lines += ["", "| target | measured | limit | result |", "|---|---:|---:|---|",
              *_target_rows("webhook → rollback applied", daemon, bare)]
    return "\n".join(lines)


def kube_report(measured: Measured, daemon_name: str, bare_name: str, calibration: tuple[list[float], list[float]],
                meta: str) -> str:
    """The kube mode's tables: the measure, its breakdown on the fake's timestamps, the targets."""
    parts = measured.parts[daemon_name]
    d, b = stats_ms(measured.times[daemon_name]), stats_ms(measured.times[bare_name])
    response = stats_ms(parts[WEBHOOK_RESPONSE])
    lines = [meta, "", *_stats_table(iter(((daemon_name, d), (f"canaryd (kube) {WEBHOOK_RESPONSE}", response),
                                           (bare_name, b))))]
    trips, handlers = calibration
    breakdown = [(name, stats_ms(parts[name])) for name in (*BREAKDOWN, FAKE_IN_PATCH, FAKE_IN_RESPONSE, PATCH_LESS_FAKE)]
    breakdown += [("calibration: GET VirtualService round trip, bench client → fake", stats_ms(trips)),
                  ("calibration: its fake handler", stats_ms(handlers))]
    lines += ["", "Per alert, on the fake's timestamps (a handler runs from `received_at` to its `on_request`):", "",
              *_stats_table(iter(breakdown), "part")]
    mean_patch, mean_response = float(np.mean(measured.times[daemon_name])), float(np.mean(parts[WEBHOOK_RESPONSE]))
    in_patch, in_response = float(np.mean(parts[FAKE_IN_PATCH])), float(np.mean(parts[FAKE_IN_RESPONSE]))
    # The fake's HTTP layer (parsing, writing the answer) is outside its handler: the calibration's round
    # trip less its handler bounds it from above (the client's side of the round trip is in it too).
    http_layer = max(0.0, float(np.median(trips) - np.median(handlers)))
    lines += ["", f"The fake's own processing: its handlers are {100 * in_patch / mean_patch:.0f} % of the mean "
              f"webhook → PATCH (one GET) and {100 * in_response / mean_response:.0f} % of the mean webhook response "
              f"(GET, PATCH, scale). With its HTTP layer too (at most {1000 * http_layer:.2f} ms a request: the "
              f"calibration's round trip less its handler, p50), at most "
              f"{100 * (in_patch + http_layer) / mean_patch:.0f} % and "
              f"{100 * (in_response + 3 * http_layer) / mean_response:.0f} %; the rest is canaryd's."]
    lines += ["", "| target | measured | limit | result |", "|---|---:|---:|---|",
              *_target_rows("webhook → PATCH received (the issue's measure)", d, b),
              *_target_rows("webhook response", response, b)]
    return "\n".join(lines)


def describe_load(took: float) -> str:
    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; {took:.1f} s"


# ---------------------------------------------------------------------------------------------- modes


def run_dry_run(args: argparse.Namespace, workdir: Path) -> str:
    daemon = bare = None
    try:
        daemon = launch_daemon(args.canaries, workdir)
        bare = BareProcess(workdir=workdir / "bare")
        bare.start()
        targets: list[Target] = [DryRunDaemon(daemon.url, args.canaries), Bare(bare.url)]
        try:
            measured = asyncio.run(measure(targets, args.alerts, args.warmup, args.canaries))
        except BenchError as e:
            raise BenchError(f"{e}\n{daemon.log_tail()}") from e
    finally:
        for proc in (daemon, bare):
            if proc is not None:
                proc.stop()
    d, b = targets[0].name, targets[1].name
    meta = (f"alert_latency, dry-run: {args.alerts} alerts (+{args.warmup} warm-up) over {args.canaries} canaries, "
            f"dry-run canaryd and bare aiohttp as subprocesses on loopback, one keep-alive client, "
            f"interleaved; every rollback verified through the API; {describe_load(measured.took)}")
    return report(stats_ms(measured.times[d]), stats_ms(measured.times[b]), d, b, meta)


def run_kube(args: argparse.Namespace, workdir: Path) -> str:
    daemon = bare = None
    log = RequestLog()
    with FakeKube(tokens=[DAEMON_CLIENT, BENCH_CLIENT]).in_thread() as fake:
        fake.on_request = log
        try:
            daemon = launch_kube_daemon(args.canaries, workdir, fake)
            bare = BareProcess(workdir=workdir / "bare-kube")
            bare.start()
            targets: list[Target] = [KubeDaemon(daemon.url, args.canaries, fake, log), Bare(bare.url)]
            try:
                measured = asyncio.run(measure(targets, args.alerts, args.warmup, args.canaries))
            except BenchError as e:
                raise BenchError(f"{e}\n{daemon.log_tail()}") from e
            calibration = asyncio.run(calibrate_fake(fake, log, CALIBRATION_GETS))
            requests = len(fake.requests)
        finally:
            for proc in (daemon, bare):
                if proc is not None:
                    proc.stop()
            fake.on_request = None
    d, b = targets[0].name, targets[1].name
    meta = (f"alert_latency, kube: {args.alerts} alerts (+{args.warmup} warm-up) over {args.canaries} Istio canaries "
            f"(VirtualService + 2 Deployments each) in the fake API server (tests/fake_kube.py, a thread of the "
            f"bench process, {requests} requests served); canaryd `kubernetes.enabled: true`, no leader election, "
            f"and bare aiohttp as subprocesses on loopback, one keep-alive client, interleaved; every rollback "
            f"verified in the fake and through the API; {describe_load(measured.took)}")
    return kube_report(measured, d, b, calibration, meta)


@dataclass
class HaDaemons:
    """Two replicas, one Service address alternating between them: alert i reaches replica i % 2."""

    leader_url: str
    urls: tuple[str, str]
    canaries: int
    fake: FakeKube
    answers: dict[str, int] = field(default_factory=dict)  # "replica (leader|follower) → status" → count
    name: str = "canaryd ×2 (one Lease) webhook → rollback written"

    def canary(self, i: int) -> str:
        return canary_name(i % self.canaries)

    def url(self, i: int) -> str:
        return self.urls[i % 2]

    async def prepare(self, session: aiohttp.ClientSession, i: int) -> None:
        await _start(session, self.leader_url, self.canary(i))  # only the leader starts rollouts
        async with session.get(f"{self.url(i)}/healthz") as resp:  # the replica the alert reaches, warm
            await resp.read()

    async def fire(self, session: aiohttp.ClientSession, i: int, payload: bytes) -> Shot:
        shot = await timed_post(session, f"{self.url(i)}/webhooks/alertmanager", payload)
        role = "leader" if self.url(i) == self.leader_url else "follower"
        key = f"{role} → {shot.status}"
        self.answers[key] = self.answers.get(key, 0) + 1
        return shot

    async def verify(self, session: aiohttp.ClientSession, i: int, shot: Shot) -> None:
        name = self.canary(i)
        _check_applied(i, name, shot)  # a 200 saying "rollback applied", nothing else
        vs = self.fake.get_object("virtualservices", NAMESPACE, name) or {}
        route = vs["spec"]["http"][WEIGHTED_ROUTE]["route"]
        saved = json.loads(vs["metadata"].get("annotations", {}).get(STATE_ANNOTATION, "{}"))
        if (route[0]["weight"], route[1]["weight"]) != (100, 0) or saved.get("phase") != "rolled_back":
            raise BenchError(f"alert {i} ({name}) answered 200 but the VirtualService has "
                             f"{route[0]['weight']}/{route[1]['weight']}, state {saved.get('phase')}")


async def _leader(session: aiohttp.ClientSession, urls: Sequence[str], timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leading = [u for u in urls if (await _expect(session, "GET", f"{u}/readyz")).get("leader")]
        if len(leading) == 1:
            return leading[0]
        await asyncio.sleep(0.2)
    raise BenchError(f"no single leader among {', '.join(urls)} within {timeout:.0f} s")


async def _find_leader(urls: Sequence[str]) -> str:
    async with aiohttp.ClientSession() as session:
        return await _leader(session, urls)


def launch_ha_daemons(canaries: int, workdir: Path, fake: FakeKube) -> list[CanarydProcess]:
    populate(fake, canaries)
    procs: list[CanarydProcess] = []
    for client in HA_CLIENTS:
        port = free_port()
        kube = {"enabled": True, "kubeconfig": str(fake.kubeconfig(workdir, client)),
                "leader_election": {"enabled": True, "namespace": NAMESPACE, "lease": "canaryd"}}
        proc = KubeCanarydProcess(daemon_config(canaries, port, kubernetes=kube), port=port,
                                  workdir=workdir / f"canaryd-ha-{client}", start_timeout=120)
        procs.append(proc)
        proc.start()
    return procs


def run_ha(args: argparse.Namespace, workdir: Path) -> str:
    # One canary per alert, warm-up included: a canary rolled back is at 0 replicas, and a second rollout
    # of it would wait for its pods (a new start scales the canary up first), which this does not measure.
    canaries = max(args.canaries, args.alerts + args.warmup)
    args = argparse.Namespace(**{**vars(args), "canaries": canaries})
    procs: list[CanarydProcess] = []
    bare = None
    with FakeKube(tokens=[*HA_CLIENTS, BENCH_CLIENT]).in_thread() as fake:
        try:
            procs = launch_ha_daemons(args.canaries, workdir, fake)
            bare = BareProcess(workdir=workdir / "bare-ha")
            bare.start()
            urls = (procs[0].url, procs[1].url)
            ha = HaDaemons(asyncio.run(_find_leader(urls)), urls, args.canaries, fake)
            targets: list[Target] = [ha, Bare(bare.url)]
            try:
                measured = asyncio.run(measure(targets, args.alerts, args.warmup, args.canaries))
            except BenchError as e:
                raise BenchError(f"{e}\n{procs[0].log_tail()}\n{procs[1].log_tail()}") from e
        finally:
            for proc in (*procs, bare):
                if proc is not None:
                    proc.stop()
    d, b = targets[0].name, targets[1].name
    answers = ", ".join(f"{k}: {v}" for k, v in sorted(ha.answers.items()))
    meta = (f"alert_latency, ha: {args.alerts} alerts (+{args.warmup} warm-up), each for a different progressing "
            f"canary of {args.canaries} (Istio, in the fake API server), sent alternately to two `canaryd run` "
            f"replicas with leader election on one Lease, as a Service would; answers (warm-up included): "
            f"{answers}; every 200 checked against the VirtualService (100/0, rolled_back); "
            f"{describe_load(measured.took)}")
    daemon, others = stats_ms(measured.times[d]), sum(v for k, v in ha.answers.items() if not k.endswith("200"))
    lines = [meta, "", *_stats_table(iter(((d, daemon), (b, stats_ms(measured.times[b]))))), "",
             "| target | measured | limit | result |", "|---|---:|---:|---|",
             f"| p99 webhook → rollback written, either replica | {daemon['p99']:.2f} ms | ≤ {P99_TARGET_MS:.0f} ms | "
             f"{verdict(daemon['p99'] <= P99_TARGET_MS)} |",
             f"| answers other than 200 | {others} | 0 | {verdict(others == 0)} |"]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=MODES, default="both",
                   help="dry-run: routing in memory; kube: up to the PATCH received by a fake API server; "
                        "ha: two replicas with leader election, alerts alternating between them (default both: "
                        "dry-run and kube)")
    p.add_argument("--alerts", type=int, default=1000, help="timed alerts per mode (default 1000)")
    p.add_argument("--canaries", type=int, default=1000, help="distinct canaries configured (default 1000)")
    p.add_argument("--warmup", type=int, default=50, help="untimed alerts first (default 50)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, config)")
    p.add_argument("--load", action="store_true",
                   help="instead: idle, then with --canaries canaries progressing and /metrics scraped every "
                        "second, webhook and /healthz latency (bench/load.py)")
    args = p.parse_args(argv)
    if args.alerts < 1 or args.canaries < 1 or args.warmup < 0:
        p.error("--alerts and --canaries must be >= 1, --warmup >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="canaryd-bench-alerts-"))
    modes: Mapping[str, Any] = {"dry-run": run_dry_run, "kube": run_kube, "ha": run_ha}
    chosen = ["dry-run", "kube"] if args.mode == "both" else [args.mode]
    import load  # bench/load.py, which imports this module's helpers

    if args.load:
        modes, chosen = {"load": load.run_load}, ["load"]
    try:
        for k, mode in enumerate(chosen):
            if k:
                print()
            print(modes[mode](args, workdir), flush=True)
    except (BenchError, load.BenchError, ServerError) as e:
        print(f"alert_latency: {e}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"\nwork directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
