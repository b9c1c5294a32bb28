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

from .controller import Controller
from .health import Health
from .kube import KubeClient, KubeError, container_images, rollout_status
from .rollout import ACTIVE, TransitionError, Trigger

log = logging.getLogger("canaryd.watcher")


def template_hash(deployment: Mapping[str, Any]) -> str:
    template = deployment.get("spec", {}).get("template", {})
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]


class DeploymentWatcher:
    """Remembers each canary Deployment's pod template; a change that becomes available starts a rollout."""

    def __init__(self, controller: Controller, health: Health | None = None) -> None:
        self.controller = controller
        self.health = health or controller.health  # this writes "watch <namespace>"
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
                self.health.set_problem(f"watch {namespace}", str(e))
                log.warning("deployment watch failed; retrying", extra={"namespace": namespace, "error": str(e)})
                await asyncio.sleep(5.0)
            else:
                self.health.clear(f"watch {namespace}")


async def poll_manual_weights(controller: Controller) -> None:
    """One pass: each canary not in a rollout looks at its route (CanaryWorker.observe_route), in turn."""
    if not controller.leadership.is_leader:
        return
    for key, w in list(controller.workers.items()):
        if w.rollout.phase in ACTIVE or w.pending_rollback is not None:
            continue  # its own task knows where it stands; do not queue behind a rollout
        try:
            await w.observe_route()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("could not read the route", extra={"canary": key, "error": str(e)})


class NamespaceWatches:
    """One Deployment watch per namespace of the configured canaries; follows the config on reload."""

    def __init__(self, watcher: DeploymentWatcher, kube: KubeClient) -> None:
        self.watcher = watcher
        self.kube = kube
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def follow(self, namespaces: set[str]) -> None:
        for ns in sorted(namespaces - self.tasks.keys()):
            self.tasks[ns] = asyncio.create_task(self.watcher.watch_namespace(self.kube, ns), name=f"watch {ns}")
        for ns in sorted(self.tasks.keys() - namespaces):
            self.tasks.pop(ns).cancel()
            self.watcher.health.clear(f"watch {ns}")  # no longer watched: its old failure must not stick

    async def close(self) -> None:
        tasks = list(self.tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.tasks.clear()


async def run_watchers(controller: Controller, kube: KubeClient, health: Health | None = None) -> None:
    watcher = DeploymentWatcher(controller, health)
    watches = NamespaceWatches(watcher, kube)
    try:
        while True:
            watches.follow({c.namespace for c in controller.config.canaries})
            await asyncio.sleep(controller.tick_interval())
            await poll_manual_weights(controller)
    finally:
        await watches.close()
