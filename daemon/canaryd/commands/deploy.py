"""`canaryd deploy SERVICE IMAGE`: what the platform strategy's canary-deploy.sh does, with the daemon's judge.

1. set the canary Deployment's image and wait for its rollout;
2. walk the traffic steps, judging each step exactly as the daemon does (same controller, same judge);
3. roll back automatically on a failure; promote at the end with --auto-promote.

Exit codes: 0 promoted, 1 rolled back, 3 waiting for promotion (or paused), 2 usage or config error.
--dry-run prints every change it would make and makes none.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from dataclasses import replace

from ..actuator import ActuationError
from ..config import ConfigError, parse_duration
from ..controller import Controller
from ..kube import KubeClient, KubeError, container_images
from ..rollout import Phase, TransitionError
from ..routers.base import RouterError
from ..wiring import assemble
from .cluster import add_cluster_args, canary_from_args
from .common import EXIT_ADVANCE, EXIT_HOLD, EXIT_ROLLBACK, config_problems, fail


def _minutes(text: str) -> float:
    """The platform strategy's --step-duration is in minutes; a duration such as 90s or 2m30s also works."""
    try:
        return 60.0 * float(text)
    except ValueError:
        try:
            return parse_duration(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None


def _steps(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated percentages such as 5,25,50,100, got {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deploy", help="deploy an image as the canary and walk the traffic steps",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cluster_args(p)
    p.add_argument("image", help="the new image, e.g. ghcr.io/orion/auth:v2.0.0")
    p.add_argument("--error-threshold", type=float, default=5.0, help="max error rate %% (default 5)")
    p.add_argument("--latency-p95", type=float, default=500.0, help="max P95 latency ms (default 500)")
    p.add_argument("--traffic-steps", type=_steps, default=[5, 25, 50, 100], help="default 5,25,50,100")
    p.add_argument("--step-duration", type=_minutes, default=300.0, metavar="MINUTES",
                   help="time per step in minutes, or a duration such as 90s (default 5)")
    p.add_argument("--dry-run", action="store_true", help="print every change, make none")
    p.add_argument("--auto-promote", action="store_true", help="promote after the last step")
    p.add_argument("--container", help="the container to update (default: SERVICE, or the only one)")
    p.add_argument("--interval", type=_minutes, default=None, metavar="MINUTES",
                   help="analysis interval in minutes, or a duration such as 30s (default 0.5, that is 30s; "
                        "a fifth of a step under 30s)")
    p.add_argument("--min-requests", type=int, default=None, help="requests per arm before a step passes")
    p.add_argument("--prometheus-url", default=None, help="default http://127.0.0.1:9090")
    p.set_defaults(handler=run, command="deploy")


def _settings(args: argparse.Namespace) -> dict:
    base: dict = {"traffic_steps": args.traffic_steps, "step_duration": f"{args.step_duration}s",
                  "auto_promote": args.auto_promote,
                  "thresholds": {"error_rate": args.error_threshold, "latency_p95_ms": args.latency_p95}}
    if args.interval is not None:
        base["interval"] = f"{args.interval}s"
    elif args.step_duration < 30:
        base["interval"] = f"{max(1.0, args.step_duration / 5)}s"
    if args.min_requests is not None:
        base["min_requests"] = args.min_requests
    return base


def _container(args: argparse.Namespace, deployment: dict) -> str:
    names = list(container_images(deployment))
    if args.container:
        if args.container not in names:
            raise ValueError(f"Deployment has no container {args.container!r}; containers: {', '.join(names)}")
        return args.container
    if args.service in names:
        return args.service
    if len(names) == 1:
        return names[0]
    raise ValueError(f"which container? the Deployment has {', '.join(names)}; use --container")


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


async def _deploy(args: argparse.Namespace) -> int:
    config, canary = canary_from_args(args, base=_settings(args))
    if args.prometheus_url:
        config = replace(config, prometheus=replace(config.prometheus, url=args.prometheus_url))
    from ..kube_actuator import connect, router_for
    async with contextlib.AsyncExitStack() as stack:
        try:
            kube: KubeClient = await connect(config)
        except ValueError as e:
            if not args.dry_run:
                raise
            return _plan_offline(args, canary, str(e))
        stack.push_async_callback(kube.close)
        ns = canary.namespace
        dep = await kube.get_deployment(ns, canary.canary.deployment)
        container = _container(args, dep)
        old = container_images(dep)[container]
        if args.dry_run:
            return await _plan(args, kube, canary, container, old, router_for)
        await router_for(kube, canary).read()  # a route canaryd cannot weigh fails now, before any change
        say(f"setting {ns}/{canary.canary.deployment} {container}={args.image} (was {old})")
        await kube.set_images(ns, canary.canary.deployment, {container: args.image})
        say(f"waiting for the canary rollout (up to {canary.settings.progress_deadline:g}s)")
        await kube.wait_for_rollout(ns, canary.canary.deployment, timeout=canary.settings.progress_deadline)
        # The daemon's own parts on this one canary; no notifications, no leader election.
        parts = await stack.enter_async_context(assemble(config, kube=kube, notify=False, elect=False))
        return await _walk(parts.controller, canary)


async def _walk(controller: Controller, canary) -> int:
    worker = controller.workers[canary.key]
    status = await controller.command(canary.namespace, canary.name, "start",
                                      reason=f"canaryd deploy: walking {canary.settings.traffic_steps}")
    say(f"step 1/{len(canary.settings.traffic_steps)}: canary at {status['weight']} %")
    interval = canary.settings.interval
    while True:
        await asyncio.sleep(interval)
        await controller.tick()
        await worker.barrier()
        s = worker.status()
        phase = s["phase"]
        last = s.get("last_decision") or {}
        verdicts = ", ".join(f"{m['name']}={m['verdict']}" for m in last.get("metrics") or []
                             if m["verdict"] != "skipped")
        left = max(0.0, canary.settings.step_duration - (time.time() - (s.get("step_started_at") or time.time())))
        say(f"step {s['step'] + 1}/{len(s['steps'])} at {s['weight']} %, {left:.0f}s left in the step: "
            f"{last.get('decision', '-')}" + (f" [{verdicts}]" if verdicts else ""))
        if phase == Phase.ROLLED_BACK.value:
            for r in last.get("reasons") or []:
                say(f"  rolled back: {r}")
            return EXIT_ROLLBACK
        if phase == Phase.SUCCEEDED.value:
            say("promoted: stable runs the new version, canary scaled to 0")
            return EXIT_ADVANCE
        if phase == Phase.PAUSED.value:
            say(f"paused: {s.get('paused_reason')}")
            return EXIT_HOLD
        if worker.error:
            say(f"route error: {worker.error}")


async def _plan(args, kube: KubeClient, canary, container: str, old: str, router_for) -> int:
    route = await router_for(kube, canary).read()
    print(f"dry run: nothing will be changed in {canary.namespace}")
    print(f"- would set image deployment/{canary.canary.deployment} {container}={args.image} (now {old})")
    return _plan_steps(args, canary, f"now sends {route.canary_weight} % to the canary")


def _plan_offline(args, canary, why: str) -> int:
    """--dry-run with no cluster to read: the plan the flags describe, said to be only that."""
    print(f"dry run without a cluster ({why}): the plan for the given flags; nothing was read or changed")
    container = args.container or f"{args.service} (or the Deployment's only container)"
    print(f"- would set image deployment/{canary.canary.deployment} {container}={args.image}")
    return _plan_steps(args, canary, "has weights that are not known without a cluster")


def _plan_steps(args, canary, route_now: str) -> int:
    print(f"- would wait up to {canary.settings.progress_deadline:g}s for its rollout")
    print(f"- route {canary.route} ({canary.settings.mesh.value}) {route_now}")
    for i, weight in enumerate(canary.settings.traffic_steps):
        print(f"- step {i + 1}: would set weights stable {100 - weight} / canary {weight} on {canary.route}, "
              f"then judge for at least {canary.settings.step_duration:g}s (rollback on failure)")
    if canary.settings.auto_promote:
        print(f"- would promote: set {canary.stable.deployment} to {args.image}, wait for it, weights 100/0, "
              f"scale {canary.canary.deployment} to 0")
    else:
        print("- would wait for `canaryd promote` (no --auto-promote)")
    return EXIT_ADVANCE


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_deploy(args))
    except ConfigError as e:
        return config_problems(e)
    except (KubeError, RouterError, ActuationError, ValueError, TransitionError) as e:
        return fail("deploy", str(e))
    except KeyboardInterrupt:
        return 130
