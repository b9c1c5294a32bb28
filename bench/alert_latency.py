"""Alert → rollback latency: Alertmanager webhook POST until the routing decision has been applied.

    python bench/alert_latency.py [--alerts 1000] [--canaries 1000] [--warmup 50]

The real daemon (`canaryd run`, dry-run: `kubernetes.enabled: false`) runs as a subprocess on a free
loopback port, with N distinct canaries. For each alert, untimed, the target canary is started
(`POST /api/v1/canaries/{ns}/{name}/start`); then `POST /webhooks/alertmanager` with an Alertmanager v4
payload (CanaryHighErrorRate, labels canary/namespace, a unique fingerprint) is timed from the client.
The webhook answers only after the canary's task has applied the rollback (the dry-run router's
write), so the response time is the measure. Each answer is checked (outcome accepted, "rollback
applied") and so is the canary's state through the API (rolled_back, weight 0, trigger alert), untimed.

In the same run, the same client times the same payload against a bare aiohttp server whose handler
only answers 200 (bench/bare_server.py, also a subprocess). The two are interleaved alert by alert,
alternating which goes first, so that noise from the shared machine hits both alike; each timed
request directly follows an untimed one to the same server (the daemon's start, the bare server's
GET /healthz), so neither is timed just out of a long idle.

What is swappable: a `Target` (prepare, fire, verify) says what is timed. A later benchmark that
measures up to the PATCH received by a fake Kubernetes API server builds the daemon with
`daemon_config(..., kubernetes=...)` / its own `launch_*` and a Target whose `fire` waits for the PATCH.

Workarounds and choices:
- The analysis interval is set far out (12 h), so no Prometheus tick runs during the measurement:
  this measures the alert path alone (Prometheus is not needed; its URL points at a closed port).
- Logs stay at the daemon's defaults (JSON, info) and go to a file, as in production.
- On this VM a process woken after a few ms idle answers slower: the bare server's p50 went from
  0.6 to 1.1 ms when it idled while the daemon worked, which flattered the ratio. Hence the
  untimed request to the same server right before each timed one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from servers import HOST, ServerProcess, free_port  # noqa: E402

NAMESPACE = "bench"
ALERTNAME = "CanaryHighErrorRate"
JSON_HEADERS = {"Content-Type": "application/json"}
P99_TARGET_MS = 20.0
RATIO_TARGET = 3.0


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
    """Build and start the dry-run daemon (a later bench swaps this for a Kubernetes-backed one)."""
    port = free_port()
    proc = CanarydProcess(daemon_config(canaries, port), port=port, workdir=workdir / "canaryd", start_timeout=60)
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
    seconds: float
    status: int
    body: bytes


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


@dataclass(frozen=True)
class DryRunDaemon:
    """Webhook answered after the dry-run router's write: the routing decision applied."""

    base_url: str
    canaries: int
    name: str = "canaryd webhook → rollback applied"

    def canary(self, i: int) -> str:
        return canary_name(i % self.canaries)

    async def prepare(self, session: aiohttp.ClientSession, i: int) -> None:
        status = await _expect(session, "POST", f"{self.base_url}/api/v1/canaries/{NAMESPACE}/{self.canary(i)}/start")
        if status.get("phase") != "progressing":
            raise BenchError(f"start of {self.canary(i)} left it {status.get('phase')!r}, not progressing")

    async def fire(self, session: aiohttp.ClientSession, i: int, payload: bytes) -> Shot:
        return await timed_post(session, f"{self.base_url}/webhooks/alertmanager", payload)

    async def verify(self, session: aiohttp.ClientSession, i: int, shot: Shot) -> None:
        name = self.canary(i)
        if shot.status != 200:
            raise BenchError(f"alert {i} ({name}): HTTP {shot.status}: {shot.body[:300]!r}")
        outcomes = json.loads(shot.body).get("alerts") or [{}]
        got = outcomes[0]
        if got.get("outcome") != "accepted" or got.get("result") != "rollback applied":
            raise BenchError(f"alert {i} ({name}): not applied: {got}")
        state = await _expect(session, "GET", f"{self.base_url}/api/v1/canaries/{NAMESPACE}/{name}")
        trigger = (state.get("last_decision") or {}).get("trigger")
        if state.get("phase") != "rolled_back" or state.get("weight") != 0 or trigger != "alert":
            raise BenchError(f"alert {i} ({name}): canary is {state.get('phase')} at {state.get('weight')} % "
                             f"(trigger {trigger}), expected rolled_back at 0 % by alert")


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


async def measure(targets: Sequence[Target], alerts: int, warmup: int, canaries: int) -> dict[str, list[float]]:
    """Interleaved: for each alert, every target once, the order alternating. Seconds per target."""
    times: dict[str, list[float]] = {t.name: [] for t in targets}
    run = uuid.uuid4().hex[:8]
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
                    times[t.name].append(shot.seconds)
    return times


def stats_ms(seconds: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000.0
    return {"n": float(len(ms)), "p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
            "p99": float(np.percentile(ms, 99)), "max": float(ms.max()), "mean": float(ms.mean())}


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(daemon: dict[str, float], bare: dict[str, float], daemon_name: str, bare_name: str,
           meta: str) -> str:
    lines = [meta, "", "| endpoint | n | p50 ms | p90 ms | p99 ms | max ms | mean ms |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, s in ((daemon_name, daemon), (bare_name, bare)):
        lines.append(f"| {name} | {s['n']:.0f} | {s['p50']:.2f} | {s['p90']:.2f} | {s['p99']:.2f} | "
                     f"{s['max']:.2f} | {s['mean']:.2f} |")
    r50, r99 = daemon["p50"] / bare["p50"], daemon["p99"] / bare["p99"]
    lines += ["", "| target | measured | limit | result |", "|---|---:|---:|---|",
              f"| p99 webhook → rollback applied | {daemon['p99']:.2f} ms | ≤ {P99_TARGET_MS:.0f} ms | "
              f"{verdict(daemon['p99'] <= P99_TARGET_MS)} |",
              f"| ratio canaryd / bare, p50 | {r50:.2f} ({daemon['p50']:.2f} / {bare['p50']:.2f} ms) | "
              f"≤ {RATIO_TARGET:.0f} | {verdict(r50 <= RATIO_TARGET)} |",
              f"| ratio canaryd / bare, p99 | {r99:.2f} ({daemon['p99']:.2f} / {bare['p99']:.2f} ms) | "
              f"≤ {RATIO_TARGET:.0f} | {verdict(r99 <= RATIO_TARGET)} |"]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--alerts", type=int, default=1000, help="timed alerts (default 1000)")
    p.add_argument("--canaries", type=int, default=1000, help="distinct canaries configured (default 1000)")
    p.add_argument("--warmup", type=int, default=50, help="untimed alerts first (default 50)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, config)")
    args = p.parse_args(argv)
    if args.alerts < 1 or args.canaries < 1 or args.warmup < 0:
        p.error("--alerts and --canaries must be >= 1, --warmup >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="canaryd-bench-alerts-"))
    daemon = bare = None
    try:
        daemon = launch_daemon(args.canaries, workdir)
        bare = BareProcess(workdir=workdir / "bare")
        bare.start()
        targets: list[Target] = [DryRunDaemon(daemon.url, args.canaries), Bare(bare.url)]
        started = time.monotonic()
        times = asyncio.run(measure(targets, args.alerts, args.warmup, args.canaries))
        took = time.monotonic() - started
    except BenchError as e:
        print(f"alert_latency: {e}", file=sys.stderr)
        if daemon is not None:
            print(daemon.log_tail(), file=sys.stderr)
        return 1
    finally:
        for proc in (daemon, bare):
            if proc is not None:
                proc.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    d, b = targets[0].name, targets[1].name
    meta = (f"alert_latency: {args.alerts} alerts (+{args.warmup} warm-up) over {args.canaries} canaries, "
            f"dry-run canaryd and bare aiohttp as subprocesses on loopback, one keep-alive client, "
            f"interleaved; every rollback verified through the API; load average {os.getloadavg()[0]:.1f} "
            f"on {os.cpu_count()} CPUs; {took:.1f} s")
    print(report(stats_ms(times[d]), stats_ms(times[b]), d, b, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
