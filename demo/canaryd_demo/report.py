"""The demo's lines: one per decision or event, readable in a terminal and in a log.

Formatting only: `Console` hands each line to the function it is given (print, in the CLI).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SHORT = {"error_ratio": "5xx×", "latency_ratio": "p95×", "error_rate": "5xx", "success_rate": "2xx",
         "latency_p95": "p95", "latency_p99": "p99", "cpu": "cpu", "memory": "mem"}
VERDICT = {"pass": "ok", "fail": "FAIL", "inconclusive": "?", "warn": "warn"}
LEGEND = ("verdicts: 5xx× canary/stable 5xx ratio, p95× canary/stable P95 ratio, 5xx error rate, "
          "2xx success rate, p95 / p99 latency; ok pass, ? not decided yet, FAIL, warn")


def stamp(seconds: float) -> str:
    return f"[{seconds:6.1f}s]"


@dataclass
class Console:
    """Where the demo's lines go: `out`, each event stamped with the time since the start and a tag
    (the scenario, or setup / end)."""

    out: Callable[[str], None]
    t0: float = field(default_factory=time.time)
    tag: str = "setup"

    def say(self, text: str, at: float | None = None) -> None:
        when = (at if at is not None else time.time()) - self.t0
        self.out(f"{stamp(when)} {self.tag:<5} {text}")


def _pct(x: object) -> str:
    return f"{x:.2f} %" if isinstance(x, int | float) else "n/a"


def _ms(x: object) -> str:
    return f"{x:.0f} ms" if isinstance(x, int | float) else "n/a"


def _metric(last: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    return next((m for m in last.get("metrics") or () if m.get("name") == name), {})


def arms(last: Mapping[str, Any]) -> str:
    """Canary against stable over the step: 5xx rate, P95 and requests."""
    ratio, rate, p95 = _metric(last, "error_ratio"), _metric(last, "error_rate"), _metric(last, "latency_p95")
    c_err = ratio.get("canary") if ratio.get("canary") is not None else rate.get("canary")
    c_req = last.get("canary_requests") or 0
    s_req = last.get("stable_requests") or 0
    canary = f"canary {_pct(c_err)} 5xx, P95 {_ms(p95.get('canary'))}, {c_req:.0f} req"
    if ratio.get("verdict") == "skipped" or not s_req:
        return canary + " | stable: no comparison at 100 %"
    return canary + f" | stable {_pct(ratio.get('stable'))} 5xx, P95 {_ms(p95.get('stable'))}, {s_req:.0f} req"


def verdicts(last: Mapping[str, Any]) -> str:
    parts = [f"{SHORT.get(m['name'], m['name'])} {VERDICT[m['verdict']]}"
             for m in last.get("metrics") or () if m.get("verdict") in VERDICT]
    return ", ".join(parts) if parts else "no verdicts yet"


def _step(entry: Mapping[str, Any], steps: Sequence[int]) -> str:
    step = int(entry.get("step", -1))
    return f"step {step + 1}/{len(steps)} {entry.get('weight', 0):>3} %"


def decision_line(entry: Mapping[str, Any], last: Mapping[str, Any] | None, steps: Sequence[int]) -> str:
    """One history entry; with `last` (the same decision with its metrics) also the numbers and verdicts."""
    decision = str(entry.get("decision", "?"))
    trigger = str(entry.get("trigger", ""))
    reasons = list(entry.get("reasons") or ())
    first = reasons[0] if reasons else ""
    if decision == "start":
        return f"start     {_step(entry, steps)}  {first}"
    if decision in ("promote", "promoted"):
        return f"{decision.upper():<9} by {trigger}: {first}"
    label = {"rollback": "ROLLBACK", "advance": "advance", "hold": "hold"}.get(decision, decision)
    head = f"{label:<9} {_step(entry, steps)}"
    if decision == "advance":
        step = int(entry.get("step", -1))
        if step + 1 < len(steps):
            head += f" → {steps[step + 1]} %"
        else:
            head += " → last step passed"
    if decision == "rollback":
        head += f" by {trigger}"
    if last is not None and last.get("metrics"):
        body = f"{arms(last)} | {verdicts(last)}"
        if decision == "advance":
            return f"{head}  {body}"
        return f"{head}  {body} | {first}"
    return f"{head}  {first}"


@dataclass(frozen=True)
class ScenarioResult:
    name: str  # good | bad
    expected: str  # the phase it should end in
    phase: str  # the phase it ended in
    seconds: float  # from `since` to the end (or to the timeout)
    since: str = "the start"  # what `seconds` is measured from
    trigger: str | None = None  # of the final decision
    note: str = ""  # the race, or why it did not end as expected

    @property
    def ok(self) -> bool:
        return self.phase == self.expected


def summary(results: Sequence[ScenarioResult]) -> list[str]:
    rows = [("scenario", "expected", "ended", "by", "after", "")]
    for r in results:
        rows.append((r.name, r.expected, r.phase, r.trigger or "-", f"{r.seconds:.1f} s from {r.since}",
                     "OK" if r.ok else "UNEXPECTED"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    for r in results:
        if r.note:
            lines.append(f"  {r.name}: {r.note}")
    return lines
