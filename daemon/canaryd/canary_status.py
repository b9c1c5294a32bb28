"""What a Canary object shows: its status subresource and its Events, derived from a canary's status.

Pure functions of the canary's status as the HTTP API gives it (`CanaryWorker.status()`): the leader
writes `canary_status(...)` when it differs from what it wrote last, and records `transitions(old, new)`
as Events, so each change of phase or step is one Event, whatever the number of passes that saw it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

CONDITIONS = ("Ready", "Progressing", "Promoted", "RolledBack")
PHASES = {"idle": "Idle", "progressing": "Progressing", "paused": "Paused", "promoting": "Promoting",
          "succeeded": "Succeeded", "rolled_back": "RolledBack"}
ACTIVE = ("progressing", "paused", "promoting")
NOTE_LIMIT = 1024  # events.k8s.io/v1 refuses a longer note


def rfc3339(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _camel(text: str | None) -> str:
    return "".join(p.capitalize() for p in str(text or "unknown").replace("-", "_").split("_"))


def _reasons(status: Mapping[str, Any]) -> list[str]:
    last = status.get("last_decision") or {}
    reasons = last.get("reasons") or []
    return [str(r) for r in reasons] if isinstance(reasons, list | tuple) else [str(reasons)]


def _why(status: Mapping[str, Any]) -> str:
    return "; ".join(_reasons(status))


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool | None  # None: Unknown
    reason: str
    message: str = ""

    def json(self, generation: int | None, now: float, before: Mapping[str, Any] | None) -> dict[str, Any]:
        text = "Unknown" if self.status is None else str(self.status)
        # The transition time moves only when the status does, as Kubernetes' conditions do.
        same = before is not None and before.get("status") == text and before.get("lastTransitionTime")
        out = {"type": self.type, "status": text, "reason": self.reason, "message": self.message[:NOTE_LIMIT],
               "lastTransitionTime": before["lastTransitionTime"] if same else rfc3339(now)}
        if generation is not None:
            out["observedGeneration"] = generation
        return out


def conditions_of(status: Mapping[str, Any]) -> list[Condition]:
    """Ready, Progressing, Promoted and RolledBack for a valid Canary's canary status."""
    phase = str(status.get("phase", "idle"))
    error = status.get("error")
    trigger = _camel((status.get("last_decision") or {}).get("trigger"))
    ready = (Condition("Ready", False, "RouteError", str(error)) if error
             else Condition("Ready", True, "Accepted", "the spec is valid; canaryd analyses this canary"))
    moving = phase in ("progressing", "promoting")
    progressing = Condition("Progressing", moving, PHASES.get(phase, _camel(phase)),
                            str(status.get("paused_reason") or "") if phase == "paused" else _why(status))
    promoted = (Condition("Promoted", True, "Promoted", _why(status)) if phase == "succeeded"
                else Condition("Promoted", False, "PromotionFailed" if phase == "promoting" and error else "NotPromoted"))
    rolled_back = (Condition("RolledBack", True, trigger, _why(status)) if phase == "rolled_back"
                   else Condition("RolledBack", False, "NotRolledBack"))
    return [ready, progressing, promoted, rolled_back]


def _last_decision(status: Mapping[str, Any]) -> dict[str, Any] | None:
    last = status.get("last_decision")
    if not isinstance(last, Mapping) or not last.get("decision"):
        return None
    out: dict[str, Any] = {"decision": str(last["decision"]), "reasons": _reasons(status)}
    if last.get("trigger"):
        out["trigger"] = str(last["trigger"])
    at = last.get("at")
    if isinstance(at, int | float):
        out["time"] = rfc3339(float(at))
    return out


def _by_type(previous: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    found = (previous or {}).get("conditions") or []
    return {c.get("type"): c for c in found if isinstance(c, Mapping)}


def canary_status(status: Mapping[str, Any], *, generation: int | None, now: float,
                  previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The status subresource of a valid Canary; `previous` (the last written) keeps transition times."""
    step = status.get("step")
    step = step + 1 if isinstance(step, int) and step >= 0 else 0
    steps = status.get("steps")
    before = _by_type(previous)
    out: dict[str, Any] = {
        "phase": PHASES.get(str(status.get("phase")), _camel(status.get("phase"))),
        "weight": int(status.get("weight") or 0),
        "step": step,
        "steps": len(steps) if isinstance(steps, list | tuple) else 0,
        "stepStartedAt": rfc3339(status.get("step_started_at")),
        "lastDecision": _last_decision(status),
        "observedGeneration": generation,
        "conditions": [c.json(generation, now, before.get(c.type)) for c in conditions_of(status)],
    }
    return {k: v for k, v in out.items() if v is not None}


def invalid_status(message: str, *, generation: int | None, now: float, reason: str = "InvalidSpec",
                   previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The status of a Canary canaryd does not run: Ready=False saying why; nothing else is claimed."""
    before = _by_type(previous)
    ready = Condition("Ready", False, reason, message)
    out: dict[str, Any] = {"phase": "Invalid", "observedGeneration": generation,
                           "conditions": [ready.json(generation, now, before.get("Ready"))]}
    return {k: v for k, v in out.items() if v is not None}


def comparable(status: Mapping[str, Any]) -> dict[str, Any]:
    """A status without its times of writing, to tell whether anything changed since the last write."""
    out = dict(status)
    out["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                         for c in status.get("conditions") or ()]
    return out


# ---------------------------------------------------------------------------------------- events
@dataclass(frozen=True)
class Transition:
    """One Event: `reason` is Started, Advanced, Paused, Promoted, RolledBack or PromotionFailed."""

    reason: str
    type: str  # Normal or Warning
    action: str  # what canaryd did (events.k8s.io/v1 `action`)
    note: str


def _at(status: Mapping[str, Any]) -> str:
    steps = status.get("steps") or ()
    step = status.get("step")
    where = f"step {step + 1} of {len(steps)}, " if isinstance(step, int) and step >= 0 and steps else ""
    return f"{where}weight {status.get('weight', 0)}%"


def _note(head: str, status: Mapping[str, Any]) -> str:
    why = _why(status)
    return (f"{head}: {why}" if why else head)[:NOTE_LIMIT]


def transitions(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> Sequence[Transition]:
    """The Events between two statuses of one canary; none for the first one seen (a restarted daemon
    does not replay a rollout's past)."""
    if old is None:
        return []
    return [*_moves(old, new), *_stops(old, new)]


def _moves(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Transition]:
    was, now = str(old.get("phase")), str(new.get("phase"))
    if now != "progressing":
        return []
    if was not in ACTIVE or old.get("started_at") != new.get("started_at"):  # a start, or a new version's
        return [Transition("Started", "Normal", "Start", _note(f"started at {_at(new)}", new))]
    if was == "progressing" and (new.get("step") or 0) > (old.get("step") or 0):
        return [Transition("Advanced", "Normal", "Advance", _note(f"advanced to {_at(new)}", new))]
    return []


def _stops(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Transition]:
    was, now = str(old.get("phase")), str(new.get("phase"))
    out: list[Transition] = []
    if now == "paused" and was != "paused":
        note = f"paused at {_at(new)}: {new.get('paused_reason') or _why(new)}"
        out.append(Transition("Paused", "Warning", "Pause", note[:NOTE_LIMIT]))
    if now == "succeeded" and was != "succeeded":
        out.append(Transition("Promoted", "Normal", "Promote", _note("promoted", new)))
    error = new.get("error")
    if (was == "promoting" and now not in ("promoting", "succeeded")) or (
            now == "promoting" and error and not old.get("error")):
        out.append(Transition("PromotionFailed", "Warning", "Promote",
                              _note("promotion failed" + (f": {error}" if error else ""), new)))
    if now == "rolled_back" and was != "rolled_back":
        out.append(Transition("RolledBack", "Warning", "Rollback", _note("rolled back", new)))
    return out
