"""The report of a replay (`canaryd analyze --report`): its judgements as the daemon's tick entries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..analysis.snapshot import Snapshot
from ..analysis.verdicts import Decision, Judgement
from .page import Report
from .timeline import TICKS, TickEntry, entry

HISTORY = 50  # decisions listed, as the daemon keeps


def replay_entries(snapshots: Sequence[Snapshot], judgements: Sequence[Judgement]) -> list[TickEntry]:
    """A start at the first snapshot, then one entry per judgement (judgement i judged snapshot i)."""
    if not snapshots:
        return []
    first = snapshots[0]
    out = [entry(at=first.t, decision="start", trigger="start", step=0, weight=first.weight,
                 reasons=[f"replay starts at t={first.t:g}s"])]
    for snap, j in zip(snapshots, judgements, strict=False):
        trigger = "timeout" if j.timed_out else "analysis"
        out.append(entry(at=j.at, decision=j.decision.value, trigger=trigger, step=0, weight=snap.weight,
                         reasons=j.reasons, judgement=j))
    return out[-TICKS:]


def _history(entries: Sequence[TickEntry]) -> list[dict[str, Any]]:
    """The decisions other than holds (each run of the same one once), and the last decision."""
    out: list[dict[str, Any]] = []
    for i, t in enumerate(entries):
        last = i == len(entries) - 1
        repeated = bool(out) and out[-1]["decision"] == t.decision
        if last or (t.decision != "hold" and not repeated):
            out.append({"at": t.at, "decision": t.decision, "trigger": t.trigger, "step": t.step,
                        "weight": t.weight, "reasons": list(t.reasons)})
    return out[-HISTORY:]


def replay_report(source: str, snapshots: Sequence[Snapshot], judgements: Sequence[Judgement],
                  alpha: float) -> Report:
    entries = replay_entries(snapshots, judgements)
    final = judgements[-1] if judgements else None
    weights = [s.weight for s in snapshots[: len(judgements)] if s.weight is not None]
    last_weight = weights[-1] if weights else None
    phase = {Decision.ROLLBACK: "rolled_back", Decision.ADVANCE: "passed", Decision.HOLD: "holding"}
    status: dict[str, Any] = {
        "phase": "idle" if final is None else phase[final.decision],
        "weight": 0 if final is not None and final.decision is Decision.ROLLBACK else last_weight,
        "started_at": snapshots[0].t if snapshots else None,
        "history": _history(entries),
        "last_decision": None if final is None else {
            **final.to_json(), "trigger": "timeout" if final.timed_out else "analysis"},
    }
    return Report(title=f"replay of {source}", status=status, ticks=entries, alpha=alpha,
                  absolute_times=False)
