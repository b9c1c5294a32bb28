"""The platform strategy's procedures on a real cluster: weights through the mesh's router, promotion and rollback
on the Deployments.

- before the first weight: the canary is scaled to the replicas it needs (`prepare_canary`), and gets
  traffic only once they are available.
- promote: stable's pod template := canary's (patches.promoted_template); wait for stable's rollout; weights 100/0; canary to 0 replicas.
  A rollout that does not finish within progress_deadline stops the promotion with the canary still
  serving, so traffic is never moved onto a broken stable.
- rollback: weights 100/0, then the canary to 0 replicas.
- emergency rollback: weights 100/0, one write, nothing else.

A canary Deployment that is gone (404) when it is to be scaled down is as good as scaled down: done.

Every weight write also brings canaryd's match routes to what the saved state calls for
(`wanted_matches`): the configured ones while a rollout runs with the canary's pods up (match-only
stages add theirs one by one), none before, after a promotion or a rollback. Gates run as Jobs here
(`run_job`), and the canary's pods are read here (`canary_pods`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from .actuator import ActuationError, Actuator, RouterActuator, position
from .config import CanaryConfig, Config
from .config.model import GateJob, MatchRoute
from .kube import KubeClient, KubeError, KubeNotFound, container_images
from .kube.rollout import progress_deadline_exceeded, rollout_status, template_hash
from .kube.workloads import create_job, get_job, list_pods, selector_of
from .routers import make_router
from .routers.base import Router, RouterError

log = logging.getLogger("canaryd.kube_actuator")


def wanted_matches(c: CanaryConfig, state: Mapping[str, Any]) -> tuple[MatchRoute, ...]:
    """The match routes a saved state calls for: during a rollout whose canary pods are up, those not
    named in match_stages, and the stages' up to the current step; otherwise none."""
    if state.get("phase") not in ("progressing", "paused") or state.get("preparing"):
        return ()
    step = state.get("step")
    step = step if isinstance(step, int) else 0
    staged = c.match_stages
    reached = set(staged[: step + 1])
    return tuple(m for m in c.match_routes if m.name not in staged or m.name in reached)


class KubeActuator(RouterActuator):
    def __init__(self, kube: KubeClient, router: Router, canary: CanaryConfig, *,
                 poll_interval: float = 2.0) -> None:
        super().__init__(router)
        self.kube = kube
        self.canary = canary
        self.poll_interval = poll_interval

    async def set_weight(self, weight: int, state: Mapping[str, Any]) -> None:
        try:
            await self.router.write(weight, state, guard=self._guard, matches=wanted_matches(self.canary, state))
        except (RouterError, KubeError) as e:
            raise ActuationError(str(e)) from e
        self._seen = position(state)

    async def run_job(self, gate: str, job: GateJob, timeout: float, env: Mapping[str, str]) -> tuple[bool, str]:
        """Create a gate's Job and wait for it: (succeeded?, what happened)."""
        c = self.canary
        stamp = time.strftime("%H%M%S", time.gmtime()) + f"{int(time.time() * 1000) % 1000:03d}"
        name = re.sub(r"[^a-z0-9-]", "-", f"{c.name}-{gate}")[:48].strip("-") + f"-{stamp}"
        try:
            await create_job(self.kube, c.namespace, _job_body(name, c, gate, job, timeout, env))
            deadline = time.monotonic() + timeout + self.poll_interval
            while time.monotonic() < deadline:
                found = await get_job(self.kube, c.namespace, name)
                done = _job_outcome(found)
                if done is not None:
                    return done[0], f"Job {c.namespace}/{name} {done[1]}"
                await asyncio.sleep(self.poll_interval)
        except KubeError as e:
            return False, f"Job {c.namespace}/{name}: {e}"
        return False, f"Job {c.namespace}/{name} did not finish within {timeout:g}s"

    async def canary_pods(self) -> list[dict[str, Any]]:
        """The canary Deployment's pods (by its selector); [] when it has none or no selector."""
        c = self.canary
        try:
            dep = await self.kube.get_deployment(c.namespace, c.canary.deployment)
            selector = selector_of(dep)
            return await list_pods(self.kube, c.namespace, selector) if selector else []
        except KubeError as e:
            raise ActuationError(f"cannot read the canary's pods: {e}") from e

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


def _job_body(name: str, c: CanaryConfig, gate: str, job: GateJob, timeout: float,
              env: Mapping[str, str]) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "gate", "image": job.image,
                                 "env": [{"name": k, "value": v} for k, v in sorted(env.items())]}
    if job.command:
        container["command"] = list(job.command)
    pod: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if job.service_account:
        pod["serviceAccountName"] = job.service_account
    labels = {"app.kubernetes.io/managed-by": "canaryd", "canaryd.io/canary": c.name, "canaryd.io/gate": gate.replace("_", "-")}
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": c.namespace, "labels": labels},
            "spec": {"backoffLimit": 0, "activeDeadlineSeconds": max(1, math.ceil(timeout)),
                     "ttlSecondsAfterFinished": 3600, "template": {"metadata": {"labels": labels}, "spec": pod}}}


def _job_outcome(job: Mapping[str, Any]) -> tuple[bool, str] | None:
    """(passed, how) once the Job has finished; None while it runs."""
    status = job.get("status") or {}
    for cond in status.get("conditions") or ():
        if cond.get("status") == "True" and cond.get("type") in ("Complete", "Failed"):
            ok = cond["type"] == "Complete"
            why = cond.get("message") or cond.get("reason") or ""
            return ok, ("succeeded" if ok else "failed") + (f": {why}" if why else "")
    if (status.get("succeeded") or 0) >= 1:
        return True, "succeeded"
    if (status.get("failed") or 0) >= 1:
        return False, "failed"
    return None


def _replicas(deployment: Mapping[str, Any]) -> int:
    replicas = (deployment.get("spec") or {}).get("replicas", 1)
    return replicas if isinstance(replicas, int) else 1


def router_for(kube: KubeClient | None, c: CanaryConfig, *, mesh: str | None = None,
               on_conflict: Callable[[], None] | None = None) -> Router:
    options = {} if on_conflict is None else {"on_conflict": on_conflict}
    return make_router(mesh or c.settings.mesh.value, kube=kube, namespace=c.namespace, route=c.route,
                       stable_backend=c.stable.backend or "", canary_backend=c.canary.backend or "", **options)


async def connect(config: Config) -> KubeClient:
    try:
        return await KubeClient.connect(config.kubernetes.kubeconfig)
    except KubeError as e:
        raise ValueError(f"kubernetes: {e}") from e


async def kube_actuators(config: Config, stack: contextlib.AsyncExitStack, kube: KubeClient | None = None,
                         on_conflict: Callable[[CanaryConfig], None] | None = None
                         ) -> Callable[[CanaryConfig], Actuator]:
    """One actuator per canary, sharing one client that `stack` closes. `on_conflict(c)` is called for each
    route write of canary `c` that met another writer's change and was retried."""
    if kube is None:
        kube = await connect(config)
        stack.push_async_callback(kube.close)
    client = kube

    def make(c: CanaryConfig) -> Actuator:
        hook = None if on_conflict is None else (lambda: on_conflict(c))
        return KubeActuator(client, router_for(client, c, on_conflict=hook), c)
    return make
