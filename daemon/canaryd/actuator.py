"""What a decision does to the world: traffic weights, promotion and rollback, for one canary.

The controller never talks to a router or to Deployments directly; it asks an Actuator. The dry-run
actuator only moves weights on an in-memory router. The Kubernetes one (kube_actuator.py) also runs
the platform strategy's promotion and rollback procedures on the Deployments.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .kube import KubeError
from .routers.base import Router, RouterError

Position = tuple[object, object, object]


class ActuationError(Exception):
    """A change that could not be made; the message names the object and what went wrong.

    `route_written`: the route's weights were written; only a later part (scaling the canary down)
    failed."""

    def __init__(self, message: str, *, route_written: bool = False) -> None:
        super().__init__(message)
        self.route_written = route_written


class RouteChanged(ActuationError):
    """The route's saved state is no longer the one this replica last read or wrote: another replica
    (or a person) moved the rollout. Nothing was written; re-read the route and decide again."""


def position(state: Mapping[str, Any] | None) -> Position:
    """Where a saved state says the rollout stands; two states that differ here are two decisions."""
    state = state or {}
    return state.get("phase"), state.get("step"), state.get("weight")


class Actuator(Protocol):
    async def read_state(self) -> Mapping[str, Any] | None:
        """The state annotation saved with the route, to resume after a restart."""
        ...

    async def read_weight(self) -> int:
        """The canary's percentage on the route now (an operator may have set it by hand)."""
        ...

    async def set_weight(self, weight: int, state: Mapping[str, Any]) -> None: ...

    async def promote(self, state: Mapping[str, Any]) -> None:
        """Stable takes the canary's version, then all traffic goes to stable and the canary scales to 0."""
        ...

    async def rollback(self, state: Mapping[str, Any], *, emergency: bool = False) -> None:
        """All traffic to stable; unless emergency, the canary scales to 0 as well."""
        ...


class RouterActuator:
    """Weights through a router; no Deployments (dry-run, or a route-only set-up).

    Every write is a compare-and-set: it applies only while the route's saved state is still the one
    this actuator last read or wrote (checked in the same guarded patch as the write, see
    routers/base.py), so two replicas never undo each other's decisions; RouteChanged otherwise."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self._seen: Position | None = None  # None: never read, nothing to compare with

    async def read_state(self) -> Mapping[str, Any] | None:
        try:
            state = (await self.router.read()).state
        except (RouterError, KubeError) as e:
            raise ActuationError(str(e)) from e
        self._seen = position(state)
        return state

    async def read_weight(self) -> int:
        try:
            route = await self.router.read()
        except (RouterError, KubeError) as e:
            raise ActuationError(str(e)) from e
        self._seen = position(route.state)
        return route.canary_weight

    def _guard(self, state: Mapping[str, Any] | None) -> None:
        if self._seen is not None and position(state) != self._seen:
            phase, step, weight = position(state)
            raise RouteChanged(f"the route's state changed since it was read (now {phase}, step {step}, "
                               f"weight {weight}); nothing written")

    async def verify(self) -> None:
        """Raise RouteChanged if the route's saved state is not the one last read or written."""
        seen = self._seen
        try:
            state = (await self.router.read()).state
        except (RouterError, KubeError) as e:
            raise ActuationError(str(e)) from e
        self._seen = seen
        self._guard(state)

    async def set_weight(self, weight: int, state: Mapping[str, Any]) -> None:
        try:
            await self.router.write(weight, state, guard=self._guard)
        except (RouterError, KubeError) as e:
            raise ActuationError(str(e)) from e
        self._seen = position(state)

    async def promote(self, state: Mapping[str, Any]) -> None:
        await self.set_weight(0, state)

    async def rollback(self, state: Mapping[str, Any], *, emergency: bool = False) -> None:
        await self.set_weight(0, state)


class GuardedActuator:
    """An actuator whose writes first pass `check`, which raises ActuationError to refuse them; reads
    always go through. The leader guard (leader.py) is one: a follower writes only rollbacks and pauses."""

    def __init__(self, inner: Actuator, check: Callable[[], None]) -> None:
        self.inner = inner
        self.check = check

    async def read_state(self) -> Mapping[str, Any] | None:
        return await self.inner.read_state()

    async def read_weight(self) -> int:
        return await self.inner.read_weight()

    async def set_weight(self, weight: int, state: Mapping[str, Any]) -> None:
        self.check()
        await self.inner.set_weight(weight, state)

    async def promote(self, state: Mapping[str, Any]) -> None:
        self.check()
        await self.inner.promote(state)

    async def rollback(self, state: Mapping[str, Any], *, emergency: bool = False) -> None:
        self.check()
        await self.inner.rollback(state, emergency=emergency)
