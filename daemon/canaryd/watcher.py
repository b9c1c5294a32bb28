"""Passive start: canaryd begins a rollout when the cluster says one has begun.

- The canary Deployment's pod template changes (a new image, say) and the new version becomes
  available: watched, with a re-list after 410 Gone.
- An operator sets the canary's weight above 0 by hand (`kubectl patch`, as in the seed): seen when
  the route is read, once per analysis interval, for canaries that are not already in a rollout.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from .actuator import ActuationError
from .controller import Controller
from .kube import KubeClient, KubeError, container_images, rollout_status
from .rollout import ACTIVE, TransitionError, Trigger, step_for_weight

log = logging.getLogger("canaryd.watcher")


def template_hash(deployment: Mapping[str, Any]) -> str:
    template = deployment.get("spec", {}).get("template", {})
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]


class DeploymentWatcher:
    """Remembers each canary Deployment's pod template; a change that becomes available starts a rollout."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.known: dict[str, str] = {}  # "ns/deployment" → template hash last seen
        self.pending: dict[str, str] = {}  # changed, not yet available
        self._index: dict[tuple[str, str], str] = {}
        self._index_stamp: tuple[int, int] | None = None

    def _canary_for(self, namespace: str, deployment: str) -> str | None:
        # An index rebuilt when the set of canaries changes (a reload): one event must not scan them all.
        workers = self.controller.workers
        stamp = (id(self.controller.config), len(workers))
        if stamp != self._index_stamp:
            self._index = {(w.config.namespace, w.config.canary.deployment): key for key, w in workers.items()}
            self._index_stamp = stamp
        return self._index.get((namespace, deployment))

    async def observe(self, event_type: str, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata", {})
        ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        ref = f"{ns}/{name}"
        if event_type == "DELETED":
            self.known.pop(ref, None)
            self.pending.pop(ref, None)
            return
        key = self._canary_for(ns, name)
        if key is None:
            return
        digest = template_hash(obj)
        before = self.known.get(ref)
        self.known[ref] = digest
        if before is not None and before != digest:
            self.pending[ref] = digest
        if self.pending.get(ref) != digest:
            return
        done, _ = rollout_status(obj)
        if not done:
            return
        del self.pending[ref]
        images = ", ".join(f"{c}={i}" for c, i in container_images(obj).items())
        await self._start(key, f"canary Deployment {ref} changed and is available ({images})")

    async def _start(self, key: str, reason: str, step: int = 0) -> None:
        ns, name = key.split("/", 1)
        try:
            await self.controller.command(ns, name, "start", trigger=Trigger.START, reason=reason, step=step)
            log.info("rollout started", extra={"canary": key, "reason": reason})
        except TransitionError as e:
            log.info("not starting", extra={"canary": key, "reason": reason, "why": str(e)})
        except Exception as e:  # NotLeader, ActuationError, timeout: the next event or poll tries again
            log.warning("could not start a rollout", extra={"canary": key, "error": str(e)})

    async def watch_namespace(self, kube: KubeClient, namespace: str) -> None:
        while True:
            try:
                async for event in kube.watch_deployments(namespace):
                    await self.observe(event.type, event.object)
            except asyncio.CancelledError:
                raise
            except KubeError as e:
                self.controller.problems[f"watch {namespace}"] = str(e)
                log.warning("deployment watch failed; retrying", extra={"namespace": namespace, "error": str(e)})
                await asyncio.sleep(5.0)
            else:
                self.controller.problems.pop(f"watch {namespace}", None)


async def poll_manual_weights(controller: Controller) -> None:
    """One pass: a canary not in a rollout whose route has a canary weight > 0 was started by hand."""
    if not controller.is_leader:
        return
    for key, w in list(controller.workers.items()):
        if w.rollout.phase in ACTIVE or w.pending_rollback is not None:
            continue
        try:
            weight = await w.actuator.read_weight()
            if weight > 0 and w.rollout.weight != weight:
                saved = await w.actuator.read_state()
                if saved and saved.get("weight") == weight:
                    # canaryd's own weight, with its state (whose read failed at start, say): resume that
                    # state rather than start over; a paused or promoted rollout must stay so.
                    await w.refresh()
                    continue
        except ActuationError as e:
            w.error = str(e)
            continue
        if w.pending_rollback is None:
            w.error = None  # the route reads fine again
        if weight > 0 and w.rollout.weight != weight:
            step = step_for_weight(w.config.settings.traffic_steps, weight)
            ns, name = key.split("/", 1)
            reason = f"canary weight set to {weight} % by hand on the route; continuing from there"
            try:
                await controller.command(ns, name, "start", trigger=Trigger.START, reason=reason, step=step)
            except TransitionError:
                pass
            except Exception as e:
                log.warning("could not start a rollout", extra={"canary": key, "error": str(e)})


async def run_watchers(controller: Controller, kube: KubeClient) -> None:
    watcher = DeploymentWatcher(controller)
    namespaces = sorted({w.config.namespace for w in controller.workers.values()})
    tasks = [asyncio.create_task(watcher.watch_namespace(kube, ns), name=f"watch {ns}") for ns in namespaces]
    try:
        while True:
            await asyncio.sleep(controller.tick_interval())
            await poll_manual_weights(controller)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
