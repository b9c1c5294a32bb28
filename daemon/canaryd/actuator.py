"""What a decision does to the world: traffic weights, promotion and rollback, for one canary.

The controller never talks to a router or to Deployments directly; it asks an Actuator. The dry-run
actuator only moves weights on an in-memory router. The Kubernetes one (kube_actuator.py) also runs
the seed's promotion and rollback procedures on the Deployments.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .kube import KubeError
from .routers.base import Router, RouterError


class ActuationError(Exception):
    """A change that could not be made; the message names the object and what went wrong."""


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
    """Weights through a router; no Deployments (dry-run, or a route-only set-up)."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def read_state(self) -> Mapping[str, Any] | None:
        try:
            return (await self.router.read()).state
        except (RouterError, KubeError) as e:
            raise ActuationError(str(e)) from e

    async def read_weight(self) -> int:
        try:
            return (await self.router.read()).canary_weight
        except (RouterError, KubeError) as e:
            raise ActuationError(str(e)) from e

    async def set_weight(self, weight: int, state: Mapping[str, Any]) -> None:
        try:
            await self.router.write(weight, state)
        except (RouterError, KubeError) as e:
            raise ActuationError(str(e)) from e

    async def promote(self, state: Mapping[str, Any]) -> None:
        await self.set_weight(0, state)

    async def rollback(self, state: Mapping[str, Any], *, emergency: bool = False) -> None:
        await self.set_weight(0, state)


class GuardedActuator:
    """An actuator whose writes first pass `check`, which raises ActuationError to refuse them; reads
    always go through. The leader guard is one (not the leader: no write)."""

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
