"""Scale: N canaries with the default metrics against a real Prometheus holding all their series.

    python bench/scale.py [--canaries 10000] [--interval 30] [--rounds 1]

Two exporter processes (tests/exporter.py, many jobs each) serve `svc-i-stable` (95 rps) and
`svc-i-canary` (5 rps, the first step's share) for i < N: `http_requests_total{status=200|404|500}` and a
15-bucket latency histogram, 20 series per job (400k for N = 10,000). A real Prometheus scrapes them
every SCRAPE_INTERVAL. Then, in this process, for each size in 100, 1000 and N: one `Controller`
(dry-run actuators, the daemon's JSON logs at info to a file, the daemon's HTTP app on a loopback port)
with that many canaries, all started (progressing), then the daemon's own tick schedule: above 200
progressing canaries it reads them in slots (one slot per tick, each canary once per analysis
interval), so one untimed round of baseline ticks, then `--rounds` timed rounds, each as the daemon
makes it (`Controller.round_position`: an alert's canary progressing as a round begins adds a slot). Per tick:
- fetch: `await controller.tick()`: the batched Prometheus queries, splitting and differencing,
  posting the increments to the canaries' tasks;
- judge: until every canary's task has handled its tick (the judgements take turns on the loop,
  pacing.py), seen by polling the tasks' queues every 10 ms;
- judged: the canaries judged by the tick, counted at the end of its round (a judgement carries its
  tick's time; polling right after the tick could miss one whose turn was just woken);
- queries: the number `tick()` returns (the target: bounded whatever N; a tick reads its slot in parts
  of 25 canaries, 8 parts at most, 4 queries each);
- GC: time in Python's cyclic garbage collector during the tick (gc.callbacks), part of its CPU.
Meanwhile, during the timed rounds, a client subprocess (this file with --client) sends an alert
every ALERT_EVERY seconds to the daemon's webhook (each for one of ALERT_POOL extra canaries, started
untimed first; the answer comes once the rollback is applied, and is checked), times a GET /healthz
before each, and GETs /metrics every METRICS_EVERY seconds as Prometheus would.
The daemon's RSS is this process's (Prometheus, the exporters and the client are other processes),
read from /proc/self/status after each size's ticks; VmHWM is the peak.

Workarounds and choices:
- Prometheus, the exporters, the client and this process share the machine (2 cores here): each
  phase's CPU time in this process (the daemon's own work) is reported next to its wall time, with the
  load average.
- Canaries are judged on real, advancing counters; at 5 rps the canary cannot reach `min_requests`
  (1000) within the run, so every judgement is a hold and every canary stays progressing: the work per
  tick stays the same from tick to tick. The number judged is checked.
- Each size runs in a fresh (spawned) process, as a replica with that many canaries starts: its RSS is
  its own, not what the smaller sizes left in Python's allocator. Beside it, a walk of each canary's
  objects (state_bytes) says what a canary holds: its judge's state, the rest of its rollout, its route,
  config and metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import enum
import gc
import json
import logging
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "daemon"))
sys.path.insert(0, str(ROOT / "tests"))

import loop_watch  # noqa: E402 - bench/, beside this file
from canaryd.config import parse_config  # noqa: E402
from canaryd.controller import MAX_READ_PARTS, Controller  # noqa: E402
from canaryd.daemon import tend_gc, tune_gc  # noqa: E402
from canaryd.logs import JsonFormatter  # noqa: E402
from canaryd.metrics import Metrics  # noqa: E402
from canaryd.rollout import Phase  # noqa: E402
from canaryd.server import make_app  # noqa: E402
from canaryd.sources.prometheus import PrometheusClient, Series  # noqa: E402
from canaryd.wiring import dry_run_actuators  # noqa: E402
from fleet import canary_config  # noqa: E402
from servers import HOST, ExporterProcess, PrometheusServer, free_port, wait_until  # noqa: E402

NAMESPACE = "bench"
SCRAPE_INTERVAL = 15.0  # seconds
TICK_WALL_TARGET = 1.0  # seconds, at the largest size
RSS_TARGET_MB = 300.0
WEBHOOK_P99_TARGET_MS = 20.0
STABLE_RPS, CANARY_RPS = 95.0, 5.0
ALERT_POOL = 50  # extra canaries the client's alerts roll back (each started again before its next alert)
ALERT_EVERY = 0.2  # seconds between the client's alerts
METRICS_EVERY = 15.0  # seconds between the client's scrapes of /metrics


def job(i: int, arm: str) -> str:
    return f"svc-{i}-{arm}"


def _canary(name: str, i: int) -> dict[str, Any]:
    return canary_config(NAMESPACE, name, i, job)


def config(canaries: int, prometheus_url: str, interval: float) -> dict[str, Any]:
    return {
        "prometheus": {"url": prometheus_url, "timeout": "10s"},
        "kubernetes": {"enabled": False},
        "defaults": {"interval": f"{interval:g}s", "step_duration": "24h"},
        "canaries": [_canary(f"svc-{i}", i) for i in range(canaries)]
                    + [_canary(f"alert-{j}", j % canaries) for j in range(ALERT_POOL)],
        "alerts": [{"alertname": "CanaryHighErrorRate", "action": "rollback"}],
    }


class TimedPrometheusClient(PrometheusClient):
    """The daemon's client, also recording each query's wall time (to tell Prometheus' share)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.durations: list[float] = []

    async def query(self, expr: str, *args: Any, **kwargs: Any) -> list[Series]:
        started = time.perf_counter()
        try:
            return await super().query(expr, *args, **kwargs)
        finally:
            self.durations.append(time.perf_counter() - started)


class GcTime:
    """Seconds spent in Python's cyclic garbage collector, from gc.callbacks (part of the CPU time)."""

    def __init__(self) -> None:
        self.total = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.total += time.perf_counter() - self._started


@dataclass(frozen=True)
class TickTimes:
    queries: int
    fetch: float  # wall seconds
    judge: float
    fetch_cpu: float  # this process's CPU seconds: the daemon's own work, whatever the machine's load
    judge_cpu: float
    slowest_query: float
    judged: int
    gc: float  # seconds of the tick spent in the garbage collector


@dataclass(frozen=True)
class SizeResult:
    canaries: int
    ticks: list[TickTimes]
    progressing: int
    rss_mb: float
    hwm_mb: float
    slots: int = 1
    client: dict[str, Any] | None = None  # the client's measures (see client_main)
    period: float = 0.0  # seconds between ticks
    judge_bytes: float = 0.0  # per canary: the judge's state (analysis.judge.AnalysisState)
    rollout_bytes: float = 0.0  # per canary: the rest of its rollout state (history, report ticks, counters)
    other_bytes: dict[str, float] | None = None  # per canary: its route, config and metrics (see state_bytes)
    rounds: list[int] | None = None  # ticks of each timed round, as the daemon made its rounds
    rss_rounds: list[float] | None = None  # RSS after the untimed round and after each timed one, MB


_SHARED = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.CodeType, enum.Enum)


def state_bytes(workers: Sequence[Any], metrics: Any = None) -> tuple[float, float, dict[str, float]]:
    """Bytes per canary of (the judge's state, the rest of the rollout's state, {its route (the dry-run
    router's saved states), its config, its metrics}), by a walk of their objects, in that order
    (sys.getsizeof; an object shared by several canaries, like the settings, counted once, where first met)."""
    seen: set[int] = {id(w.rollout.settings) for w in workers}

    def walk(root: object) -> int:
        size, stack = 0, [root]
        while stack:
            o = stack.pop()
            if id(o) in seen or isinstance(o, _SHARED):
                continue
            seen.add(id(o))
            size += sys.getsizeof(o)
            stack.extend(gc.get_referents(o))
        return size

    n = max(1, len(workers))
    judge = sum(walk(w.rollout.analysis) for w in workers)
    rollout = sum(walk(w.rollout) for w in workers)
    canaries = {} if metrics is None else metrics._canaries  # a census of what it holds per canary
    other = {"route": sum(walk(w.actuator) for w in workers), "config": sum(walk(w.config) for w in workers),
             "metrics": sum(walk(canaries.get((w.config.namespace, w.config.name))) for w in workers)}
    return judge / n, rollout / n, {k: v / n for k, v in other.items()}


def memory_mb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MB."""
    fields: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = float(value.split()[0]) / 1024  # kB
    return fields["VmRSS"], fields["VmHWM"]


async def _settled(controller: Controller, workers: list[Any], timeout: float) -> None:
    """Until every task has handled what the tick posted (polled, so as not to queue 10,000 barriers)."""
    deadline = time.monotonic() + timeout
    quiet = -1  # the pacer's turns when the queues were last seen empty: twice in a row is settled (a turn
    # woken by the pacer, with no queue nor waiter to show for it, runs before the next poll)
    while time.monotonic() < deadline:
        if controller.pacer.waiting == 0 and all(w.idle() for w in workers):
            if quiet == controller.pacer.turns:
                return
            quiet = controller.pacer.turns
        else:
            quiet = -1
        await asyncio.sleep(0.01)


class Ticker:
    """The daemon's tick schedule for one controller, timing each tick (see the module's docstring)."""

    def __init__(self, controller: Controller, prometheus: TimedPrometheusClient, gc_time: GcTime) -> None:
        self.controller, self.prometheus, self.gc_time = controller, prometheus, gc_time
        self.workers = list(controller.workers.values())
        self.period = controller.tick_interval()
        self.next_at = time.monotonic()
        self.tick_at: list[float] = []  # each tick's time (the controller's clock)

    async def tick(self) -> TickTimes:
        await asyncio.sleep(max(0.0, self.next_at - time.monotonic()))
        self.next_at = time.monotonic() + self.period
        self.prometheus.durations.clear()
        gc0 = self.gc_time.total
        started, cpu0 = time.perf_counter(), time.process_time()
        queries = await self.controller.tick()
        fetched, cpu1 = time.perf_counter(), time.process_time()
        await _settled(self.controller, self.workers, self.period)
        judged, cpu2 = time.perf_counter(), time.process_time()
        self.tick_at.append(self.controller.last_tick_at or 0.0)
        return TickTimes(queries, fetched - started, judged - fetched, cpu1 - cpu0, cpu2 - cpu1,
                         max(self.prometheus.durations, default=0), 0, self.gc_time.total - gc0)

    async def round(self) -> list[TickTimes]:
        """The ticks of one round of slots, as the daemon makes it (Controller.round_position): a canary
        started as a round begins (an alert's) can make it a slot longer than `Controller.slots()` said."""
        while self.controller.round_position[0] != 0:  # finish a round begun before
            await self.tick()
        ticks = [await self.tick()]
        while self.controller.round_position[0] != 0:
            ticks.append(await self.tick())
        return ticks

    async def judged(self, ticks: list[TickTimes]) -> list[TickTimes]:
        """`ticks` with the canaries each judged, counted once they are all done: a judgement carries its
        tick's time (last_judged_at), and a canary is judged once a round (rollout.due)."""
        await _settled(self.controller, self.workers, 10.0)
        at = Counter(w.rollout.last_judged_at for w in self.workers if w.config.name.startswith("svc-"))
        return [replace(t, judged=at[a]) for t, a in zip(ticks, self.tick_at[-len(ticks):], strict=True)]


async def _serve(controller: Controller, registry: CollectorRegistry) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(make_app(controller, registry), access_log=None, handle_signals=False)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, HOST, port).start()
    return runner, f"http://{HOST}:{port}"


async def run_size(canaries: int, prometheus_url: str, args: argparse.Namespace, gc_time: GcTime,
                   workdir: Path, slow: loop_watch.Slow | None = None) -> SizeResult:
    cfg = parse_config(config(canaries, prometheus_url, args.interval), source=f"<bench {canaries}>")
    registry = CollectorRegistry()
    async with aiohttp.ClientSession() as session:
        prometheus = TimedPrometheusClient(session, cfg.prometheus.url, timeout=cfg.prometheus.timeout,
                                           retries=cfg.prometheus.retries)
        controller = Controller(cfg, metrics=Metrics(registry), prometheus=prometheus,
                                actuator_factory=dry_run_actuators())
        await controller.start()
        runner, url = await _serve(controller, registry)
        client = None
        tending: asyncio.Task[None] | None = None
        try:
            for i in range(canaries):
                await controller.command(NAMESPACE, f"svc-{i}", "start")
            tune_gc()  # as the daemon does once it has started, with its collector's tending task
            tending = asyncio.create_task(tend_gc())
            ticker = Ticker(controller, prometheus, gc_time)
            slots = controller.slots()
            await ticker.round()  # baseline: the first read of each slot only sets the counters' totals
            out_path = workdir / f"client-{canaries}.json"
            seconds = args.rounds * slots * ticker.period
            client = subprocess.Popen([sys.executable, __file__, "--client", url, "--seconds", f"{seconds:g}",
                                       "--out", str(out_path)])
            out, rounds, rss_rounds = [], [], [memory_mb()[0]]
            timed_from = time.monotonic()
            if slow is not None:
                slow.window = (timed_from, float("inf"))  # the timed rounds, from now
            for _ in range(args.rounds):
                ticks = await ticker.round()
                out += await ticker.judged(ticks)
                rounds.append(len(ticks))
                rss_rounds.append(memory_mb()[0])  # a canary's state grows with its rollout: does the RSS?
            if slow is not None:
                slow.window = (timed_from, time.monotonic())
            while client.poll() is None:  # the loop keeps serving the client's last requests
                await asyncio.sleep(0.05)
            measures = json.loads(out_path.read_text()) if out_path.exists() else None
            progressing = sum(1 for w in ticker.workers if w.rollout.phase is Phase.PROGRESSING
                              and w.config.name.startswith("svc-"))
            rss, hwm = memory_mb()
            judge_bytes, rollout_bytes, other_bytes = state_bytes(
                [w for w in ticker.workers if w.config.name.startswith("svc-")], controller.metrics)
        finally:
            if client is not None and client.poll() is None:
                client.kill()
            if tending is not None:
                tending.cancel()
            await runner.cleanup()
            await controller.stop()
    return SizeResult(canaries, out, progressing, rss, hwm, slots, measures, ticker.period, judge_bytes, rollout_bytes,
                      other_bytes, rounds, rss_rounds)


def _size_process(size: int, prometheus_url: str, args: argparse.Namespace, workdir: Path) -> tuple[SizeResult, float]:
    """One size in this (fresh) process: its result, and the process' RSS once the daemon's modules are in."""
    setup_logs(workdir / f"canaryd-{size}.log")
    baseline, _ = memory_mb()
    gc_time = GcTime()
    gc.callbacks.append(gc_time)
    slow = loop_watch.watch(args.slow_ms / 1000, sample=True) if args.slow_ms else None
    result = asyncio.run(run_size(size, prometheus_url, args, gc_time, workdir, slow))
    if slow is not None:
        print(f"{size} canaries: {loop_watch.summary(slow)}", flush=True)
    return result, baseline


# ---------------------------------------------------------------------------------------------- client


async def _client(url: str, seconds: float) -> dict[str, Any]:
    """Alerts and /healthz every ALERT_EVERY s, /metrics every METRICS_EVERY s, for `seconds`."""
    webhook: list[float] = []
    healthz: list[float] = []
    scrapes: list[tuple[float, int]] = []
    problems: list[str] = []
    end = time.monotonic() + seconds
    run = uuid.uuid4().hex[:8]

    async def scrape(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < end:
            t0 = time.perf_counter()
            async with session.get(f"{url}/metrics") as resp:
                body = await resp.read()
            scrapes.append((time.perf_counter() - t0, len(body)))
            await asyncio.sleep(METRICS_EVERY)

    async with aiohttp.ClientSession() as scraper, aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit_per_host=1)) as session:
        task = asyncio.create_task(scrape(scraper))
        i = 0
        while time.monotonic() < end:
            next_at = time.monotonic() + ALERT_EVERY
            name = f"alert-{i % ALERT_POOL}"
            async with session.post(f"{url}/api/v1/canaries/{NAMESPACE}/{name}/start") as resp:
                await resp.read()
            t0 = time.perf_counter()
            async with session.get(f"{url}/healthz") as resp:
                await resp.read()
            t1 = time.perf_counter()
            async with session.post(f"{url}/webhooks/alertmanager", data=_alert(name, f"{run}{i:08x}"),
                                    headers={"Content-Type": "application/json"}) as resp:
                body = await resp.read()
            t2 = time.perf_counter()
            if resp.status != 200 or b"rollback applied" not in body:
                problems.append(f"{name}: HTTP {resp.status} {body[:200]!r}")
            healthz.append(t1 - t0)
            webhook.append(t2 - t1)
            i += 1
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await task
    return {"webhook": webhook, "healthz": healthz, "scrapes": scrapes, "problems": problems}


def _alert(canary: str, fingerprint: str) -> bytes:
    labels = {"alertname": "CanaryHighErrorRate", "canary": canary, "namespace": NAMESPACE}
    return json.dumps({"version": "4", "status": "firing", "receiver": "canaryd", "groupLabels": labels,
                       "commonLabels": labels, "alerts": [{
                           "status": "firing", "labels": labels, "annotations": {"summary": "5xx above 5 %"},
                           "startsAt": datetime.now(UTC).isoformat(), "endsAt": "0001-01-01T00:00:00Z",
                           "fingerprint": fingerprint}]}).encode()


def client_main(url: str, seconds: float, out: Path) -> int:
    out.write_text(json.dumps(asyncio.run(_client(url, seconds))))
    return 0


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _ms(values: Sequence[float]) -> str:
    arr = np.asarray(values) * 1000
    return f"{np.median(arr):.0f} / {arr.max():.0f}"


def _client_rows(r: SizeResult) -> tuple[str, float]:
    c = r.client
    if not c or not c["webhook"]:
        return "| n/a | n/a | n/a |", float("nan")
    w = np.asarray(c["webhook"]) * 1000
    h = np.asarray(c["healthz"]) * 1000
    m = np.asarray([t for t, _ in c["scrapes"]]) * 1000
    size = max((b for _, b in c["scrapes"]), default=0) / 1e6
    p99 = float(np.percentile(w, 99))
    return (f"| {len(w)}: {np.median(w):.1f} / {p99:.1f} / {w.max():.1f} | {np.median(h):.1f} / "
            f"{np.percentile(h, 99):.1f} / {h.max():.1f} | {len(m)}: {np.median(m):.0f} ms, {size:.1f} MB |"), p99


def _period(r: SizeResult) -> float:
    return r.period


def _round_sums(r: SizeResult) -> list[int]:
    """The canaries judged in each timed round."""
    out, i = [], 0
    for n in r.rounds or [len(r.ticks)]:
        out.append(sum(x.judged for x in r.ticks[i:i + n]))
        i += n
    return out


def report(results: Sequence[SizeResult], baseline_mb: float, meta: str) -> str:
    lines = [meta, "",
             "| canaries | queries/tick | fetch wall ms p50 / max | fetch CPU ms | judge wall ms | judge CPU ms "
             "| tick CPU ms | of which GC ms | slowest query ms | slots | judged/tick (min) | progressing "
             "| RSS MB (peak) | webhook ms p50 / p99 / max | /healthz ms p50 / p99 / max | /metrics scrapes |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        t = r.ticks
        queries = sorted({x.queries for x in t})
        lines.append(
            f"| {r.canaries} | {'/'.join(map(str, queries))} | {_ms([x.fetch for x in t])} "
            f"| {_ms([x.fetch_cpu for x in t])} | {_ms([x.judge for x in t])} | {_ms([x.judge_cpu for x in t])} "
            f"| {_ms([x.fetch_cpu + x.judge_cpu for x in t])} "
            f"| {_ms([x.gc for x in t])} | {max(x.slowest_query for x in t) * 1000:.0f} | {r.slots} "
            f"| {min(x.judged for x in t)} | {r.progressing} "
            f"| {r.rss_mb:.0f} ({r.hwm_mb:.0f}) {_client_rows(r)[0]}")
    big = results[-1]
    cpus = [x.fetch_cpu + x.judge_cpu for x in big.ticks]
    per_size = {r.canaries: sorted({x.queries for x in r.ticks}) for r in results}
    # A tick reads its slot in parts (controller.READ_PART canaries, MAX_READ_PARTS at most), 4 queries
    # each: fewer below READ_PART × MAX_READ_PARTS canaries a tick, never more above.
    # A slot a few canaries short of full (1001 progressing are 6 slots of 167) reads in fewer parts: the
    # bound holds whatever the number of canaries.
    bound = 4 * MAX_READ_PARTS
    constant = all(max(q) <= bound for q in per_size.values())
    shown = ", ".join(f"{n}: {'/'.join(map(str, q))}" for n, q in per_size.items())
    # Each canary is judged once per interval: over every round of slot ticks, all of them.
    judged_by_size = {r.canaries: _round_sums(r) for r in results}
    all_judged = all(n >= size for size, sums in judged_by_size.items() for n in sums)
    judged = judged_by_size[big.canaries]
    _, p99 = _client_rows(big)
    problems = len(big.client["problems"]) if big.client else -1
    limit = f"≤ {TICK_WALL_TARGET * 1000:.0f} ms"
    lines += ["", "| target | measured | limit | result |", "|---|---:|---:|---|",
              f"| Prometheus queries per tick independent of N | {shown} | ≤ {bound} at every size "
              f"| {verdict(constant)} |",
              f"| every canary judged once per interval at {big.canaries} ({'/'.join(map(str, big.rounds or []))} slot "
              "ticks a round) "
              f"| {'/'.join(map(str, judged))} a round | {big.canaries} | {verdict(all_judged)} |",
              f"| daemon RSS after the ticks at {big.canaries} | {big.rss_mb:.0f} MB (peak {big.hwm_mb:.0f} MB; "
              f"{baseline_mb:.0f} MB after imports; after each round from the untimed one: "
              f"{'/'.join(f'{x:.0f}' for x in big.rss_rounds or [])}) | ≤ {RSS_TARGET_MB:.0f} MB | "
              f"{verdict(big.rss_mb <= RSS_TARGET_MB)} |",
              f"| (of which per canary: the judge's state, the rest of its rollout state; its route, config, "
              f"metrics) | {big.judge_bytes / 1000:.1f} kB, {big.rollout_bytes / 1000:.1f} kB; "
              f"{', '.join(f'{v / 1000:.1f} kB' for v in (big.other_bytes or {}).values())} | | |",
              f"| webhook p99 during the ticks at {big.canaries} ({problems} answers not applied) | {p99:.1f} ms "
              f"| ≤ {WEBHOOK_P99_TARGET_MS:.0f} ms | {verdict(p99 <= WEBHOOK_P99_TARGET_MS and problems == 0)} |",
              f"| (the daemon's own CPU per tick at {big.canaries}) | p50 {np.median(cpus) * 1000:.0f} ms, "
              f"max {max(cpus) * 1000:.0f} ms, ticks {big.ticks and _period(big):.1f} s apart | {limit} | "
              f"{verdict(max(cpus) <= TICK_WALL_TARGET)} |"]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--canaries", type=int, default=10_000, help="the largest size (default 10000)")
    p.add_argument("--interval", type=float, default=30.0, help="the canaries' analysis interval, s (default 30)")
    p.add_argument("--rounds", type=int, default=1, help="timed rounds of slot ticks per size (default 1)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, Prometheus data)")
    p.add_argument("--slow-ms", type=float, default=0.0,
                   help="also print the event loop's callbacks that ran longer than this, at each size (loop_watch.py)")
    p.add_argument("--client", help=argparse.SUPPRESS)  # internal: the alerting client, against this URL
    p.add_argument("--seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.canaries < 1 or args.rounds < 1 or args.interval <= 0:
        p.error("--canaries and --rounds must be >= 1, --interval > 0")
    return args


def setup_logs(path: Path) -> None:
    """The daemon's own log format and level, to a file: its cost is part of the daemon's."""
    handler = logging.FileHandler(path)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.client:
        return client_main(args.client, args.seconds, args.out)
    sizes = sorted({s for s in (100, 1000, args.canaries) if s <= args.canaries})
    n = args.canaries
    load_before = os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="canaryd-bench-scale-"))
    started = time.monotonic()
    servers: list[Any] = []
    try:
        labels = {"namespace": NAMESPACE}
        for arm, rps in (("stable", STABLE_RPS), ("canary", CANARY_RPS)):
            exporter = ExporterProcess([job(i, arm) for i in range(n)], labels=labels, rps=rps, error_rate=0.005,
                                       client_error_rate=0.01, workdir=workdir / f"exporter-{arm}", start_timeout=120)
            servers.append(exporter)
            exporter.start()
        prom = PrometheusServer([e.address for e in servers], scrape_interval=f"{SCRAPE_INTERVAL:g}s",
                                evaluation_interval="15s", workdir=workdir / "prometheus", start_timeout=120)
        servers.append(prom)
        prom.start()
        prom.wait_for_targets_up(timeout=120)
        series = 20 * 2 * n  # per job: 3 statuses + 15 buckets + _sum + _count

        def ingested() -> bool:
            rows = prom.query('count({__name__=~"http_request.*"})')
            return bool(rows) and float(rows[0]["value"][1]) >= series

        wait_until(ingested, timeout=300, interval=1.0, what=f"{series} series in Prometheus")
        # Each size in a fresh process, as a replica with that many canaries starts: its memory is its own,
        # not what the allocator kept from a smaller size run before it.
        results, baselines = [], []
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                                    max_tasks_per_child=1) as pool:
            for size in sizes:
                result, base = pool.submit(_size_process, size, prom.url, args, workdir).result()
                results.append(result)
                baselines.append(base)
        baseline_mb = max(baselines)
        scrape = prom.query("max(scrape_duration_seconds)")
        scrape_s = float(scrape[0]["value"][1]) if scrape else float("nan")
    finally:
        for s in reversed(servers):
            s.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    load = f"load average {load_before:.1f} → {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (a shared machine)"
    meta = (f"scale: sizes {', '.join(map(str, sizes))} canaries, each in a fresh process; real "
            f"Prometheus {SCRAPE_INTERVAL:g} s scrape of {2 * n} jobs ({series} series) from 2 exporter processes "
            f"(slowest scrape {scrape_s * 1000:.0f} ms); interval {args.interval:g} s, {args.rounds} timed round(s) "
            f"of slot ticks per size; dry-run actuators, JSON logs at info to a file; during the timed ticks a "
            f"client process sends an alert every {ALERT_EVERY:g} s and scrapes /metrics every {METRICS_EVERY:g} s; "
            f"{load}; {time.monotonic() - started:.0f} s")
    print(report(results, baseline_mb, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
