"""Passive start: canaryd begins a rollout when the cluster says one has begun.

- The canary Deployment's pod template changes (a new image, say) and the new version becomes
  available: watched, with a re-list after 410 Gone. A change during a rollout restarts it from the
  first step with the new version (CanaryWorker.new_version). At start-up (the first list), a canary
  Deployment still rolling out, or whose template is not the version its rollout state names, counts
  as changed: a restarted daemon does not miss a release made while it was down.
- An operator sets the canary's weight above 0 by hand (`kubectl patch`, as in the platform strategy): seen when
  the route is read, once per analysis interval, for canaries that are not already in a rollout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from .controller import COMMAND_TIMEOUT, Controller
from .health import Health
from .kube import KubeClient, KubeError, container_images, rollout_status
from .kube.rollout import template_hash
from .rollout import ACTIVE, Phase, TransitionError, Trigger

log = logging.getLogger("canaryd.watcher")


JUDGED = (Phase.PROGRESSING, Phase.PAUSED)  # a new version restarts these rollouts


def _rolling_out(deployment: Mapping[str, Any]) -> bool:
    replicas = deployment.get("spec", {}).get("replicas", 1)
    return not rollout_status(deployment)[0] and replicas != 0


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
        if self._changed(key, before, digest, obj):
            self.pending[ref] = digest
            worker = self.controller.workers.get(key)
            if worker is not None and worker.rollout.phase in JUDGED and worker.rollout.version != digest:
                images = ", ".join(f"{c}={i}" for c, i in container_images(obj).items())
                await self._restart(key, digest, f"canary Deployment {ref} changed during the rollout ({images}): "
                                                 "the new version is judged again from the first step")
        if self.pending.get(ref) != digest:
            return
        done, _ = rollout_status(obj)
        if not done:
            return
        del self.pending[ref]
        images = ", ".join(f"{c}={i}" for c, i in container_images(obj).items())
        await self._start(key, f"canary Deployment {ref} changed and is available ({images})")

    def _changed(self, key: str, before: str | None, digest: str, obj: Mapping[str, Any]) -> bool:
        if before is not None:
            return before != digest
        # First sight (start-up, or a canary added by a reload): what happened while nobody watched.
        worker = self.controller.workers.get(key)
        version = worker.rollout.version if worker is not None else None
        return (version is not None and version != digest) or (
            _rolling_out(obj) and (worker is None or worker.rollout.phase not in ACTIVE))

    async def _restart(self, key: str, digest: str, reason: str) -> None:
        worker = self.controller.workers.get(key)
        if worker is None or not self.controller.leadership.is_leader:
            return  # the leader restarts it; a follower reads the result from the route
        try:
            await asyncio.wait_for(worker.new_version(digest, reason), COMMAND_TIMEOUT)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the route write failed, say: the worker's status says so
            log.warning("could not restart the rollout for a new version", extra={"canary": key, "error": str(e)})

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
