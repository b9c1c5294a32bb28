"""The two scenarios, driven through canaryd's API: a healthy canary to promote, a failing one to roll back.

Both run on the same canary, one after the other; each starts a rollout with POST .../start and
reads the outcome from the Observer, which polls canaryd and Prometheus meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from .observe import AlertTrack, Observer
from .report import Console, ScenarioResult
from .service import DemoService
from .settings import EXPECTED, NAMESPACE, RACE_ALERT, SERVICE, TERMINAL, DemoSettings, alert_for_seconds
from .watch import Watch


class Scenarios:
    def __init__(self, s: DemoSettings, *, rules: Path, console: Console, observer: Observer, watch: Watch,
                 canary: DemoService) -> None:
        self.s = s
        self.rules = rules
        self.console = console
        self.observer = observer
        self.watch = watch
        self.canary = canary

    async def run(self, name: str) -> ScenarioResult:
        self.observer.new_scenario()
        return await (self.good() if name == "good" else self.bad())

    async def _start_rollout(self) -> float:
        started = time.time()
        status = await self.watch.command(NAMESPACE, SERVICE, "start")
        self.observer.on_status(status, started)
        return started

    async def good(self) -> ScenarioResult:
        s, status = self.s, self.observer
        self.console.tag = "good"
        self.console.out("")
        self.console.out(f"== Scenario 1 (good): a healthy canary ({100 * s.healthy.error_rate:g} % 5xx, "
                         f"P95 ~{s.healthy.p95_ms():.0f} ms, like stable) should walk "
                         f"{' → '.join(str(w) for w in s.steps)} % and be promoted ==")
        self.canary.behaviour = s.healthy
        started = await self._start_rollout()
        phase = await status.wait_phase(started, started + s.good_timeout)
        seconds = time.time() - started
        final = status.final(("promoted", "rollback"))
        note = ""
        if phase == "succeeded" and final is not None:
            seconds = float(final["at"]) - started
            note = f"promoted {seconds:.1f} s after the start, {len(s.steps)} steps"
        elif phase not in TERMINAL:
            note = (f"still {phase} at {status.status.get('weight')} % after {s.good_timeout:g} s: "
                    + "; ".join((status.status.get("last_decision") or {}).get("reasons") or ()))
        elif final is not None:
            note = f"{final.get('decision')} by {final.get('trigger')}: {'; '.join(final.get('reasons') or ())}"
        else:
            note = str(status.status.get("paused_reason") or "")
        return ScenarioResult("good", EXPECTED["good"], phase, seconds,
                              trigger=None if final is None else str(final.get("trigger")), note=note)

    async def bad(self) -> ScenarioResult:
        s, status = self.s, self.observer
        self.console.tag = "bad"
        self.console.out("")
        self.console.out(f"== Scenario 2 (bad): the canary starts answering {100 * s.failing.error_rate:g} % of "
                         f"its requests with 500, {s.fail_after:g} s into the rollout; canaryd's analysis and "
                         f"{RACE_ALERT} race to roll it back ==")
        self.canary.behaviour = s.healthy
        started = await self._start_rollout()
        await status.wait_phase(started, started + s.fail_after)
        failed_at = time.time()
        if status.status.get("phase") in TERMINAL:
            return ScenarioResult("bad", EXPECTED["bad"], str(status.status.get("phase")), failed_at - started,
                                  note="the rollout ended before the canary started failing")
        self.canary.behaviour = s.failing
        self.console.say(f"FAILURE   the canary now answers {100 * s.failing.error_rate:g} % of requests "
                         "with 500 (t0)")
        phase = await status.wait_phase(failed_at, failed_at + s.alert_wait)
        rollback = status.final(("rollback",))
        # The race is decided; keep going until the alert has arrived too, so the demo can show it.
        deadline = failed_at + s.alert_wait
        while time.time() < deadline and status.race_alert_received(failed_at) is None:
            await asyncio.sleep(0.25)
        await asyncio.sleep(0.5)  # one more poll: its outcome and first duplicates
        trigger = None if rollback is None else str(rollback.get("trigger"))
        seconds = (float(rollback["at"]) - failed_at) if rollback is not None else time.time() - failed_at
        return ScenarioResult("bad", EXPECTED["bad"], phase, seconds, since="the failure", trigger=trigger,
                              note=self._race(failed_at, rollback))

    def _race(self, t0: float, rollback: dict[str, Any] | None) -> str:
        """Who rolled the bad canary back, how fast, and what became of the alert."""
        if rollback is None:
            winner = "nobody rolled the canary back"
        else:
            winner = (f"{rollback.get('trigger')} won: rolled back {float(rollback['at']) - t0:.1f} s "
                      "after the failure began")
        return f"{winner}; {self._alert_story(t0, rollback)}"

    def _alert_story(self, t0: float, rollback: dict[str, Any] | None) -> str:
        """What became of the race's alert: when Prometheus had it, when (and whether) it reached canaryd."""
        track = self.observer.alerts.get(RACE_ALERT, AlertTrack())
        seen = []
        if track.pending_at is not None:
            seen.append(f"pending at t0+{track.pending_at - t0:.1f} s")
        if track.firing_at is not None:
            seen.append(f"firing at t0+{track.firing_at - t0:.1f} s")
        prom = f" (in Prometheus: {', '.join(seen)})" if seen else ""
        got = self.observer.race_alert_received(t0)
        if got is None:
            for_s = alert_for_seconds(self.rules, RACE_ALERT)
            timing = f"rules/ give it `for: {for_s:g}s` over 5m windows, " if for_s is not None else ""
            return (f"{RACE_ALERT} did not reach canaryd within the demo's {self.s.alert_wait:g} s"
                    f"{prom or ' (never pending in Prometheus)'}; {timing}plus scrape, evaluation and "
                    "Alertmanager delays")
        arrived, _ = got
        text = f"{RACE_ALERT} reached canaryd at t0+{arrived - t0:.1f} s{prom}"
        if rollback is not None and rollback.get("trigger") == "alert":
            text += ", and it rolled the canary back"
        elif rollback is not None:
            text += (f", {arrived - float(rollback['at']):.1f} s after the rollback: a no-op "
                     "(accepted, nothing left to roll back)")
        dups = sum(n for _, k, n in track.received if k.outcome == "duplicate")
        if dups:
            text += f"; {dups} redeliver{'y' if dups == 1 else 'ies'} answered as duplicate"
        return text
