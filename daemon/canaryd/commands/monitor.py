"""`canaryd monitor SERVICE`: a live table of canary against stable, like the platform strategy's canary-monitor.sh.

Every --interval seconds for --duration minutes: request rate, error rate, success rate, P50/P95/P99,
CPU and memory of both arms, and each metric's verdict from the daemon's judge. Failed queries are
said once per refresh, in its status line (Prometheus down: NO DATA and the error). Exit code as
analyze: 0 advance, 1 rollback, 3 hold (also without data), 2 usage or config error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, replace

import aiohttp

from ..analysis import judge
from ..analysis.distribution import histogram_quantile
from ..analysis.snapshot import ArmSnapshot, Snapshot
from ..analysis.verdicts import Decision, Judgement
from ..config import ConfigError
from ..rollout import add_arm
from ..sources.counters import advance
from ..sources.http_config import http_options
from ..sources.prometheus import ArmTarget, PrometheusClient, SourceError, fetch_increments
from .cluster import add_cluster_args, canary_from_args
from .common import DECISION_EXIT, config_problems, fail
from .table import render_metrics


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("monitor", help="live table of canary against stable", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cluster_args(p, mesh=False)
    p.add_argument("--interval", type=float, default=10.0, help="seconds between refreshes (default 10)")
    p.add_argument("--duration", type=float, default=5.0, help="minutes to watch (default 5)")
    p.add_argument("--prometheus-url", default=None, help="default: the config's, else http://127.0.0.1:9090")
    p.add_argument("--min-requests", type=int, default=None, help="requests per arm before passing")
    p.set_defaults(handler=run)


def _rate(x: float | None, n: float | None) -> str:
    return "-" if x is None or not n else f"{100 * x / n:.2f} %"


def _q(arm: ArmSnapshot, q: float) -> str:
    v = histogram_quantile(q, arm.buckets) if arm.buckets else None
    return "-" if v is None else f"{1000 * v:.0f} ms"


def arm_table(c: ArmSnapshot, s: ArmSnapshot, seconds: float) -> str:
    def row(name: str, a: ArmSnapshot) -> tuple[str, ...]:
        rps = "-" if a.requests is None or seconds <= 0 else f"{a.requests / seconds:.1f}/s"
        success = ("-" if a.requests is None or not a.requests else
                   f"{100 * (a.successes if a.successes is not None else a.requests - (a.errors or 0)) / a.requests:.2f} %")
        return (name, rps, _rate(a.errors, a.requests), success, _q(a, 0.5), _q(a, 0.95), _q(a, 0.99),
                "-" if a.cpu is None else f"{a.cpu:.0f} %", "-" if a.memory is None else f"{a.memory:.0f} %")

    rows = [("arm", "requests", "errors", "success", "P50", "P95", "P99", "cpu", "memory"),
            row("canary", c), row("stable", s)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def failures(errors: Sequence[SourceError], queries: int) -> str:
    """The refresh's failed queries for its status line ("" when none failed): each distinct error once,
    with a count, since Prometheus down fails every query with the same message."""
    if not errors:
        return ""
    distinct = list(dict.fromkeys(str(e) for e in errors))
    more = f" (and {len(distinct) - 1} other errors)" if len(distinct) > 1 else ""
    return f", {len(errors)} of {queries} queries failed: {distinct[0]}{more}"


@contextlib.contextmanager
def _errors_in_the_status_line() -> Iterator[None]:
    """The Prometheus client logs every failed query (the daemon wants that); here each refresh's status
    line reports them, once, so the log lines would only repeat it on stderr."""
    logger = logging.getLogger("canaryd.prometheus")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


async def _monitor(args: argparse.Namespace) -> int:
    config, canary = canary_from_args(args)
    settings = canary.settings.judge_settings()
    if args.min_requests is not None:
        settings = replace(settings, min_requests=args.min_requests)
    url = args.prometheus_url or config.prometheus.url
    targets = [ArmTarget(key=canary.key, arm=arm, selector=getattr(canary, arm).selector, namespace=canary.namespace,
                         deployment=getattr(canary, arm).deployment) for arm in ("canary", "stable")]
    queries = asdict(canary.queries)
    started = time.time()
    state = judge.start(settings, started)
    totals: dict[str, ArmSnapshot] = {}
    window = Snapshot(t=started, canary=ArmSnapshot(), stable=ArmSnapshot())
    final: Judgement | None = None
    base, http = http_options(config.prometheus, url)
    http.use_environment(base)  # the environment's proxy and ~/.netrc apply, looked up once
    async with aiohttp.ClientSession() as session:
        client = PrometheusClient(session, base, timeout=config.prometheus.timeout, retries=1, http=http)
        deadline = started + 60.0 * args.duration
        while True:
            now = time.time()
            try:
                result = await fetch_increments(client, targets, queries, None)
            except SourceError as e:  # fetch_increments collects errors; this is only a bad template
                return fail("monitor", str(e))
            if result.all_failed:
                print(f"\n[{time.strftime('%H:%M:%S')}] {canary.key}: NO DATA after {now - started:.0f}s"
                      f"{failures(result.errors, result.queries)}", flush=True)
            else:
                incs = {}
                for arm in ("canary", "stable"):
                    incs[arm], totals[arm] = advance(totals.get(arm), result.increments.get((canary.key, arm))
                                                     or ArmSnapshot())
                window = Snapshot(t=now, canary=add_arm(window.canary, incs["canary"]),
                                  stable=add_arm(window.stable, incs["stable"]))
                final, state = judge.observe(state, window, settings)
                print(f"\n[{time.strftime('%H:%M:%S')}] {canary.key}: {final.decision.value.upper()} "
                      f"after {now - started:.0f}s{failures(result.errors, result.queries)}", flush=True)
                print(arm_table(window.canary, window.stable, now - started))
                if final.metrics:
                    print(render_metrics(final.metrics))
                for reason in final.reasons[:4]:
                    print(f"  - {reason}")
                sys.stdout.flush()
                if final.decision is Decision.ROLLBACK:
                    break
            if now + args.interval > deadline:
                break
            await asyncio.sleep(args.interval)
    return DECISION_EXIT[final.decision] if final is not None else DECISION_EXIT[Decision.HOLD]


def run(args: argparse.Namespace) -> int:
    try:
        with _errors_in_the_status_line():
            return asyncio.run(_monitor(args))
    except ConfigError as e:
        return config_problems(e)
    except ValueError as e:
        return fail("monitor", str(e))

