"""The seed's procedures on a real cluster: weights through the mesh's router, promotion and rollback
on the Deployments.

- before the first weight: the canary is scaled to the replicas it needs (`prepare_canary`), and gets
  traffic only once they are available.
- promote: stable's pod template := canary's (patches.promoted_template); wait for stable's rollout; weights 100/0; canary to 0 replicas.
  A rollout that does not finish within progress_deadline stops the promotion with the canary still
  serving, so traffic is never moved onto a broken stable.
- rollback: weights 100/0, then the canary to 0 replicas.
- emergency rollback: weights 100/0, one write, nothing else.

A canary Deployment that is gone (404) when it is to be scaled down is as good as scaled down: done.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from .actuator import ActuationError, Actuator, RouterActuator
from .config import CanaryConfig, Config
from .kube import KubeClient, KubeError, KubeNotFound, container_images
from .kube.rollout import progress_deadline_exceeded, rollout_status, template_hash
from .routers import make_router
from .routers.base import Router

log = logging.getLogger("canaryd.kube_actuator")


class KubeActuator(RouterActuator):
    def __init__(self, kube: KubeClient, router: Router, canary: CanaryConfig, *,
                 poll_interval: float = 2.0) -> None:
        super().__init__(router)
        self.kube = kube
        self.canary = canary
        self.poll_interval = poll_interval

    async def promote(self, state: Mapping[str, Any]) -> None:
        c = self.canary
        ns = c.namespace
        await self.verify()  # another replica may have rolled back or paused: do not touch stable then
        try:
            canary = await self.kube.get_deployment(ns, c.canary.deployment)
            images = container_images(canary)
            if not images:
                raise ActuationError(f"Deployment {ns}/{c.canary.deployment} has no containers to promote")
            stable = await self.kube.get_deployment(ns, c.stable.deployment)
            if not images.keys() & container_images(stable).keys():  # not two arms of one app
                raise ActuationError(f"Deployment {ns}/{c.stable.deployment} has none of the canary's containers "
                                     f"({', '.join(images)})")
            # The whole pod template (env, resources, volumes, annotations), not only the images.
            await self.kube.copy_template(ns, c.stable.deployment, canary)
            await self.kube.wait_for_rollout(ns, c.stable.deployment, timeout=c.settings.progress_deadline,
                                             poll_interval=self.poll_interval)
        except KubeError as e:
            raise ActuationError(f"promotion stopped before moving traffic: {e}") from e
        await self.set_weight(0, {**state, "weight": 0})  # the state says what the route now has
        await self._scale_down("promoted")

    async def prepare_canary(self) -> tuple[bool, str, str | None]:
        """Scale the canary up to the replicas it needs (canary_replicas, else stable's count) if it has
        fewer; then (available?, why, its pod template's version). One look, never a wait: the canary's
        task asks again until the pods are available or progress_deadline has passed."""
        c = self.canary
        ns, name = c.namespace, c.canary.deployment
        try:
            canary = await self.kube.get_deployment(ns, name)
            want = c.settings.canary_replicas
            if want is None:
                stable = await self.kube.get_deployment(ns, c.stable.deployment)
                want = max(1, _replicas(stable))
            have = _replicas(canary)
            version = template_hash(canary)
            if have < want:
                await self.kube.scale(ns, name, want)
                return False, f"Deployment {ns}/{name} scaled from {have} to {want} replicas", version
        except KubeError as e:
            raise ActuationError(f"cannot scale the canary up: {e}") from e
        done, why = rollout_status(canary)
        failed = progress_deadline_exceeded(canary)
        return done and failed is None, f"Deployment {ns}/{name}: {failed or why}", version

    async def rollback(self, state: Mapping[str, Any], *, emergency: bool = False) -> None:
        await self.set_weight(0, state)
        if emergency:
            return
        await self._scale_down("traffic is back on stable")

    async def _scale_down(self, done: str) -> None:
        ns, name = self.canary.namespace, self.canary.canary.deployment
        try:
            await self.kube.scale(ns, name, 0)
        except KubeNotFound:
            # Deleted: it runs no pods, which is all a scale-down is for. Retrying would never succeed.
            log.info("canary Deployment is gone; nothing to scale down", extra={"deployment": f"{ns}/{name}"})
        except KubeError as e:
            raise ActuationError(f"{done}, but scaling the canary down failed: {e}", route_written=True) from e


def _replicas(deployment: Mapping[str, Any]) -> int:
    replicas = (deployment.get("spec") or {}).get("replicas", 1)
    return replicas if isinstance(replicas, int) else 1


def router_for(kube: KubeClient | None, c: CanaryConfig, *, mesh: str | None = None) -> Router:
    return make_router(mesh or c.settings.mesh.value, kube=kube, namespace=c.namespace, route=c.route,
                       stable_backend=c.stable.backend or "", canary_backend=c.canary.backend or "")


async def connect(config: Config) -> KubeClient:
    try:
        return await KubeClient.connect(config.kubernetes.kubeconfig)
    except KubeError as e:
        raise ValueError(f"kubernetes: {e}") from e


async def kube_actuators(config: Config, stack: contextlib.AsyncExitStack,
                         kube: KubeClient | None = None) -> Callable[[CanaryConfig], Actuator]:
    """One actuator per canary, sharing one client that `stack` closes."""
    if kube is None:
        kube = await connect(config)
        stack.push_async_callback(kube.close)
    client = kube

    def make(c: CanaryConfig) -> Actuator:
        return KubeActuator(client, router_for(client, c), c)
    return make
