"""`bench/alert_latency.py --load`: the alert path and /healthz while 1000 canaries are judged and scraped.

Two exporter processes (tests/exporter.py) serve `load-i-stable` (95 rps) and `load-i-canary` (5 rps) for
i < N (`--canaries`, default 1000); a real Prometheus scrapes them every 5 s. The real daemon (`canaryd
run`, dry-run, default `server.metrics_detail`) runs as a subprocess with the N load canaries and a pool
of ALERT_POOL alert targets `svc-j`, all at a 5 s analysis interval. Then, in the same run:

1. **idle**: no canary progressing, nothing scraped. One alert every ALERT_EVERY seconds (20 ms; 1000
   of them span four analysis intervals). For each alert, untimed, the target canary is
   started (the start answers once that canary's first reads from Prometheus are done); timed, `GET /healthz`, then the webhook (`CanaryHighErrorRate` for that canary), which
   answers once the rollback is applied; untimed, the answer and the canary's state are checked.
2. **load**: the N load canaries are started (progressing; at 5 rps the canary never reaches
   `min_requests`, so each judgement is a hold and they stay progressing), the daemon runs two intervals
   of ticks, then a scraper thread GETs `/metrics` every second (as Prometheus would) while the same
   alerts as in 1. are sent again.

Reported: webhook and /healthz latency, idle next to load; the scrapes (time, size, series, series per
canary); the judgements made during the load phase (`canaryd_decisions_total` from the scrapes) against
one per canary per interval. Targets: under load, webhook p99 ≤ 10 ms and /healthz p99 ≤ 10 ms.
The machine is shared (Prometheus, the exporters, this client and the daemon on the same cores): the
load average is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from alert_latency import (
    ALERTNAME,
    HOST,
    NAMESPACE,
    BenchError,
    CanarydProcess,
    _check_applied,
    _check_rolled_back,
    _expect,
    _start,
    alert_payload,
    free_port,
    stats_ms,
    timed_post,
    verdict,
)
from fleet import canary_config
from servers import ExporterProcess, PrometheusServer, wait_until

INTERVAL = 5.0  # seconds: the canaries' analysis interval and the exporters' scrape interval
ALERT_POOL = 100  # alert targets, each started again before its next alert
P99_TARGET_MS = 10.0
SCRAPE_EVERY = 1.0  # seconds
ALERT_EVERY = 0.02  # seconds between alerts: 1000 alerts span four intervals of ticks and 20 scrapes
STABLE_RPS, CANARY_RPS = 95.0, 5.0


def job(i: int, arm: str) -> str:
    return f"load-{i}-{arm}"


def _canary(name: str, i: int) -> dict[str, Any]:
    return canary_config(NAMESPACE, name, i, job)


def config(n: int, port: int, prometheus_url: str) -> dict[str, Any]:
    return {
        "server": {"listen": f"{HOST}:{port}"},
        "prometheus": {"url": prometheus_url, "timeout": "10s"},
        "kubernetes": {"enabled": False},
        "defaults": {"interval": f"{INTERVAL:g}s", "step_duration": "24h"},
        "canaries": [_canary(f"load-{i}", i) for i in range(n)]
                    + [_canary(f"svc-{j}", j % n) for j in range(ALERT_POOL)],
        "alerts": [{"alertname": ALERTNAME, "action": "rollback"}],
    }


@dataclass
class Scrapes:
    """What the scraper thread saw: seconds per scrape, bytes, per-canary series, decisions counted.
    The thread only fetches (and keeps each body with its time); `parse` reads the bodies afterwards.
    Parsed in the thread, 1.2 MB a second held this process' GIL for ~10-20 ms at a time, and the
    client's timed requests, on this process' event loop, waited for it: a delay of the bench's, not
    the daemon's (Prometheus parses its scrapes in a process of its own)."""

    seconds: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    series: list[int] = field(default_factory=list)
    per_canary: list[float] = field(default_factory=list)
    decisions: list[tuple[float, float]] = field(default_factory=list)  # (time, sum of decisions)
    errors: list[str] = field(default_factory=list)
    bodies: list[tuple[float, bytes]] = field(default_factory=list)  # (time.monotonic(), body), until parse

    def parse(self) -> None:
        for at, body in self.bodies:
            self.sizes.append(len(body))
            lines = [line for line in body.split(b"\n") if line and not line.startswith(b"#")]
            self.series.append(len(lines))
            names = _CANARY_SERIES.findall(body)
            self.per_canary.append(len(names) / max(1, len(set(names))))
            self.decisions.append((at, sum(float(v) for v in _DECISION.findall(body))))
        self.bodies.clear()


_DECISION = re.compile(rb"^canaryd_decisions_total\{[^}]*\} (\S+)$", re.M)
_CANARY_SERIES = re.compile(rb'^canaryd_\w+\{[^}]*canary="([^"]*)"', re.M)


def scrape_forever(address: str, stop: threading.Event, out: Scrapes) -> None:
    """GET /metrics every SCRAPE_EVERY seconds, as Prometheus would (keep-alive, text format)."""
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    next_at = time.monotonic()
    while not stop.is_set():
        started = time.perf_counter()
        try:
            conn.request("GET", "/metrics", headers={"Accept": "text/plain;version=0.0.4"})
            resp = conn.getresponse()
            body = resp.read()
        except OSError as e:
            out.errors.append(str(e))
            conn.close()
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            continue
        out.seconds.append(time.perf_counter() - started)
        out.bodies.append((time.monotonic(), body))
        next_at += SCRAPE_EVERY
        stop.wait(max(0.0, next_at - time.monotonic()))
    conn.close()


@dataclass
class Phase:
    webhook: list[float] = field(default_factory=list)
    healthz: list[float] = field(default_factory=list)
    took: float = 0.0


async def alerts(base_url: str, count: int, warmup: int, run: str) -> Phase:
    """`count` timed alerts (after `warmup` untimed ones), each preceded by a timed GET /healthz."""
    out = Phase()
    started = time.monotonic()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit_per_host=1)) as session:
        next_at = time.monotonic()
        for i in range(warmup + count):
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at = time.monotonic() + ALERT_EVERY
            name = f"svc-{i % ALERT_POOL}"
            await _start(session, base_url, name)
            payload = alert_payload(name, f"{run}{i:08x}", datetime.now(UTC))
            t0 = time.perf_counter()
            async with session.get(f"{base_url}/healthz") as resp:
                await resp.read()
                if resp.status != 200:
                    raise BenchError(f"/healthz: HTTP {resp.status}")
            healthz = time.perf_counter() - t0
            shot = await timed_post(session, f"{base_url}/webhooks/alertmanager", payload)
            _check_applied(i, name, shot)
            await _check_rolled_back(session, base_url, i, name)
            if i >= warmup:
                out.healthz.append(healthz)
                out.webhook.append(shot.seconds)
    out.took = time.monotonic() - started
    return out


async def start_all(base_url: str, n: int) -> None:
    async with aiohttp.ClientSession() as session:
        for i in range(n):
            await _start(session, base_url, f"load-{i}")


async def progressing(base_url: str) -> int:
    async with aiohttp.ClientSession() as session:
        canaries = await _expect(session, "GET", f"{base_url}/api/v1/canaries")
    items = canaries if isinstance(canaries, list) else canaries.get("canaries", [])
    return sum(1 for c in items if c.get("phase") == "progressing" and str(c.get("name", "")).startswith("load-"))


def _row(endpoint: str, phase: str, seconds: list[float]) -> str:
    s = stats_ms(seconds)
    return (f"| {endpoint} | {phase} | {s['n']:.0f} | {s['p50']:.2f} | {s['p90']:.2f} | {s['p99']:.2f} "
            f"| {s['max']:.2f} |")


def report(n: int, idle: Phase, load: Phase, scrapes: Scrapes, still: int, meta: str) -> str:
    ms = np.asarray(scrapes.seconds) * 1000
    (t0, d0), (t1, d1) = scrapes.decisions[0], scrapes.decisions[-1]
    rate = (d1 - d0) / (t1 - t0) if t1 > t0 else float("nan")
    expected = n / INTERVAL
    lines = [meta, "",
             "| endpoint | phase | n | p50 ms | p90 ms | p99 ms | max ms |", "|---|---|---:|---:|---:|---:|---:|",
             _row("webhook → rollback applied", "idle", idle.webhook),
             _row("webhook → rollback applied", f"{n} progressing + scrape/s", load.webhook),
             _row("GET /healthz", "idle", idle.healthz),
             _row("GET /healthz", f"{n} progressing + scrape/s", load.healthz),
             "",
             "| /metrics under load | value |", "|---|---:|",
             f"| scrapes | {len(ms)} (errors {len(scrapes.errors)}) |",
             f"| scrape time p50 / p99 / max | {np.median(ms):.0f} / {np.percentile(ms, 99):.0f} / {ms.max():.0f} ms |",
             f"| size | {np.median(scrapes.sizes) / 1e6:.2f} MB |",
             f"| series | {int(np.median(scrapes.series))} ({np.median(scrapes.per_canary):.1f} per canary) |",
             f"| judgements/s during the load phase | {rate:.0f} (one per canary per interval: {expected:.0f}) |",
             f"| load canaries still progressing at the end | {still} of {n} |",
             ""]
    wp99, hp99 = stats_ms(load.webhook)["p99"], stats_ms(load.healthz)["p99"]
    lines += ["| target (under load) | measured | limit | result |", "|---|---:|---:|---|",
              f"| webhook p99 | {wp99:.2f} ms | ≤ {P99_TARGET_MS:.0f} ms | {verdict(wp99 <= P99_TARGET_MS)} |",
              f"| /healthz p99 | {hp99:.2f} ms | ≤ {P99_TARGET_MS:.0f} ms | {verdict(hp99 <= P99_TARGET_MS)} |",
              f"| every load canary judged once per interval | {rate:.0f}/s | ≥ {0.9 * expected:.0f}/s | "
              f"{verdict(rate >= 0.9 * expected)} |"]
    return "\n".join(lines)


def run_load(args: argparse.Namespace, workdir: Path) -> str:
    n = args.canaries
    servers: list[Any] = []
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    try:
        for arm, rps in (("stable", STABLE_RPS), ("canary", CANARY_RPS)):
            exporter = ExporterProcess([job(i, arm) for i in range(n)], labels={"namespace": NAMESPACE}, rps=rps,
                                       error_rate=0.005, client_error_rate=0.01, workdir=workdir / f"exporter-{arm}",
                                       start_timeout=60)
            servers.append(exporter)
            exporter.start()
        prom = PrometheusServer([e.address for e in servers], scrape_interval=f"{INTERVAL:g}s",
                                evaluation_interval="10s", workdir=workdir / "prometheus", start_timeout=60)
        servers.append(prom)
        prom.start()
        prom.wait_for_targets_up(timeout=60)
        series = 20 * 2 * n

        def ingested() -> bool:
            rows = prom.query('count({__name__=~"http_request.*"})')
            return bool(rows) and float(rows[0]["value"][1]) >= series

        wait_until(ingested, timeout=120, interval=0.5, what=f"{series} series in Prometheus")
        port = free_port()
        daemon = CanarydProcess(config(n, port, prom.url), port=port, workdir=workdir / "canaryd", start_timeout=120)
        servers.append(daemon)
        daemon.start()
        run = uuid.uuid4().hex[:8]
        try:
            idle = asyncio.run(alerts(daemon.url, args.alerts, args.warmup, run + "i"))
            asyncio.run(start_all(daemon.url, n))
            time.sleep(2 * INTERVAL)  # every slot ticked at least once: the load is on
            scrapes, stop = Scrapes(), threading.Event()
            scraper = threading.Thread(target=scrape_forever, args=(daemon.address, stop, scrapes), daemon=True)
            scraper.start()
            try:
                time.sleep(2 * SCRAPE_EVERY)
                load = asyncio.run(alerts(daemon.url, args.alerts, args.warmup, run + "l"))
            finally:
                stop.set()
                scraper.join()
                scrapes.parse()
            still = asyncio.run(progressing(daemon.url))
        except BenchError as e:
            raise BenchError(f"{e}\n{daemon.log_tail()}") from e
    finally:
        for s in reversed(servers):
            s.stop()
    meta = (f"alert_latency --load: {args.alerts} alerts (+{args.warmup} warm-up) idle, then the same with {n} "
            f"canaries progressing (dry-run canaryd subprocess, real Prometheus {INTERVAL:g} s scrape of {2 * n} "
            f"jobs from 2 exporter processes, {INTERVAL:g} s analysis interval) and /metrics scraped every "
            f"{SCRAPE_EVERY:g} s; an alert every {ALERT_EVERY * 1000:g} ms: start (untimed), GET /healthz and the webhook (timed), its rollback "
            f"checked (untimed); load average {load_before:.1f} → {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
            f"(a shared machine); {time.monotonic() - started:.0f} s")
    return report(n, idle, load, scrapes, still, meta)
