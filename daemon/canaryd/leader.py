"""Leader election through a coordination.k8s.io/v1 Lease: only the leader writes.

The others keep answering reads (their view refreshed from the routes' state annotations each tick)
and answer 503 to webhooks and commands, so Alertmanager retries until it reaches the leader.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
from collections.abc import Callable

from .actuator import ActuationError, Actuator, GuardedActuator
from .config import LeaderElectionConfig
from .controller import Controller
from .kube import KubeClient, KubeError
from .metrics import Metrics

log = logging.getLogger("canaryd.leader")


class LeaderGuard(GuardedActuator):
    """An actuator that refuses every write the moment this replica is not the leader."""

    def __init__(self, inner: Actuator, is_leader: Callable[[], bool]) -> None:
        def check() -> None:
            if not is_leader():
                raise ActuationError("not the leader: this replica does not write")
        super().__init__(inner, check)


def identity() -> str:
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


async def run_leadership(controller: Controller, kube: KubeClient, settings: LeaderElectionConfig,
                         metrics: Metrics, *, name: str | None = None) -> None:
    """Compete for the lease forever; flips controller.is_leader and canaryd_is_leader."""
    me = name or identity()

    async def lead() -> None:
        log.info("became the leader", extra={"identity": me, "lease": f"{settings.namespace}/{settings.lease}"})
        # The previous leader may have moved things: start from what the routes say.
        await controller.refresh_from_routes()
        controller.is_leader = True
        metrics.set_leader(True)
        await asyncio.Event().wait()

    async def follow() -> None:
        if controller.is_leader:
            log.warning("lost the leadership; writes stop now", extra={"identity": me})
        controller.is_leader = False
        metrics.set_leader(False)

    controller.is_leader = False
    metrics.set_leader(False)
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
            controller.problems["leader_election"] = str(e)
            await asyncio.sleep(settings.retry_period)
        else:
            controller.problems.pop("leader_election", None)
