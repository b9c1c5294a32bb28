"""`canaryd status|promote|rollback SERVICE`: act on the cluster directly, as the platform strategy's manual steps do.

`status` also shows the Canary object of that name when the cluster has one (its phase and conditions),
and without --config reads the route and arms its spec names.

The route's `canaryd.io/state` annotation is updated in the same write as the weights, so a running
daemon sees what was done and does not undo it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ..actuator import ActuationError
from ..config import ConfigError
from ..kube import KubeError
from ..rollout import Phase, SavedState, Trigger
from ..routers.base import RouterError
from .cluster import add_cluster_args, canary_from_args, connect_cluster, no_cluster
from .common import config_problems, fail


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show a canary's phase, weight, step and last decision")
    add_cluster_args(p)
    p.add_argument("--output", "-o", choices=("text", "json"), default="text")
    p.set_defaults(handler=lambda a: _run(a, _status))
    p = sub.add_parser("promote", help="promote the canary: stable takes its version, traffic back to stable")
    add_cluster_args(p)
    p.set_defaults(handler=lambda a: _run(a, _promote))
    p = sub.add_parser("rollback", help="roll the canary back: all traffic to stable, canary scaled to 0")
    add_cluster_args(p)
    p.add_argument("--emergency", action="store_true",
                   help="only cut the traffic (one write): no scaling, no waiting")
    p.set_defaults(handler=lambda a: _run(a, _rollback))


def _run(args: argparse.Namespace, action) -> int:
    try:
        config, canary = canary_from_args(args)
    except ConfigError as e:
        return config_problems(e)
    except ValueError as e:
        return fail(args.command, str(e))
    try:
        return asyncio.run(action(args, config, canary))
    except (KubeError, RouterError, ActuationError, ValueError) as e:  # `status` reads the router directly
        missing = no_cluster(e)
        if missing is not None:  # nothing was changed: a usage/config problem, exit 2
            return fail(args.command, missing)
        print(f"canaryd {args.command}: {e}", file=sys.stderr)
        return 1


async def _actuator(config, canary):
    from ..kube_actuator import KubeActuator, router_for
    kube = await connect_cluster(config)
    return kube, KubeActuator(kube, router_for(kube, canary), canary)


def _state(saved: Mapping[str, Any] | None, phase: Phase, *, decision: str, reason: str) -> dict[str, Any]:
    try:
        current = SavedState.from_json(saved) if saved else SavedState()
    except ValueError:  # not canaryd's: the manual decision starts a fresh record
        current = SavedState()
    return current.concluded(phase, decision=decision, trigger=Trigger.MANUAL, reason=reason,
                             at=time.time()).to_json()


async def _canary_object(kube, config, canary, args) -> tuple[dict[str, Any] | None, Any]:
    """The Canary object of this name, if the cluster has one, and the canary it declares (its spec names
    the route and arms) unless a --config names them."""
    from ..canary_resources import canary_config, defaults_as_written
    from ..kube.canaries import CANARY
    try:
        obj = await kube.get_custom(CANARY, canary.namespace, canary.name)
    except KubeError:  # none, no CRD, or not allowed to read it: the route alone tells
        return None, canary
    if not getattr(args, "config", None):
        with contextlib.suppress(ConfigError):
            canary = canary_config(obj, defaults_as_written(config.defaults))
    return obj, canary


def _print_canary_object(obj: Mapping[str, Any]) -> None:
    status = obj.get("status") or {}
    print(f"resource  Canary {obj['metadata'].get('namespace')}/{obj['metadata'].get('name')}: "
          f"{status.get('phase', 'no status yet')}")
    for c in status.get("conditions") or ():
        message = f": {c['message']}" if c.get("message") else ""
        print(f"  {c.get('type')}={c.get('status')} ({c.get('reason')}){message}")


async def _status(args, config, canary) -> int:
    from ..kube_actuator import KubeActuator, router_for
    kube = await connect_cluster(config)
    async with kube:
        obj, canary = await _canary_object(kube, config, canary, args)
        route = await KubeActuator(kube, router_for(kube, canary), canary).router.read()
    state = dict(route.state or {})
    if args.output == "json":
        print(json.dumps({"namespace": canary.namespace, "name": canary.name, "route": canary.route,
                          "mesh": canary.settings.mesh.value, "weight": route.canary_weight,
                          "stable_weight": route.stable_weight, "state": state,
                          **({"resource_status": obj.get("status") or {}} if obj is not None else {})}, indent=2))
        return 0
    steps = canary.settings.traffic_steps
    last = state.get("last_decision") or {}
    started = state.get("step_started_at")
    print(f"canary    {canary.namespace}/{canary.name} ({canary.settings.mesh.value} route {canary.route})")
    print(f"phase     {state.get('phase', 'idle (no canaryd state on the route)')}")
    print(f"weight    canary {route.canary_weight} % / stable {route.stable_weight} %")
    if state.get("step") is not None and state.get("step", -1) >= 0:
        print(f"step      {state['step'] + 1} of {len(steps)} ({', '.join(map(str, steps))})")
    if started:
        print(f"since     {datetime.fromtimestamp(float(started), UTC).isoformat(timespec='seconds')}")
    if state.get("paused_reason"):
        print(f"paused    {state['paused_reason']}")
    if last:
        print(f"decision  {last.get('decision')} (trigger {last.get('trigger')})")
        for reason in last.get("reasons") or []:
            print(f"  - {reason}")
    if obj is not None:
        _print_canary_object(obj)
    return 0


async def _promote(args, config, canary) -> int:
    kube, act = await _actuator(config, canary)
    async with kube:
        saved = (await act.router.read()).state  # unwrapped: no cluster at all is exit 2 (cluster.py)
        print(f"promoting {canary.key}: setting {canary.stable.deployment} to {canary.canary.deployment}'s "
              f"images, waiting up to {canary.settings.progress_deadline:g}s for its rollout ...")
        state = _state(saved, Phase.SUCCEEDED, decision="promoted", reason="promoted from the command line")
        await act.promote(state)
    print(f"promoted: {canary.stable.deployment} runs the new version, traffic 100 % stable, "
          f"{canary.canary.deployment} scaled to 0")
    return 0


async def _rollback(args, config, canary) -> int:
    kube, act = await _actuator(config, canary)
    async with kube:
        saved = (await act.router.read()).state  # unwrapped: no cluster at all is exit 2 (cluster.py)
        kind = "emergency rollback" if args.emergency else "rollback"
        state = _state(saved, Phase.ROLLED_BACK, decision="rollback", reason=f"manual {kind} from the command line")
        await act.rollback(state, emergency=args.emergency)
    extra = "" if args.emergency else f", {canary.canary.deployment} scaled to 0"
    print(f"rolled back {canary.key}: traffic 100 % stable{extra}")
    return 0
