"""The vocabulary of the rollout state machine (rollout.py): phases, triggers, effects and errors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType


class Phase(str, Enum):
    IDLE = "idle"
    PROGRESSING = "progressing"
    PAUSED = "paused"
    PROMOTING = "promoting"
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled_back"


ACTIVE = (Phase.PROGRESSING, Phase.PAUSED, Phase.PROMOTING)


class Trigger(str, Enum):
    ANALYSIS = "analysis"
    ALERT = "alert"
    MANUAL = "manual"
    TIMEOUT = "timeout"
    SOURCE = "source"  # Prometheus could not be read
    AUTO = "auto"  # auto_promote
    START = "start"
    GATE = "gate"  # a gate (gates.py) failed
    PODS = "pods"  # the canary's pods crash-loop (crashloop.py)


ROLLBACK_CAUSES = (Trigger.ANALYSIS, Trigger.ALERT, Trigger.MANUAL, Trigger.TIMEOUT)
"""The triggers a rollback can have (the `trigger` label of canaryd_rollbacks_total). A gate's rollback
counts as analysis there, a crash loop's as alert (METRIC_TRIGGER); the history says which."""

METRIC_TRIGGER: Mapping[Trigger, Trigger] = MappingProxyType({Trigger.GATE: Trigger.ANALYSIS, Trigger.PODS: Trigger.ALERT})


# ---------------------------------------------------------------------------------------------- effects


@dataclass(frozen=True)
class SetWeight:
    weight: int


@dataclass(frozen=True)
class Promote:
    pass


@dataclass(frozen=True)
class Rollback:
    emergency: bool = False


@dataclass(frozen=True)
class Notify:
    kind: str  # rollback | promotion
    trigger: Trigger
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class RunGate:
    """Run the named gate (pre_rollout, confirm_promotion, post_rollout, on_rollback); its outcome comes
    back as rollout.gate_done (the first two) or only in the history (the last two)."""

    name: str


Effect = SetWeight | Promote | Rollback | Notify | RunGate


class TransitionError(ValueError):
    """A command that does not apply in the current phase (answered 409 by the API)."""


class AlreadyDone(TransitionError):
    """A repeated command: what it asks for already holds, and nothing changes (answered 200 by the API).

    The rule for all five verbs: start on a progressing canary, promote on a promoting or succeeded one,
    rollback on a rolled-back one, pause on a paused one and resume on a progressing one are no-ops, so
    that a retried pipeline step or a redelivered alert is not an error.
    """
