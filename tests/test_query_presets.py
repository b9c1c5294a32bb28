"""`queries: istio` / `linkerd` / `default`: mesh telemetry as the meshes export it, read through a real
Prometheus and judged.

A small exporter serves exposition text shaped like Envoy's (Istio's standard metrics, with both
reporters) and the Linkerd proxy's (inbound and outbound) for a stable and a canary Deployment; the
canary answers 10 % 503s and is about ten times slower. The judge must see the same error rates and
latencies in seconds as the sample says, whatever unit the mesh counts in.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aiohttp
import pytest

from canaryd.analysis import judge
from canaryd.analysis.snapshot import ArmSnapshot, Snapshot
from canaryd.config import parse_config
from canaryd.sources.prometheus import ArmTarget, PrometheusClient, fetch_increments
from servers import PrometheusServer, missing_binaries

NS = "orion"
ISTIO_BUCKETS_MS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000,
                    600000, 1800000, 3600000)
LINKERD_BUCKETS_MS = (1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1000, 2000, 3000, 4000, 5000,
                      10000, 20000, 30000, 40000, 50000)
# (requests, 5xx, latency of every request in ms) per Deployment
TRAFFIC = {"auth-stable": (1000, 2, 20.0), "auth-canary": (1000, 100, 400.0)}


def _le(bound: float) -> str:
    return f"{bound:g}"


def _histogram(name: str, labels: str, bounds: tuple[float, ...], count: int, latency_ms: float) -> list[str]:
    rows = [f'{name}_bucket{{{labels},le="{_le(b)}"}} {count if latency_ms <= b else 0}' for b in bounds]
    rows.append(f'{name}_bucket{{{labels},le="+Inf"}} {count}')
    rows += [f"{name}_sum{{{labels}}} {count * latency_ms}", f"{name}_count{{{labels}}} {count}"]
    return rows


def istio_exposition() -> str:
    out = ["# TYPE istio_requests_total counter", "# TYPE istio_request_duration_milliseconds histogram"]
    for workload, (requests, errors, latency) in TRAFFIC.items():
        version = "v2" if workload.endswith("canary") else "v1"
        for reporter in ("destination", "source"):  # both sides report each request: count it once
            common = (f'reporter="{reporter}",source_workload="istio-ingressgateway",'
                      f'source_workload_namespace="istio-system",destination_workload="{workload}",'
                      f'destination_workload_namespace="{NS}",destination_version="{version}",'
                      f'destination_service="auth.{NS}.svc.cluster.local",request_protocol="http",'
                      f'connection_security_policy="mutual_tls"')
            out.append(f'istio_requests_total{{{common},response_code="200",response_flags="-"}} {requests - errors}')
            out.append(f'istio_requests_total{{{common},response_code="503",response_flags="URX"}} {errors}')
            for code, n in (("200", requests - errors), ("503", errors)):
                out += _histogram("istio_request_duration_milliseconds", f'{common},response_code="{code}"',
                                  ISTIO_BUCKETS_MS, n, latency)
    return "\n".join(out) + "\n"


def linkerd_exposition() -> str:
    out = ["# TYPE response_total counter", "# TYPE response_latency_ms histogram"]
    for workload, (requests, errors, latency) in TRAFFIC.items():
        pod = f'namespace="{NS}",deployment="{workload}",pod="{workload}-7c9d-x2x4k",tls="true"'
        for direction in ("inbound", "outbound"):  # outbound: the Deployment's own calls elsewhere
            common = f'direction="{direction}",{pod}'
            if direction == "outbound":
                out.append(f'response_total{{{common},dst_deployment="db",status_code="500",'
                           f'classification="failure"}} 999')
                continue
            out.append(f'response_total{{{common},status_code="200",classification="success"}} {requests - errors}')
            out.append(f'response_total{{{common},status_code="503",classification="failure"}} {errors}')
            for code, n in (("200", requests - errors), ("503", errors)):
                out += _histogram("response_latency_ms", f'{common},status_code="{code}"', LINKERD_BUCKETS_MS,
                                  n, latency)
    return "\n".join(out) + "\n"


class TextExporter:
    """Serves `text()` at /metrics on a loopback port, from a thread."""

    def __init__(self, text: Callable[[], str]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = text().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> TextExporter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    if missing_binaries():
        pytest.skip("prometheus not installed")
    with TextExporter(istio_exposition) as istio, TextExporter(linkerd_exposition) as linkerd:
        with PrometheusServer([istio.address, linkerd.address],
                              workdir=tmp_path_factory.mktemp("presets")) as prom:
            prom.wait_for_samples("istio_requests_total")
            prom.wait_for_samples("response_total")
            yield prom


def canary_config(queries: Any) -> Any:
    return parse_config({"canaries": [{
        "name": "auth", "namespace": NS, "route": "auth", "queries": queries,
        # The mesh presets select by Deployment; these selectors are not used by them.
        "stable": {"deployment": "auth-stable", "selector": 'app="auth",version="v1"'},
        "canary": {"deployment": "auth-canary", "selector": 'app="auth",version="v2"'},
        "thresholds": {"latency_p95_ms": 200},
    }]}).canaries[0]


async def read(prometheus: PrometheusServer, queries: Any) -> tuple[dict[str, ArmSnapshot], Any]:
    c = canary_config(queries)
    targets = [ArmTarget(c.key, arm, getattr(c, arm).selector, c.namespace, getattr(c, arm).deployment)
               for arm in ("canary", "stable")]
    async with aiohttp.ClientSession() as session:
        result = await fetch_increments(PrometheusClient(session, prometheus.url), targets, asdict(c.queries), None)
    assert not result.errors, result.errors
    return {arm: result.increments[(c.key, arm)] for arm in ("canary", "stable")}, c


@pytest.mark.parametrize("preset", ["istio", "linkerd"])
async def test_mesh_preset_is_read_and_judged_in_seconds(prometheus: PrometheusServer, preset: str) -> None:
    arms, c = await read(prometheus, preset)
    for arm, (requests, errors, latency_ms) in (("canary", TRAFFIC["auth-canary"]),
                                                ("stable", TRAFFIC["auth-stable"])):
        got = arms[arm]
        assert (got.requests, got.errors, got.successes) == (requests, errors, requests - errors), (arm, got)
        assert got.buckets is not None and got.buckets[-1] == (float("inf"), requests)
        # Bounds in seconds: every request sits in the first bucket at or above its latency.
        first_full = next(le for le, n in got.buckets if n == requests)
        assert first_full >= latency_ms / 1000 and first_full <= latency_ms / 1000 * 2.5, got.buckets
    settings = c.settings.judge_settings()
    state = judge.start(settings, 0.0)
    zero = ArmSnapshot(requests=0, errors=0, successes=0,
                       buckets=tuple((le, 0.0) for le, _ in arms["canary"].buckets))
    _, state = judge.observe(state, Snapshot(0.0, zero, zero), settings)
    verdict, _ = judge.observe(state, Snapshot(c.settings.step_duration, arms["canary"], arms["stable"]), settings)
    p95 = next(m for m in verdict.metrics if m.name.startswith("latency_p95"))
    assert p95.canary is not None and p95.stable is not None
    assert 250 <= p95.canary <= 500 and p95.stable <= 25, p95  # milliseconds, as the thresholds say
    assert p95.verdict.value in ("warn", "fail")  # above the 200 ms limit
    error_rate = next(m for m in verdict.metrics if m.name == "error_rate")
    assert error_rate.canary == pytest.approx(10.0)


async def test_default_preset_is_the_default_queries(prometheus: PrometheusServer) -> None:
    assert canary_config("default").queries == canary_config({}).queries
    assert canary_config("default").queries.latency_unit == "seconds"
    arms, _ = await read(prometheus, "default")  # nothing exports http_requests_total here
    assert arms["canary"].requests is None
