"""The messages a canary's task (worker.py) handles: ticks, outages, route re-reads and commands."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from .analysis.snapshot import ArmSnapshot
from .rollout_types import Trigger


@dataclass(frozen=True)
class Tick:
    now: float
    canary: ArmSnapshot
    stable: ArmSnapshot


@dataclass(frozen=True)
class SourceDown:
    now: float
    reason: str


@dataclass(frozen=True)
class Refresh:
    """Re-read the state saved on the route (at start, a follower's view, or a new leader taking over)."""

    at_start: bool = False  # a failure then is logged: the canary starts without its saved state


@dataclass(frozen=True)
class ObserveRoute:
    """The watcher's pass: a canary not in a rollout whose route has a canary weight > 0 was started by
    hand (`kubectl patch`), so a rollout starts at that weight."""


@dataclass(frozen=True)
class Command:
    verb: str  # start | promote | rollback | pause | resume
    trigger: Trigger = Trigger.MANUAL
    reason: str | None = None
    emergency: bool = False
    step: int = 0  # where a start begins


@dataclass(slots=True)
class Item:
    """A message on a canary's inbox, and the future its sender waits on, if any."""

    message: Any  # worker.Message
    done: asyncio.Future[Any] | None = None
