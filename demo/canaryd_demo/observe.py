"""What the demo knows of the running system, read as an operator reads it and printed as it changes.

canaryd's API gives the canary's phase, weight and decisions (and so the traffic split); canaryd's
/metrics tells which alerts reached its webhook and with what outcome; Prometheus' API tells when an
alert went pending and firing.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .report import Console, decision_line
from .settings import NAMESPACE, RACE_ALERT, SERVICE, TERMINAL
from .traffic import ACTIVE_PHASES, Split
from .watch import PromAlert, ReceivedKey, Watch, WatchError


@dataclass
class AlertTrack:
    """One scenario's view of an alert: when Prometheus had it pending and firing, when canaryd got it."""

    pending_at: float | None = None
    firing_at: float | None = None
    received: list[tuple[float, ReceivedKey, int]] = field(default_factory=list)  # (time, key, how many)

    def first_firing_received(self) -> tuple[float, ReceivedKey] | None:
        firing = [(t, k) for t, k, _ in self.received if k.status == "firing"]
        return firing[0] if firing else None


class Observer:
    """The canary's last status (and when it was asked for), the split it implies, and each alert's
    track in the current scenario. `poll()` keeps them fresh and prints every change."""

    def __init__(self, console: Console, steps: Sequence[int]) -> None:
        self.console = console
        self.steps = tuple(steps)
        self.status: dict[str, Any] = {}
        self.status_at = 0.0  # when the request that read `status` was sent
        self.split = Split()
        self.alerts: dict[str, AlertTrack] = {}
        self._printed: set[tuple[Any, ...]] = set()
        self._received: dict[ReceivedKey, float] = {}
        self._prom_state: dict[str, str] = {}

    def new_scenario(self) -> None:
        self.alerts = {}

    def new_prometheus(self) -> None:
        """Prometheus restarted with an empty database: no alert is pending or firing any more."""
        self._prom_state = {}

    async def poll(self, watch: Watch) -> None:
        """Read canaryd's API and /metrics every 0.25 s, Prometheus' alerts every 0.5 s; print what changed."""
        n = 0
        while True:
            sent = time.time()
            with contextlib.suppress(WatchError):
                self.on_status(await watch.canary(NAMESPACE, SERVICE), sent)
            with contextlib.suppress(WatchError):
                self._on_received(await watch.alerts_received())
            if n % 2 == 0:
                with contextlib.suppress(WatchError):
                    self._on_prometheus_alerts(await watch.prometheus_alerts())
            n += 1
            await asyncio.sleep(0.25)

    def on_status(self, status: dict[str, Any], sent: float) -> None:
        self.status, self.status_at = status, sent
        self.split = Split(weight=int(status.get("weight") or 0),
                           canary_serving=status.get("phase") in ACTIVE_PHASES)
        last = status.get("last_decision") or {}
        for entry in status.get("history") or ():
            key = (entry.get("at"), entry.get("decision"), entry.get("step"))
            if key in self._printed:
                continue
            self._printed.add(key)
            same = last if (last.get("at"), last.get("decision")) == key[:2] else None
            self.console.say(decision_line(entry, same, self.steps))

    # ------------------------------------------------------------------------------------------ queries

    async def wait_phase(self, since: float, deadline: float) -> str:
        """Wait until a status read after `since` shows a final phase, or the deadline; the phase then."""
        while time.time() < deadline:
            if self.status_at > since and self.status.get("phase") in TERMINAL:
                break
            await asyncio.sleep(0.1)
        return str(self.status.get("phase", "unknown"))

    def final(self, kinds: Sequence[str]) -> dict[str, Any] | None:
        """The latest decision of one of `kinds` in the canary's history."""
        return next((h for h in reversed(self.status.get("history") or ()) if h.get("decision") in kinds), None)

    def race_alert_received(self, since: float) -> tuple[float, ReceivedKey] | None:
        """When the race's alert first reached canaryd firing, if it did after `since`."""
        track = self.alerts.get(RACE_ALERT)
        got = track.first_firing_received() if track else None
        return got if got is not None and got[0] >= since else None

    # ------------------------------------------------------------------------------------------ alerts

    def _on_received(self, counts: dict[ReceivedKey, float]) -> None:
        now = time.time()
        for key, value in sorted(counts.items(), key=lambda kv: kv[0].outcome != "accepted"):
            before = self._received.get(key, 0.0)
            if value > before:
                delta = int(value - before)
                track = self.alerts.setdefault(key.alertname, AlertTrack())
                track.received.append((now, key, delta))
                if key.outcome != "duplicate":  # Alertmanager repeats a firing alert every few seconds
                    what = f"{key.outcome}" + (f" ×{delta}" if delta > 1 else "")
                    self.console.say(f"webhook   {key.alertname} {key.status} reached canaryd: "
                                     f"{what}{self._effect(key)}")
            self._received[key] = value

    def _effect(self, key: ReceivedKey) -> str:
        if key.outcome != "accepted" or key.status != "firing":
            return ""
        history = self.status.get("history") or ()
        if any(h.get("decision") == "rollback" and h.get("trigger") == "alert" for h in history):
            return " (rollback by this alert)"
        if self.status.get("phase") == "rolled_back":
            return " (no-op: the canary was already rolled back)"
        return ""

    def _on_prometheus_alerts(self, alerts: list[PromAlert]) -> None:
        now = time.time()
        ours = [a for a in alerts if a.labels.get("canary") == SERVICE and a.labels.get("namespace") == NAMESPACE]
        states: dict[str, str] = {}
        active_at: dict[str, str] = {}
        for a in ours:
            states[a.alertname] = "firing" if "firing" in (a.state, states.get(a.alertname)) else a.state
            active_at.setdefault(a.alertname, a.active_at)
        for name, state in states.items():
            if self._prom_state.get(name) == state:
                continue
            track = self.alerts.setdefault(name, AlertTrack())
            if track.pending_at is None:
                # activeAt is when the rule's condition first held: exact, where polling is not.
                track.pending_at = rfc3339(active_at[name]) or now
            if state == "firing" and track.firing_at is None:
                track.firing_at = now
            self.console.say(f"alert     {name} {state} in Prometheus")
        for name in set(self._prom_state) - set(states):
            self.console.say(f"alert     {name} inactive in Prometheus")
        self._prom_state = states


def rfc3339(text: str) -> float | None:
    """Prometheus' timestamps (nanoseconds, Z) as epoch seconds; None when unreadable."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text or "")
    if m is None:
        return None
    base = datetime.fromisoformat(m.group(1) + ("+00:00" if m.group(3) == "Z" else m.group(3)))
    return base.timestamp() + float("0." + (m.group(2) or "0"))
