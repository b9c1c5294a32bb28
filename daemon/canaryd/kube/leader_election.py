"""One round of leader election on a coordination.k8s.io/v1 Lease, around kubernetes_asyncio's own."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import client_errors, map_error
from .lazy import kubernetes

if TYPE_CHECKING:
    from .lazy import client

log = logging.getLogger("canaryd.kube")


@dataclass
class _Leadership:
    """The callbacks of one round, and the task that runs while this replica leads."""

    on_started_leading: Callable[[], Awaitable[None]]
    on_stopped_leading: Callable[[], Awaitable[None]]
    leading: asyncio.Task[Any] | None = None
    stopped: bool = False

    async def started(self) -> None:
        self.leading = asyncio.current_task()
        await self.on_started_leading()

    async def stop_once(self) -> None:
        if not self.stopped:
            self.stopped = True
            await self.on_stopped_leading()

    def is_leading(self) -> bool:
        return self.leading is not None and not self.leading.done()

    async def finish(self) -> None:
        """Cancel the leading task, wait for it, then report the stop (once)."""
        if self.leading is not None:
            self.leading.cancel()
            await asyncio.gather(self.leading, return_exceptions=True)  # it has stopped before we say so
            await self.stop_once()


async def run_leader_election(
    api: client.ApiClient,
    *,
    namespace: str,
    lease: str,
    identity: str,
    on_started_leading: Callable[[], Awaitable[None]],
    on_stopped_leading: Callable[[], Awaitable[None]],
    lease_duration: float,
    renew_deadline: float,
    retry_period: float,
) -> None:
    """See `KubeClient.run_leader_election`."""
    what = f"Lease {namespace}/{lease}"
    leadership = _Leadership(on_started_leading, on_stopped_leading)
    k = kubernetes()
    cfg = k.electionconfig.Config(
        k.LeaseLock(lease, namespace, identity, api), lease_duration, renew_deadline, retry_period,
        leadership.started, leadership.stop_once,
    )
    election = k.leaderelection.LeaderElection(cfg)
    runner = asyncio.ensure_future(election.run())
    # look often enough to step down after renew_deadline and well before the lease expires
    check = max(0.05, min(retry_period, (lease_duration - renew_deadline) / 4))
    try:
        await _supervise(runner, election, leadership, what, check=check, renew_deadline=renew_deadline)
    except client_errors() as e:
        raise map_error(e, what, "renew") from e
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await leadership.finish()


async def _supervise(runner: asyncio.Future[Any], election: Any, leadership: _Leadership, what: str, *,
                     check: float, renew_deadline: float) -> None:
    """Return when the election ends (re-raising what it raised) or, while leading, renewals stall."""
    while True:
        done, _ = await asyncio.wait({runner}, timeout=check)
        if done:
            runner.result()  # re-raises what the election raised
            return
        stale_ms = time.time() * 1000 - election.observed_time_milliseconds
        if leadership.is_leading() and stale_ms > renew_deadline * 1000:
            log.warning("%s: no successful renewal for %.1fs; stepping down", what, stale_ms / 1000)
            return
