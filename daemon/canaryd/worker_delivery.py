"""CanaryWorker's delivery patterns: match-only stages, gates, windows, the feature-flag hook and crash
loops read from the cluster. Runs on the worker's task, like every message; the slow parts (a gate's
webhook or Job, listing pods, a flag service) run in tasks of their own and report back through the
queue, so a rollback or a command never waits behind them.

- `rollout_for`: the rollout a canary's config describes (match stages first, at weight 0; its gates
  and windows), used at start and on a reload;
- gates: a RunGate effect (or a restarted daemon finding one pending) starts the gate; its outcome
  comes back as GateDone and rollout_gates.gate_done decides. confirm_promotion runs again every
  interval until it passes. Only the replica that may write runs them (a follower's would repeat them);
- crash loops: while a rollout is in progress a poller lists the canary's pods every half interval
  and rolls back (trigger pods) when crashloop.verdict says so;
- feature flags: every change of phase, step or weight is POSTed to feature_flags.url (flags.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp

from . import rollout as ro
from .actuator import ActuationError
from .config.model import GATE_NAMES, CanaryConfig
from .crashloop import pod_restarts, verdict
from .flags import send_flag
from .gates import GateOutcome, gate_body, run_gate
from .rollout import Phase, Rollout, Trigger
from .rollout_gates import gate_done
from .windows import parse_windows

if TYPE_CHECKING:
    from .analysis.verdicts import Judgement

T = TypeVar("T")

log = logging.getLogger("canaryd.worker")

CRASH_POLL_MAX = 15.0  # seconds; at most half an interval between looks at the canary's pods


@dataclass(frozen=True)
class GateDone:
    outcome: GateOutcome


@dataclass(frozen=True)
class PodsCrashing:
    reason: str
    started_at: float | None  # the rollout it was seen in; a later one is not rolled back for it


DeliveryMessage = GateDone | PodsCrashing


def rollout_for(c: CanaryConfig, r: Rollout | None = None) -> Rollout:
    """A canary's rollout as configured (a new one, or `r` with the reloaded settings, same position)."""
    s = c.settings
    steps = (0,) * len(c.match_stages) + tuple(s.traffic_steps)
    gates = _shared(frozenset(n for n in GATE_NAMES if getattr(c.gates, n).enabled))
    options: dict[str, Any] = {"steps": steps, "auto_promote": s.auto_promote, "stages": tuple(c.match_stages),
                               "gates": gates, "windows": parse_windows(c.windows)}
    if r is None:
        return Rollout(settings=_shared(s.judge_settings()), **options)
    return replace(r, **options)


@functools.lru_cache(maxsize=256)
def _shared(value: T) -> T:
    """One instance of each distinct settings or set of gates (frozen): canaries configured alike share it
    (~0.4 kB and ~0.2 kB each)."""
    return value


def _find(actuator: object, attr: str) -> Callable[..., Any] | None:
    """An actuator's method, looked up through wrapping actuators (LeaderGuard)."""
    while actuator is not None:
        found = getattr(actuator, attr, None)
        if callable(found):
            return found  # type: ignore[no-any-return]
        actuator = getattr(actuator, "inner", None)
    return None


def _may_write(actuator: object) -> bool:
    """Whether this replica's actuator lets it write (a follower's LeaderGuard refuses)."""
    while actuator is not None:
        check = getattr(actuator, "check", None)
        if callable(check):
            try:
                check()
            except ActuationError:
                return False
        actuator = getattr(actuator, "inner", None)
    return True


class CanaryDelivery:
    """The worker's part for delivery patterns; its tasks live in `_delivery` (created on first use)."""

    if TYPE_CHECKING:
        rollout: Rollout
        config: CanaryConfig
        actuator: Any
        clock: Callable[[], float]

        @property
        def key(self) -> str: ...
        def status(self) -> dict[str, Any]: ...
        def _report(self, judgement: Judgement | None = None) -> None: ...
        async def _ask(self, message: Any) -> Any: ...
        async def _command(self, cmd: Any) -> None: ...
        async def _decide(self, old: Rollout, new: Rollout, effects: list[ro.Effect]) -> None: ...

    @property
    def _tasks(self) -> dict[str, asyncio.Task[None]]:
        tasks: dict[str, asyncio.Task[None]] | None = self.__dict__.get("_delivery_tasks")
        if tasks is None:
            tasks = self.__dict__["_delivery_tasks"] = {}
        return tasks

    def _session(self) -> aiohttp.ClientSession:
        session: aiohttp.ClientSession | None = self.__dict__.get("_delivery_session")
        if session is None or session.closed:
            session = self.__dict__["_delivery_session"] = aiohttp.ClientSession()
        return session

    def _spawn(self, name: str, coro: Any) -> None:
        task = self._tasks.get(name)
        if task is not None and not task.done():
            coro.close()
            return
        self._tasks[name] = asyncio.create_task(coro, name=f"{name} {self.key}")

    def stop_delivery(self) -> None:
        """Cancel the gate, pod and flag tasks (the worker is stopping)."""
        for task in self._tasks.values():
            task.cancel()
        session = self.__dict__.pop("_delivery_session", None)
        if session is not None and not session.closed:
            asyncio.get_running_loop().create_task(session.close())

    # ------------------------------------------------------------------------------------ messages
    async def _deliver(self, message: DeliveryMessage) -> None:
        if isinstance(message, GateDone):
            o = message.outcome
            old = self.rollout
            new, effects = gate_done(old, self.clock(), o.name, o.passed, o.detail)
            if new is not old:
                (log.info if o.passed else log.warning)(
                    "gate " + ("passed" if o.passed else "failed"),
                    extra={"canary": self.key, "gate": o.name, "detail": o.detail})
                await self._decide(old, new, effects)
            return
        r = self.rollout
        if r.started_at != message.started_at or r.phase not in (Phase.PROGRESSING, Phase.PAUSED):
            return
        log.error("canary pods crash-looping: rolling back", extra={"canary": self.key, "reason": message.reason})
        from .worker import Command  # the worker's own message type (worker.py imports this module)

        try:
            await self._command(Command("rollback", Trigger.PODS, message.reason))
        except ro.TransitionError:
            pass

    def run_gate_effect(self, effect: ro.RunGate) -> None:
        """A RunGate effect: run the gate unless this replica may not write."""
        if _may_write(self.actuator):
            self._spawn(f"gate {effect.name}", self._gate_task(effect.name))

    async def _gate_task(self, name: str) -> None:
        gate = getattr(self.config.gates, name)
        while True:
            body = gate_body(name, self.config, self.status())
            outcome = await run_gate(name, gate, body, session=self._session(), run_job=_find(self.actuator, "run_job"))
            try:
                await self._ask(GateDone(outcome))
            except (ActuationError, ro.TransitionError) as e:
                log.warning("gate outcome not applied", extra={"canary": self.key, "gate": name, "error": str(e)})
            if outcome.passed or name != "confirm_promotion" or self.rollout.gate != name \
                    or self.rollout.phase is not Phase.PROGRESSING:
                return  # a pause stops it; the resume runs it again (watch_delivery)
            await asyncio.sleep(self.config.settings.interval)

    # ------------------------------------------------------------------------------------- pollers
    def _watch_pods(self) -> None:
        """Called after each message (the worker's loop); CanaryPods' poller, then this module's."""
        super()._watch_pods()  # type: ignore[misc]
        self.watch_delivery()

    def watch_delivery(self) -> None:
        """After each message: a pending gate runs (after a restart too); the pod poller runs while a
        rollout is in progress."""
        r = self.rollout
        if r.gate is not None and r.phase is Phase.PROGRESSING and r.gate in r.gates:
            self.run_gate_effect(ro.RunGate(r.gate))
        if self._crash_watch_wanted():
            self._spawn("pods", self._crash_task())

    def _crash_watch_wanted(self) -> bool:
        return (self.config.crash_loop.enabled and self.rollout.phase in (Phase.PROGRESSING, Phase.PAUSED)
                and _find(self.actuator, "canary_pods") is not None and _may_write(self.actuator))

    async def _crash_task(self) -> None:
        pods_of = _find(self.actuator, "canary_pods")
        assert pods_of is not None
        started = self.rollout.started_at
        baseline: dict[str, int] = {}
        first = True
        every = max(0.5, min(CRASH_POLL_MAX, self.config.settings.interval / 2))
        while self._crash_watch_wanted() and self.rollout.started_at == started:
            try:
                pods = [pod_restarts(p) for p in await pods_of()]
            except ActuationError as e:
                log.warning("cannot read the canary's pods", extra={"canary": self.key, "error": str(e)})
            else:
                reason, baseline = verdict(pods, baseline, self.config.crash_loop.max_restarts, first_look=first)
                first = False
                if reason is not None:
                    await self._ask(PodsCrashing(reason, started))
                    return
            await asyncio.sleep(every)

    def follow_flags(self, old: Rollout) -> None:
        """The feature-flag hook, when the phase, step or weight changed."""
        if self.config.feature_flags.url is None:
            return
        r = self.rollout
        if (old.phase, old.step, old.weight) == (r.phase, r.step, r.weight):
            return
        status = self.status()
        task = asyncio.create_task(send_flag(self._session(), self.config, status), name=f"flags {self.key}")
        self._tasks[f"flags {id(task)}"] = task
        task.add_done_callback(lambda t: self._tasks.pop(f"flags {id(t)}", None))
