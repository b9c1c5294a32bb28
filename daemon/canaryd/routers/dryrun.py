"""A router that only remembers: used when kubernetes.enabled is false, and by tests.

Same interface as the others; weights and state live in memory, and the last writes are kept in
`history` so a test (or `canaryd deploy --dry-run`) can show what would have been done.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from canaryd import packed_data
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
    resource_version: int
    state: _Saved | None  # shared with the route's state at the time, never copied again


@dataclass(frozen=True, slots=True)
class _Saved:
    """A state as the route keeps it: serialized (as a real route keeps its annotation's text), decoded into
    a fresh copy at each read. Plain data (what Rollout.persisted() gives) is kept packed (packed_data: a
    fraction of the dicts' kilobyte a write); anything else as a deep copy."""

    packed: bytes | None
    other: Mapping[str, Any] | None = None

    @staticmethod
    def of(state: Mapping[str, Any]) -> _Saved:
        try:
            return _Saved(packed_data.packed(dict(state)))
        except ValueError:  # not plain data (a Mapping of another type inside): copied as it is
            return _Saved(None, copy.deepcopy(dict(state)))

    def value(self) -> dict[str, Any]:
        if self.packed is None:
            return copy.deepcopy(dict(self.other or {}))
        return packed_data.unpacked(self.packed)  # type: ignore[no-any-return]


def _value(saved: _Saved | None) -> dict[str, Any] | None:
    return None if saved is None else saved.value()


class DryRunRouter:
    __slots__ = ("what", "namespace", "route", "stable_backend", "canary_backend", "_rv", "_weight", "_state",
                 "_writes")  # one per canary: no instance dict

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
        self._weight = initial_percent
        self._state = None if initial_state is None else _Saved.of(initial_state)
        self._writes: list[_Write] = []  # the last HISTORY (a list: most canaries write a few times)

    @property
    def history(self) -> list[RouteState]:
        """The last HISTORY writes, oldest first; all but the last STATES have state None (not kept)."""
        return [RouteState(w.canary_weight, 100 - w.canary_weight, _value(w.state), str(w.resource_version))
                for w in self._writes]

    async def read(self) -> RouteState:
        return self._route()

    def _route(self) -> RouteState:
        return RouteState(canary_weight=self._weight, stable_weight=100 - self._weight, state=_value(self._state),
                          resource_version=str(self._rv))

    async def plan(self, canary_percent: int, state: Mapping[str, Any] | None = None, *,
                   matches: Sequence[Any] | None = None) -> list[JSON]:
        """What a write would change, in words a person reads (there is no object to patch)."""
        check_percent(canary_percent, self.what)
        changes: list[JSON] = []
        if canary_percent != self._weight:
            changes.append({"set": "weights", self.stable_backend: 100 - canary_percent,
                            self.canary_backend: canary_percent})
        if state is not None and dict(state) != _value(self._state):
            changes.append({"set": "state", "value": copy.deepcopy(dict(state))})
        return changes

    async def write(self, canary_percent: int, state: Mapping[str, Any] | None = None, *,
                    guard: StateGuard | None = None, matches: Sequence[Any] | None = None) -> RouteState:
        check_percent(canary_percent, self.what)
        if guard is not None:
            guard(_value(self._state))
        self._rv += 1
        self._weight = canary_percent
        if state is not None:
            self._state = _Saved.of(state)
        self._writes.append(_Write(canary_percent, self._rv, self._state))
        if len(self._writes) > HISTORY:
            del self._writes[0]
        if len(self._writes) > STATES:  # let the older state go (unless a later write shares it)
            w = self._writes[-STATES - 1]
            self._writes[-STATES - 1] = _Write(w.canary_weight, w.resource_version, None)
        log.info("%s: would set %s=%d%% %s=%d%%", self.what, self.stable_backend, 100 - canary_percent,
                 self.canary_backend, canary_percent)
        return self._route()
