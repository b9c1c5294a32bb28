"""Scale: N canaries with the default metrics against a real Prometheus holding all their series.

    python bench/scale.py [--canaries 1000] [--ticks 10]

Two exporter processes (tests/exporter.py, many jobs each) serve `svc-i-stable` (95 rps) and
`svc-i-canary` (5 rps, the first step's share) for i < N: `http_requests_total{status=200|404|500}` and a
15-bucket latency histogram, 20 series per job (40k for N = 1000). A real Prometheus scrapes them every
5 s. Then, in this process, for each size in 10, 100 and N: one `Controller` (dry-run actuators, the
daemon's JSON logs at info to a file) with that many canaries, all started (progressing), then the
daemon's own tick schedule: above 200 progressing canaries it reads them in slots (one slot per
tick, each canary once per analysis interval), so one untimed cycle of baseline ticks, then
`--ticks` timed ticks. Per tick:
- fetch: `await controller.tick()`: the batched Prometheus queries, splitting and differencing,
  posting the increments to the canaries' tasks;
- judge: until every canary's task has handled its tick (the judgement, metrics, logs), measured
  by queueing a barrier behind it on each task;
- queries: the number `tick()` returns (the target: the same for every N);
- GC: time in Python's cyclic garbage collector during the tick (gc.callbacks), part of its CPU.
The daemon's RSS is this process's (Prometheus and the exporters are other processes), read from
/proc/self/status after each size's ticks; VmHWM is the peak.

Workarounds and choices:
- The exporter renders 1000 jobs in ~0.14 s, fast enough for a 5 s scrape, so no lighter static
  exporter was needed; Prometheus' own `scrape_duration_seconds` is printed to show it.
- Prometheus, the exporters and this process share the machine (2 cores here): Prometheus' share
  of a tick's wall time grows with the load. So each phase's CPU time in this process (the
  daemon's own work) is reported next to its wall time, with the load average.
- Canaries are judged on real, advancing counters; at 5 rps the canary cannot reach
  `min_requests` (1000) within the run, so every judgement is a hold and every canary stays
  progressing: the work per tick stays the same from tick to tick. The number judged is checked.
- The scrape and analysis intervals are 5 s (real ones: 15-30 s) to keep the run short; the work
  per tick does not depend on them.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "daemon"))
sys.path.insert(0, str(ROOT / "tests"))

from canaryd.config import parse_config  # noqa: E402
from canaryd.controller import Controller  # noqa: E402
from canaryd.daemon import tune_gc  # noqa: E402
from canaryd.logs import JsonFormatter  # noqa: E402
from canaryd.metrics import Metrics  # noqa: E402
from canaryd.rollout import Phase  # noqa: E402
from canaryd.sources.prometheus import PrometheusClient, Series  # noqa: E402
from canaryd.wiring import dry_run_actuators  # noqa: E402
from servers import ExporterProcess, PrometheusServer, wait_until  # noqa: E402

NAMESPACE = "bench"
SCRAPE_INTERVAL = 5.0  # seconds
INTERVAL = 5.0  # the canaries' analysis interval, seconds
TICK_WALL_TARGET = 1.0  # seconds, at the largest size
RSS_TARGET_MB = 150.0
STABLE_RPS, CANARY_RPS = 95.0, 5.0


def job(i: int, arm: str) -> str:
    return f"svc-{i}-{arm}"


def config(canaries: int, prometheus_url: str) -> dict[str, Any]:
    return {
        "prometheus": {"url": prometheus_url, "timeout": "10s"},
        "kubernetes": {"enabled": False},
        "defaults": {"interval": f"{INTERVAL:g}s", "step_duration": "10m"},
        "canaries": [
            {"name": f"svc-{i}", "namespace": NAMESPACE, "route": f"svc-{i}",
             "stable": {"deployment": job(i, "stable"), "selector": f'job="{job(i, "stable")}"'},
             "canary": {"deployment": job(i, "canary"), "selector": f'job="{job(i, "canary")}"'}}
            for i in range(canaries)
        ],
    }


class TimedPrometheusClient(PrometheusClient):
    """The daemon's client, also recording each query's wall time (to tell Prometheus' share)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.durations: list[float] = []

    async def query(self, expr: str, at: float | None = None) -> list[Series]:
        started = time.perf_counter()
        try:
            return await super().query(expr, at)
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


def memory_mb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MB."""
    fields: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = float(value.split()[0]) / 1024  # kB
    return fields["VmRSS"], fields["VmHWM"]


async def run_size(canaries: int, prometheus_url: str, ticks: int, gc_time: GcTime) -> SizeResult:
    cfg = parse_config(config(canaries, prometheus_url), source=f"<bench {canaries}>")
    async with aiohttp.ClientSession() as session:
        prometheus = TimedPrometheusClient(session, cfg.prometheus.url, timeout=cfg.prometheus.timeout,
                                           retries=cfg.prometheus.retries)
        controller = Controller(cfg, metrics=Metrics(CollectorRegistry()), prometheus=prometheus,
                                actuator_factory=dry_run_actuators())
        await controller.start()
        try:
            for c in cfg.canaries:
                await controller.command(c.namespace, c.name, "start")
            workers = list(controller.workers.values())
            tune_gc()  # as the daemon does once it has started

            async def one_tick() -> TickTimes:
                prometheus.durations.clear()
                gc0 = gc_time.total
                before = time.time()
                started, cpu0 = time.perf_counter(), time.process_time()
                queries = await controller.tick()
                fetched, cpu1 = time.perf_counter(), time.process_time()
                await asyncio.gather(*(w.barrier() for w in workers))
                judged, cpu2 = time.perf_counter(), time.process_time()
                n = sum(1 for w in workers if (w.rollout.last_judged_at or 0) >= before)
                return TickTimes(queries, fetched - started, judged - fetched, cpu1 - cpu0, cpu2 - cpu1,
                                 max(prometheus.durations, default=0), n, gc_time.total - gc0)

            # The daemon reads many canaries in slots, one slot a tick, each canary once per interval.
            slots = controller.slots()
            period = controller.tick_interval()
            # Baseline: the first read of each slot only sets the counters' starting totals.
            next_at = time.monotonic()
            for _ in range(slots):
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                next_at = time.monotonic() + period
                await one_tick()
            out = []
            for _ in range(max(ticks, slots)):
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                next_at = time.monotonic() + period
                out.append(await one_tick())
            progressing = sum(1 for w in workers if w.rollout.phase is Phase.PROGRESSING)
            rss, hwm = memory_mb()
        finally:
            await controller.stop()
    return SizeResult(canaries, out, progressing, rss, hwm, slots)


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _ms(values: Sequence[float]) -> str:
    arr = np.asarray(values) * 1000
    return f"{np.median(arr):.0f} / {arr.max():.0f}"


def report(results: Sequence[SizeResult], baseline_mb: float, meta: str) -> str:
    lines = [meta, "",
             "| canaries | queries/tick | fetch wall ms p50 / max | fetch CPU ms | judge wall ms | judge CPU ms "
             "| tick wall ms (fetch + judge) | tick CPU ms | of which GC ms | slowest query ms | slots "
             "| judged/tick (min) | progressing | RSS MB (peak) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        t = r.ticks
        queries = sorted({x.queries for x in t})
        lines.append(
            f"| {r.canaries} | {'/'.join(map(str, queries))} | {_ms([x.fetch for x in t])} "
            f"| {_ms([x.fetch_cpu for x in t])} | {_ms([x.judge for x in t])} | {_ms([x.judge_cpu for x in t])} "
            f"| {_ms([x.fetch + x.judge for x in t])} | {_ms([x.fetch_cpu + x.judge_cpu for x in t])} "
            f"| {_ms([x.gc for x in t])} | {max(x.slowest_query for x in t) * 1000:.0f} | {r.slots} "
            f"| {min(x.judged for x in t)} | {r.progressing} "
            f"| {r.rss_mb:.0f} ({r.hwm_mb:.0f}) |")
    big = results[-1]
    walls = [x.fetch + x.judge for x in big.ticks]
    cpus = [x.fetch_cpu + x.judge_cpu for x in big.ticks]
    per_size = {r.canaries: sorted({x.queries for x in r.ticks}) for r in results}
    constant = len({tuple(q) for q in per_size.values()}) == 1 and all(len(q) == 1 for q in per_size.values())
    shown = ", ".join(f"{n}: {'/'.join(map(str, q))}" for n, q in per_size.items())
    # Each canary is judged once per interval: over any run of `slots` consecutive ticks, all of them.
    all_judged = all(sum(x.judged for x in r.ticks[i:i + r.slots]) >= r.canaries
                     for r in results for i in range(0, len(r.ticks) - r.slots + 1, r.slots))
    limit = f"≤ {TICK_WALL_TARGET * 1000:.0f} ms"
    lines += ["", "| target | measured | limit | result |", "|---|---:|---:|---|",
              f"| Prometheus queries per tick independent of N | {shown} | constant | {verdict(constant)} |",
              f"| tick wall time (fetch + judge) at {big.canaries} | p50 {np.median(walls) * 1000:.0f} ms, "
              f"max {max(walls) * 1000:.0f} ms | {limit} | {verdict(max(walls) <= TICK_WALL_TARGET)} |",
              f"| (the daemon's own CPU per tick at {big.canaries}) | p50 {np.median(cpus) * 1000:.0f} ms, "
              f"max {max(cpus) * 1000:.0f} ms | {limit} | {verdict(max(cpus) <= TICK_WALL_TARGET)} |",
              f"| daemon RSS after the ticks at {big.canaries} | {big.rss_mb:.0f} MB (peak {big.hwm_mb:.0f} MB; "
              f"{baseline_mb:.0f} MB after imports) | ≤ {RSS_TARGET_MB:.0f} MB | "
              f"{verdict(big.rss_mb <= RSS_TARGET_MB)} |",
              f"| every canary judged once per interval ({big.slots} slot ticks at {big.canaries}) "
              f"| {'yes' if all_judged else 'no'} | yes | "
              f"{verdict(all_judged)} |"]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--canaries", type=int, default=1000, help="the largest size (default 1000)")
    p.add_argument("--ticks", type=int, default=10, help="timed ticks per size (default 10)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, Prometheus data)")
    args = p.parse_args(argv)
    if args.canaries < 1 or args.ticks < 1:
        p.error("--canaries and --ticks must be >= 1")
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
    sizes = sorted({s for s in (10, 100, args.canaries) if s <= args.canaries})
    n = args.canaries
    baseline_mb, _ = memory_mb()  # the daemon's modules are imported: its fixed cost
    load_before = os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="canaryd-bench-scale-"))
    setup_logs(workdir / "canaryd.log")
    started = time.monotonic()
    servers: list[Any] = []
    try:
        labels = {"namespace": NAMESPACE}
        for arm, rps in (("stable", STABLE_RPS), ("canary", CANARY_RPS)):
            exporter = ExporterProcess([job(i, arm) for i in range(n)], labels=labels, rps=rps, error_rate=0.005,
                                       client_error_rate=0.01, workdir=workdir / f"exporter-{arm}", start_timeout=60)
            servers.append(exporter)
            exporter.start()
        prom = PrometheusServer([e.address for e in servers], scrape_interval=f"{SCRAPE_INTERVAL:g}s",
                                evaluation_interval="10s", workdir=workdir / "prometheus", start_timeout=60)
        servers.append(prom)
        prom.start()
        prom.wait_for_targets_up(timeout=60)
        series = 20 * 2 * n  # per job: 3 statuses + 15 buckets + _sum + _count

        def ingested() -> bool:
            rows = prom.query('count({__name__=~"http_request.*"})')
            return bool(rows) and float(rows[0]["value"][1]) >= series

        wait_until(ingested, timeout=120, interval=0.5, what=f"{series} series in Prometheus")
        results = []
        gc_time = GcTime()
        gc.callbacks.append(gc_time)
        for size in sizes:
            gc.collect()  # the previous size's controller is gone; do not count its garbage
            results.append(asyncio.run(run_size(size, prom.url, args.ticks, gc_time)))
        scrape = prom.query("max(scrape_duration_seconds)")
        scrape_s = float(scrape[0]["value"][1]) if scrape else float("nan")
    finally:
        for s in reversed(servers):
            s.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    load = f"load average {load_before:.1f} → {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    meta = (f"scale: sizes {', '.join(map(str, sizes))} canaries in one process each after the other; real "
            f"Prometheus {SCRAPE_INTERVAL:g} s scrape of {2 * n} jobs ({series} series) from 2 exporter processes "
            f"(slowest scrape {scrape_s * 1000:.0f} ms); {args.ticks} ticks per size, interval {INTERVAL:g} s; "
            f"dry-run actuators, JSON logs at info to a file; {load}; {time.monotonic() - started:.0f} s")
    print(report(results, baseline_mb, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
