"""The seed's procedures on a real cluster: weights through the mesh's router, promotion and rollback
on the Deployments.

- promote: stable's images := canary's; wait for stable's rollout; weights 100/0; canary to 0 replicas.
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
            wanted = {name: image for name, image in images.items() if name in container_images(stable)}
            if not wanted:
                raise ActuationError(f"Deployment {ns}/{c.stable.deployment} has none of the canary's containers "
                                     f"({', '.join(images)})")
            await self.kube.set_images(ns, c.stable.deployment, wanted)
            await self.kube.wait_for_rollout(ns, c.stable.deployment, timeout=c.settings.progress_deadline,
                                             poll_interval=self.poll_interval)
        except KubeError as e:
            raise ActuationError(f"promotion stopped before moving traffic: {e}") from e
        await self.set_weight(0, {**state, "weight": 0})  # the state says what the route now has
        await self._scale_down("promoted")

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
