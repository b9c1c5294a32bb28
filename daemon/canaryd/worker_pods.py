"""A canary's pods before it gets traffic, and a new canary version during a rollout (CanaryWorker's part).

A start scales the canary Deployment up (KubeActuator.prepare_canary) and holds at 0 % until its pods
are available; a poller looks again every few seconds, and after progress_deadline the rollout holds,
paused, with no traffic sent. A new pod template during a rollout (the watcher sees it) sends the
traffic back to 0 % and, once the new pods are available, to the first step, judged afresh.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import rollout as ro
from .actuator import ActuationError, RouteChanged
from .rollout import Phase, Rollout

if TYPE_CHECKING:
    from .analysis.verdicts import Judgement
    from .config import CanaryConfig

log = logging.getLogger("canaryd.worker")

PrepareCanary = Callable[[], Awaitable[tuple[bool, str, str | None]]]
PODS_POLL = 2.0  # seconds between looks at a canary's pods while a rollout waits for them


@dataclass(frozen=True)
class CheckPods:
    """While a rollout waits for the canary's pods: look again (scale up if needed), and route once they
    are available."""


@dataclass(frozen=True)
class NewVersion:
    """The canary's pod template changed during a rollout: judge the new version from the first step."""

    version: str
    reason: str


class CanaryPods:
    """CanaryWorker's handling of the canary's pods; runs on the worker's task, like every message."""

    if TYPE_CHECKING:
        rollout: Rollout
        config: CanaryConfig
        actuator: Any
        clock: Callable[[], float]
        _pods_poller: asyncio.Task[None] | None

        @property
        def key(self) -> str: ...
        def _report(self, judgement: Judgement | None = None) -> None: ...
        async def _ask(self, message: Any) -> Any: ...
        async def _commit(self, old: Rollout, new: Rollout, effects: list[ro.Effect],
                          judgement: Judgement | None) -> None: ...

    async def _start(self, old: Rollout, now: float, cmd: Any) -> tuple[Rollout, list[ro.Effect]]:
        """A start scales the canary up first; no weight goes to it until its pods are available."""
        ready, why, version = await self._look_at_pods()
        return ro.start(old, now, step=cmd.step, reason=cmd.reason, waiting=None if ready else why,
                        version=version)

    async def _look_at_pods(self) -> tuple[bool, str, str | None]:
        try:
            prepare = _prepare_canary(self.actuator)
            if prepare is None:  # dry run, or a route-only set-up: no Deployments to wait for
                return True, "", None
            return await prepare()
        except ActuationError as e:
            return False, str(e), None

    async def _check_pods(self) -> None:
        r = self.rollout
        if not r.preparing or r.phase is not Phase.PROGRESSING:
            return
        try:
            _prepare_canary(self.actuator)
        except ActuationError:
            return  # not the leader: the leader decides, and this replica reads it from the route
        ready, why, _ = await self._look_at_pods()
        now = self.clock()
        if ready:
            await self._decide(r, *ro.pods_ready(r, now, why))
            return
        deadline = self.config.settings.progress_deadline
        if r.preparing_since is not None and now - r.preparing_since >= deadline:
            log.error("canary pods not available in time; holding with no traffic",
                      extra={"canary": self.key, "why": why})
            await self._decide(r, ro.pods_late(r, now, deadline, why), [ro.SetWeight(0)])

    async def _decide(self, old: Rollout, new: Rollout, effects: list[ro.Effect]) -> None:
        try:
            await self._commit(old, new, effects, None)
        except RouteChanged:
            pass  # another replica acted on the route first; its state was adopted

    async def _new_version(self, message: NewVersion) -> None:
        old = self.rollout
        new, effects = ro.restart(old, self.clock(), message.version, message.reason)
        if not effects:
            return
        log.warning("new canary version during a rollout: the analysis starts again",
                    extra={"canary": self.key, "reason": message.reason})
        await self._decide(old, new, effects)

    def _watch_pods(self) -> None:
        """Keep a poller running while the rollout waits for the canary's pods (it queues CheckPods)."""
        r = self.rollout
        waiting = r.preparing and r.phase is Phase.PROGRESSING
        if waiting and (self._pods_poller is None or self._pods_poller.done()):
            self._pods_poller = asyncio.create_task(self._poll_pods(), name=f"pods {self.key}")

    async def _poll_pods(self) -> None:
        every = min(PODS_POLL, self.config.settings.interval)
        while self.rollout.preparing and self.rollout.phase is Phase.PROGRESSING:
            await asyncio.sleep(every)
            try:
                await self._ask(CheckPods())
            except (ActuationError, ro.TransitionError) as e:
                log.warning("cannot look at the canary's pods", extra={"canary": self.key, "error": str(e)})


def _prepare_canary(actuator: object) -> PrepareCanary | None:
    """The actuator's `prepare_canary` (a cluster's; dry-run and route-only ones have none), looked up
    through wrapping actuators (LeaderGuard), whose write check it passes first: it may scale up."""
    while actuator is not None:
        check = getattr(actuator, "check", None)
        if callable(check):
            check()
        found = getattr(actuator, "prepare_canary", None)
        if found is not None:
            return found  # type: ignore[no-any-return]
        actuator = getattr(actuator, "inner", None)
    return None
