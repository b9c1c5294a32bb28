"""Leader election through a coordination.k8s.io/v1 Lease: only the leader judges and advances.

Every replica takes webhooks and commands. A follower writes only the safe directions, a rollback or
a pause, straight to the route; the write is a compare-and-set on the route's saved state
(actuator.RouterActuator), so it never undoes a step the leader took after the follower read the
route, and the leader's next write sees the follower's decision and adopts it. Starting, resuming,
promoting and every step of the analysis stay with the leader (docs/contracts.md, "High availability").
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .actuator import ActuationError, Actuator, GuardedActuator
from .config import LeaderElectionConfig
from .health import Health
from .kube import KubeClient, KubeError
from .leadership import Leadership

log = logging.getLogger("canaryd.leader")


SAFE_PHASES = frozenset({"paused", "rolled_back"})  # states any replica may write: they only stop a rollout


class LeaderGuard(GuardedActuator):
    """An actuator that, the moment this replica is not the leader, refuses every write that advances a
    rollout; a rollback, and a write that pauses or rolls back, go through on any replica."""

    def __init__(self, inner: Actuator, is_leader: Callable[[], bool]) -> None:
        def check() -> None:
            if not is_leader():
                raise ActuationError("not the leader: only the leader starts, advances, resumes and promotes")
        super().__init__(inner, check)

    async def set_weight(self, weight: int, state: Mapping[str, Any]) -> None:
        if state.get("phase") not in SAFE_PHASES:
            self.check()
        await self.inner.set_weight(weight, state)

    async def rollback(self, state: Mapping[str, Any], *, emergency: bool = False) -> None:
        await self.inner.rollback(state, emergency=emergency)


def identity() -> str:
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


async def run_leadership(leadership: Leadership, kube: KubeClient, settings: LeaderElectionConfig,
                         health: Health, *, on_lead: Callable[[], Awaitable[None]] | None = None,
                         name: str | None = None) -> None:
    """Compete for the lease forever; the only writer of `leadership` and of the "leader_election" problem.

    `on_lead` runs before this replica acts as the leader (the controller re-reads the routes)."""
    me = name or identity()

    async def lead() -> None:
        log.info("became the leader", extra={"identity": me, "lease": f"{settings.namespace}/{settings.lease}"})
        # The previous leader may have moved things: start from what the routes say.
        if on_lead is not None:
            await on_lead()
        leadership.set(True)
        await asyncio.Event().wait()

    async def follow() -> None:
        if leadership.is_leader:
            log.warning("lost the leadership; writes stop now", extra={"identity": me})
        leadership.set(False)

    leadership.set(False)
    while True:
        try:
            await kube.run_leader_election(
                namespace=settings.namespace, lease=settings.lease, identity=me,
                on_started_leading=lead, on_stopped_leading=follow,
                # A whole number of seconds: kubernetes_asyncio stores str(lease_duration) and reads it
                # back with int() for the Lease's leaseDurationSeconds, so 15.0 fails every round.
                lease_duration=math.ceil(settings.lease_duration), renew_deadline=settings.renew_deadline,
                retry_period=settings.retry_period)
        except asyncio.CancelledError:
            raise
        except (KubeError, Exception) as e:  # the election must go on whatever one round did
            log.error("leader election round failed", extra={"identity": me, "error": str(e)})
            await follow()
            health.set_problem("leader_election", str(e))
            await asyncio.sleep(settings.retry_period)
        else:
            health.clear("leader_election")
