"""A router that only remembers: used when kubernetes.enabled is false, and by tests.

Same interface as the others; weights and state live in memory, and the last writes are kept in
`history` so a test (or `canaryd deploy --dry-run`) can show what would have been done.
"""

from __future__ import annotations

import copy
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from canaryd.kube import KubeClient
from canaryd.routers.base import JSON, RouteState, StateGuard, check_percent

log = logging.getLogger(__name__)

# Writes kept in `history`. `canaryd run` in dry-run mode writes for as long as it runs, and a saved state
# holds the rollout's decision history (kilobytes): only the last STATES writes keep theirs, older ones
# keep their weights, so that a canary costs a few tens of kilobytes however long it runs.
HISTORY = 100
STATES = 8


@dataclass(frozen=True, slots=True)
class _Write:
    canary_weight: int
    resource_version: str
    state: Mapping[str, Any] | None  # shared with the route's state at the time, never copied again


class DryRunRouter:
    def __init__(
        self,
        *,
        kube: KubeClient | None = None,
        namespace: str,
        route: str,
        stable_backend: str,
        canary_backend: str,
        initial_percent: int = 0,
        initial_state: Mapping[str, Any] | None = None,
    ) -> None:
        del kube  # accepted for a uniform constructor; never used
        self.what = f"dry-run route {namespace}/{route}"
        self.namespace = namespace
        self.route = route
        self.stable_backend = stable_backend
        self.canary_backend = canary_backend
        check_percent(initial_percent, self.what)
        self._rv = 1
        self._current = RouteState(
            canary_weight=initial_percent,
            stable_weight=100 - initial_percent,
            state=copy.deepcopy(dict(initial_state)) if initial_state is not None else None,
            resource_version="1",
        )
        self._writes: deque[_Write] = deque(maxlen=HISTORY)

    @property
    def history(self) -> list[RouteState]:
        """The last HISTORY writes, oldest first; all but the last STATES have state None (not kept)."""
        return [RouteState(w.canary_weight, 100 - w.canary_weight, w.state, w.resource_version) for w in self._writes]

    async def read(self) -> RouteState:
        return self._current

    async def plan(self, canary_percent: int, state: Mapping[str, Any] | None = None, *,
                   matches: Sequence[Any] | None = None) -> list[JSON]:
        """What a write would change, in words a person reads (there is no object to patch)."""
        check_percent(canary_percent, self.what)
        changes: list[JSON] = []
        if canary_percent != self._current.canary_weight:
            changes.append({"set": "weights", self.stable_backend: 100 - canary_percent,
                            self.canary_backend: canary_percent})
        if state is not None and dict(state) != self._current.state:
            changes.append({"set": "state", "value": copy.deepcopy(dict(state))})
        return changes

    async def write(self, canary_percent: int, state: Mapping[str, Any] | None = None, *,
                    guard: StateGuard | None = None, matches: Sequence[Any] | None = None) -> RouteState:
        check_percent(canary_percent, self.what)
        if guard is not None:
            guard(self._current.state)
        self._rv += 1
        self._current = RouteState(
            canary_weight=canary_percent,
            stable_weight=100 - canary_percent,
            state=copy.deepcopy(dict(state)) if state is not None else self._current.state,
            resource_version=str(self._rv),
        )
        self._writes.append(_Write(canary_percent, self._current.resource_version, self._current.state))
        if len(self._writes) > STATES:  # let the older state go (unless a later write shares it)
            w = self._writes[-STATES - 1]
            self._writes[-STATES - 1] = _Write(w.canary_weight, w.resource_version, None)
        log.info("%s: would set %s=%d%% %s=%d%%", self.what, self.stable_backend, 100 - canary_percent,
                 self.canary_backend, canary_percent)
        return self._current
