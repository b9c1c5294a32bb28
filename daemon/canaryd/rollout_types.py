"""The vocabulary of the rollout state machine (rollout.py): phases, triggers, effects, errors, and the
SavedState annotation type a rollout is saved in."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from types import MappingProxyType
from typing import Any

from .packed_data import packed, unpacked

HISTORY = 50  # decisions kept per canary


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


@dataclass(frozen=True)
class SavedState:
    """The route's `canaryd.io/state` annotation (JSON), the one type that reads and writes it.

    It is written in the same request as the weights, so a restarted daemon, `canaryd status` and the
    command-line promote and rollback all see where the rollout is. The history of decisions is part
    of it: a restarted daemon resumes with it.
    """

    phase: Phase = Phase.IDLE
    step: int = -1
    weight: int = 0
    step_started_at: float | None = None
    started_at: float | None = None
    paused_reason: str | None = None
    awaiting_promotion: bool = False
    last_decision: Mapping[str, Any] | None = None
    history: Sequence[Mapping[str, Any]] = ()
    preparing: bool = False
    version: str | None = None
    gate: str | None = None  # the gate the rollout waits for (rollout_gates.py)

    def to_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase.value,
            "step": self.step,
            "weight": self.weight,
            "step_started_at": self.step_started_at,
            "started_at": self.started_at,
            "paused_reason": self.paused_reason,
            "awaiting_promotion": self.awaiting_promotion,
            "last_decision": None if self.last_decision is None else dict(self.last_decision),
            "trigger": (self.last_decision or {}).get("trigger"),
            "history": [dict(h) for h in self.history],
            "preparing": self.preparing,
            "version": self.version,
            **({"gate": self.gate} if self.gate else {}),
        }

    @classmethod
    def from_json(cls, saved: Mapping[str, Any]) -> SavedState:
        """Raises ValueError when the annotation is not canaryd's."""
        try:
            phase = Phase(saved["phase"])
            step = int(saved.get("step", -1))
            weight = int(saved.get("weight", 0))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"state annotation is not canaryd's: {e}") from None
        last = saved.get("last_decision")
        return cls(phase=phase, step=step, weight=weight, step_started_at=_float(saved.get("step_started_at")),
                   started_at=_float(saved.get("started_at")), paused_reason=saved.get("paused_reason"),
                   awaiting_promotion=bool(saved.get("awaiting_promotion", False)),
                   last_decision=last if isinstance(last, Mapping) else None,
                   history=History(h for h in saved.get("history") or () if isinstance(h, Mapping)),
                   preparing=bool(saved.get("preparing", False)),
                   version=saved["version"] if isinstance(saved.get("version"), str) else None,
                   gate=saved["gate"] if isinstance(saved.get("gate"), str) else None)

    def concluded(self, phase: Phase, *, decision: str, trigger: Trigger, reason: str, at: float) -> SavedState:
        """The state after a promotion or rollback made outside a rollout's own decisions."""
        return replace(self, phase=phase, weight=0, paused_reason=None, awaiting_promotion=False,
                       last_decision={"decision": decision, "trigger": trigger.value, "at": at, "reasons": [reason]})


class HistoryEntry(Mapping[str, Any]):
    """One decision of the history, read as the dict the API and the route's state show
    ({"at", "decision", "trigger", "step", "weight", "reasons"}); kept as slots, the reasons as a tuple, or
    when long (a judgement's, ~0.8 kB) serialized and compressed (~0.2 kB, see packed_data), decoded when read (a
    dict and a list were ~0.4 kB more an entry, and a daemon keeps up to HISTORY of them per canary)."""

    __slots__ = ("at", "decision", "trigger", "step", "weight", "_reasons")
    KEYS = ("at", "decision", "trigger", "step", "weight", "reasons")
    PACK_CHARS = 100  # reasons longer than this in all are kept compressed

    def __init__(self, at: float, decision: str, trigger: str, step: int, weight: int,
                 reasons: tuple[str, ...]) -> None:
        kept: tuple[str, ...] | bytes = tuple(reasons)
        if sum(map(len, kept)) > self.PACK_CHARS and all(type(r) is str for r in kept):
            kept = packed(kept)
        for k, v in zip(self.__slots__, (at, decision, trigger, step, weight, kept), strict=True):
            object.__setattr__(self, k, v)

    @property
    def reasons(self) -> tuple[str, ...]:
        kept = self._reasons
        return kept if isinstance(kept, tuple) else unpacked(kept)  # type: ignore[no-any-return]

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a history entry is read-only: {name}")

    def __getitem__(self, key: str) -> Any:
        if key not in self.KEYS:
            raise KeyError(key)
        value = getattr(self, key)
        return list(value) if key == "reasons" else value

    def __iter__(self) -> Iterator[str]:
        return iter(self.KEYS)

    def __len__(self) -> int:
        return len(self.KEYS)

    def __repr__(self) -> str:
        return repr(dict(self))


class History(Sequence[Mapping[str, Any]]):
    """A rollout's last HISTORY decisions, oldest first, read as the API shows them (each a mapping).

    A progressing canary records a hold every interval, so its history is mostly holds whose reasons differ
    only in their numbers: all but the newest few are kept as one compressed block (~50 B an entry, where
    entries were ~0.3 kB each: 15 kB a canary), and decoded when read. Appending keeps the newest entries as
    they are; once there are 2 × RECENT of them, the older ones join the block (one re-compression every
    RECENT decisions).
    """

    __slots__ = ("_block", "_folded", "_recent")
    RECENT = 2

    def __init__(self, entries: Iterable[Mapping[str, Any]] = ()) -> None:
        kept = tuple(entries)[-HISTORY:]
        older = kept[:-self.RECENT]
        self._block = packed([dict(h) for h in older]) if older else b""
        self._folded = len(older)
        self._recent: tuple[Mapping[str, Any], ...] = kept[len(older):]

    @classmethod
    def _made(cls, block: bytes, folded: int, recent: tuple[Mapping[str, Any], ...]) -> History:
        out = cls.__new__(cls)
        out._block, out._folded, out._recent = block, folded, recent
        return out

    def appended(self, entry: Mapping[str, Any]) -> History:
        recent = (*self._recent, entry)
        if len(recent) < 2 * self.RECENT:
            return History._made(self._block, self._folded, recent)
        older = [*self._older(), *(dict(h) for h in recent[:-self.RECENT])]
        recent = recent[-self.RECENT:]
        older = older[max(0, len(older) + len(recent) - HISTORY):]
        return History._made(packed(older) if older else b"", len(older), recent)

    def without_last(self) -> History:
        if self._recent and self._folded + len(self._recent) <= HISTORY:
            return History._made(self._block, self._folded, self._recent[:-1])
        return History(list(self)[:-1])  # an entry the block still holds would come back into the last HISTORY

    def _older(self) -> list[dict[str, Any]]:
        """The block's entries still within the last HISTORY (the oldest drop out before the next fold)."""
        if not self._folded:
            return []
        older: list[dict[str, Any]] = unpacked(self._block)
        return older[max(0, self._folded + len(self._recent) - HISTORY):]

    def __len__(self) -> int:
        return min(HISTORY, self._folded + len(self._recent))

    def __getitem__(self, i: int) -> Any:  # type: ignore[override]
        if isinstance(i, slice):
            return tuple(self)[i]
        n = len(self)
        if not -n <= i < n:
            raise IndexError("history index out of range")
        i %= n
        older = n - len(self._recent)
        return self._recent[i - older] if i >= older else self._older()[i]

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        yield from self._older()
        yield from self._recent

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(dict(a) == dict(b) for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"History({[dict(h) for h in self]!r})"


class LastDecision(Mapping[str, Any]):
    """A rollout's last decision, as the API shows it: its history entry's keys (the entry itself, shared
    with the history), then `metrics` and `more` when the analysis decided. The per-metric results (8 kB as
    dicts) are kept serialized and compressed (~1 kB; marshal: plain dicts, lists, strings and numbers,
    several times faster than JSON; zlib primed with the words they repeat: packed_data), decoded when
    read: only the API and the report read them, and a daemon keeps one last decision per canary."""

    __slots__ = ("_entry", "_more", "_metrics")

    def __init__(self, entry: Mapping[str, Any], metrics: list[dict[str, Any]] | None = None,
                 more: Mapping[str, Any] | None = None) -> None:
        self._entry = entry
        self._more = dict(more) if more else None
        self._metrics = None if metrics is None else packed(metrics)

    def __getitem__(self, key: str) -> Any:
        if self._metrics is not None and key == "metrics":
            return unpacked(self._metrics)
        if self._more is not None and key in self._more:
            return self._more[key]
        return self._entry[key]

    def __iter__(self) -> Iterator[str]:
        yield from self._entry
        if self._metrics is not None:
            yield "metrics"
        if self._more is not None:
            yield from self._more

    def __len__(self) -> int:
        return len(self._entry) + (self._metrics is not None) + len(self._more or ())

    def __repr__(self) -> str:
        return f"LastDecision({dict(self)!r})"


def _float(x: object) -> float | None:
    try:
        return None if x is None else float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def saved_position(state: Mapping[str, Any]) -> tuple[object, object, object]:
    """Where a rollout stands; a saved state that differs here was changed by someone else."""
    return state.get("phase"), state.get("step"), state.get("weight")


def rollout_position(r: Any) -> tuple[object, object, object]:
    """`saved_position(r.persisted())` of a Rollout without building its whole saved state (compared at
    every judgement)."""
    return r.phase.value, r.step, r.weight
