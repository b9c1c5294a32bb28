"""One canary's task: the only place its rollout state changes.

Ticks, alerts and manual commands arrive on one queue and are handled in order, so an alert and a
tick never race. Each command's outcome is returned through a future, so the webhook and the API
answer only once the change has been made (or has failed, and can be retried).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from . import rollout as ro
from .actuator import ActuationError, Actuator, RouteChanged
from .analysis.judge import METRICS
from .analysis.snapshot import ArmSnapshot
from .analysis.verdicts import Judgement
from .config import CanaryConfig
from .health import Health
from .logs import DecisionLog
from .metrics import MetricObservation, Metrics
from .notify import Event, Notifier
from .notify_formats import transitions
from .pacing import Pacer
from .rollout import Phase, Rollout, Trigger
from .rollout_types import METRIC_TRIGGER, rollout_position, saved_position
from .worker_delivery import CanaryDelivery, DeliveryMessage, rollout_for
from .worker_messages import Command, Item, ObserveRoute, Refresh, SourceDown, Tick
from .worker_pods import CanaryPods, CheckPods, NewVersion

log = logging.getLogger("canaryd.worker")

COMMAND_ATTEMPTS = 3  # a command decided again on the route's new state when another replica moved it


Message = (Tick | SourceDown | Refresh | ObserveRoute | Command | CheckPods | NewVersion | DeliveryMessage
           | Callable[[], None])


def new_rollout(c: CanaryConfig) -> Rollout:
    return rollout_for(c)  # match-only stages first, then traffic_steps; gates and windows


class CanaryWorker(CanaryDelivery, CanaryPods):
    def __init__(self, config: CanaryConfig, actuator: Actuator, *, metrics: Metrics, notifier: Notifier | None,
                 clock: Callable[[], float] = time.time, dry_run: bool = False, health: Health | None = None,
                 pacer: Pacer | None = None) -> None:
        self.config = config
        self.actuator = actuator
        self.metrics = metrics
        self.notifier = notifier
        self.clock = clock
        self.dry_run = dry_run
        self.rollout = new_rollout(config)
        self.health = health or Health()
        self.pacer = pacer or Pacer()  # shared by the controller's workers: judgements take turns on the loop
        self._error: str | None = None
        self.pending_rollback: ro.Rollback | None = None  # a rollback whose write failed: retried every tick
        # The route's canary weight while a pending rollback's weights are not written (None: they are);
        # status and metrics show it rather than the 0 that was decided.
        self._route_weight: int | None = None
        self._failure: ActuationError | None = None  # the last write's error
        self._decisions = DecisionLog(log, config.key)  # a repeated hold at DEBUG
        self._inbox: list[Item] = []  # in order; a task handles them while there are some (~3.5 kB less idle)
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._pods_poller: asyncio.Task[None] | None = None
        # Called with the canary's key when a new analysis starts (the controller primes its counters then).
        self.on_analysis_start: Callable[[str], None] | None = None
        self._primed: object = None  # the analysis last reported to on_analysis_start
        self._report()

    @property
    def key(self) -> str:
        return self.config.key

    @property
    def error(self) -> str | None:
        """The last actuation error, shown in the status and in /readyz until the route works again."""
        return self._error

    def _set_error(self, error: str | None) -> None:
        self._error = error
        if error:
            self.health.set_problem(f"canary {self.key}", error)
        else:
            self.health.clear(f"canary {self.key}")

    # ------------------------------------------------------------------------------------------ public

    def status(self) -> dict[str, Any]:
        c = self.config
        return {
            "namespace": c.namespace,
            "name": c.name,
            "route": c.route,
            "mesh": c.settings.mesh.value,
            "dry_run": self.dry_run,
            **self.rollout.to_json(),
            **({"weight": self._route_weight} if self._route_weight is not None else {}),
            "pending": self.pending,
            "error": self.error,
        }

    @property
    def pending(self) -> str | None:
        """Decided, not done yet: "rollback" (the route still sends traffic to the canary) or "scale_down"."""
        if self.pending_rollback is None:
            return None
        return "rollback" if self._route_weight is not None else "scale_down"

    def post(self, message: Tick | SourceDown | Refresh) -> None:
        """Fire and forget: ticks do not wait for their judgement."""
        self._put(Item(message))

    def idle(self) -> bool:
        """Whether the canary's messages are all handled."""
        return self._task is None and not self._inbox

    def _put(self, item: Item) -> None:
        self._inbox.append(item)
        if self._task is None and not self._stopped:
            self._task = asyncio.get_running_loop().create_task(self._serve(), name=f"canary {self.key}")

    async def submit(self, command: Command) -> dict[str, Any]:
        """Queue a command and wait until it has been applied. Raises TransitionError or ActuationError."""
        return await self._ask(command)

    async def barrier(self) -> None:
        """Wait until everything queued before this call has been handled (used at shutdown)."""
        await self._ask(lambda: None)

    async def observe_route(self) -> None:
        """Look at the route's weight now (see ObserveRoute); returns once that is done."""
        await self._ask(ObserveRoute())

    async def _ask(self, message: Message) -> Any:
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._put(Item(message, done))
        return await done

    def reconfigure(self, config: CanaryConfig) -> None:
        """A reloaded config: the next steps and judgements use it; the current position is kept. New
        limits restart the anytime tests with them (ro.retune): their limits are fixed when they start."""
        def apply() -> None:
            self.config = config
            r = rollout_for(config, self.rollout)
            self.rollout = ro.retune(r, config.settings.judge_settings(), self.clock())
        self._put(Item(apply))

    def take_history(self, history: Sequence[ArmSnapshot]) -> None:
        """Stable's counts before the analysis began, read by the controller as it primes (ro.with_history)."""
        def apply() -> None:
            if self.rollout.analysis is self._primed:  # the same analysis, not one started since
                self.rollout = ro.with_history(self.rollout, history)
                self._primed = self.rollout.analysis
        self._put(Item(apply))

    async def new_version(self, version: str, reason: str) -> dict[str, Any]:
        """The canary's pod template is now `version` (the watcher saw it change): a rollout in progress
        starts again from the first step with it (ro.restart); otherwise nothing happens."""
        return await self._ask(NewVersion(version, reason))

    async def refresh(self, *, at_start: bool = False) -> None:
        await self._ask(Refresh(at_start))

    async def restore(self) -> None:
        """Resume from the state saved on the route, if any (a restarted daemon continues, never restarts)."""
        saved = await self.actuator.read_state()
        if saved and saved_position(saved) != rollout_position(self.rollout):
            self.rollout = ro.resume(self.rollout, saved, self.clock())
            # The route's state wins over a rollback this replica never managed to write (it was not the
            # leader, say): retrying it later would undo whatever the leader has done since.
            self.pending_rollback = None
            self._route_weight = None
            log.info("resumed rollout from the route's state annotation",
                     extra={"canary": self.key, "phase": self.rollout.phase.value, "step": self.rollout.step,
                            "weight": self.rollout.weight})
            self._report()

    async def run(self) -> None:
        """Until cancelled, then stop (messages are handled by a task of their own, see _put)."""
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            self.stop()

    def stop(self) -> asyncio.Task[None] | None:
        """For good (shutdown, removed by a reload): cancels the message being handled, and returns its task."""
        self._stopped = True
        self.health.clear(f"canary {self.key}")
        if self._pods_poller is not None:
            self._pods_poller.cancel()
        self.stop_delivery()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        return task

    async def _serve(self) -> None:
        """The messages one at a time until there are none; the task's last line of defence says so in /readyz."""
        try:
            while self._inbox and not self._stopped:
                await self._serve_one(self._inbox.pop(0))
        except Exception:  # _serve_one() guards each message; this is the last line
            log.exception("canary task died", extra={"canary": self.key})
            self.health.set_problem(f"canary {self.key}", "its task died; see the logs")
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    async def _serve_one(self, item: Item) -> None:
        try:
            await self._handle(item.message)
        except asyncio.CancelledError:
            if item.done is not None and not item.done.done():
                item.done.cancel()
            raise
        except Exception as e:  # guarded: one command's failure never stops the canary's task
            if item.done is not None and not item.done.done():
                item.done.set_exception(e)
            elif not isinstance(e, ro.TransitionError | ActuationError):
                log.exception("canary task error", extra={"canary": self.key})
        else:
            if item.done is not None and not item.done.done():
                item.done.set_result(self.status())  # only when someone waits for it
        self._watch_pods()
        self._prime_if_started()

    def _prime_if_started(self) -> None:
        """A new analysis (a start, pods available, a restart's resume) counts from its start: the counters
        are read at that moment (on_analysis_start), so the first tick's increment covers the time since."""
        r = self.rollout
        if (r.analysis is None or r.analysis is self._primed or r.last_judged_at is not None
                or r.counters is None or r.counters.canary != ArmSnapshot() or not ro.judged(r)):
            return
        self._primed = r.analysis
        if self.on_analysis_start is not None:
            self.on_analysis_start(self.key)

    # ------------------------------------------------------------------------------------------ handling

    async def _handle(self, message: Message) -> None:
        if isinstance(message, Refresh):
            await self._refresh(message.at_start)
        elif isinstance(message, ObserveRoute):
            await self._observe_route()
        elif isinstance(message, Tick):
            await self._tick(message)
        elif isinstance(message, SourceDown):
            self._source_down(message)
        elif isinstance(message, Command):
            await self._command(message)
        elif isinstance(message, CheckPods):
            await self._check_pods()
        elif isinstance(message, NewVersion):
            await self._new_version(message)
        elif isinstance(message, DeliveryMessage):
            await self._deliver(message)
        else:
            message()

    async def _refresh(self, at_start: bool = False) -> None:
        try:
            await self.restore()
        except ActuationError as e:
            self._set_error(str(e))
            if at_start:
                log.error("cannot read the route's saved state", extra={"canary": self.key, "error": str(e)})
        else:
            if self.pending_rollback is None:
                self._set_error(None)  # the route reads again: a follower never writes to clear it

    def _source_down(self, message: SourceDown) -> None:
        if self.rollout.preparing:
            return  # no traffic, nothing judged: an outage changes nothing
        # The step's timer stops until data returns (ro.data_back): an outage is no evidence of a hold.
        self.rollout = ro.data_missing(self.rollout, message.now)
        if ro.due(self.rollout, message.now, self.config.settings.interval):
            self.rollout = replace(ro.source_down(self.rollout, message.now, message.reason),
                                   last_judged_at=message.now)
            # Every verdict is unknown while the source is down: say so rather than keep stale ones.
            self.metrics.observe_decision(self.config.namespace, self.config.name, "hold",
                                          [MetricObservation(m, "inconclusive") for m in METRICS])
            self._report()

    async def _observe_route(self) -> None:
        if self.rollout.phase in ro.ACTIVE or self.pending_rollback is not None:
            return
        try:
            weight = await self.actuator.read_weight()
            if weight > 0 and self.rollout.weight != weight:
                saved = await self.actuator.read_state()
                if saved and saved.get("weight") == weight:
                    # canaryd's own weight, with its state (whose read failed at start, say): resume that
                    # state rather than start over; a paused or promoted rollout must stay so.
                    await self._refresh()
                    return
        except ActuationError as e:
            self._set_error(str(e))
            return
        self._set_error(None)  # the route reads fine again
        if weight > 0 and self.rollout.weight != weight:
            step = ro.step_for_weight(self.rollout.steps, weight)
            reason = f"canary weight set to {weight} % by hand on the route; continuing from there"
            try:
                await self._command(Command("start", Trigger.START, reason, step=step))
            except ro.TransitionError:
                pass
            except ActuationError as e:
                log.warning("could not start a rollout", extra={"canary": self.key, "error": str(e)})

    async def _tick(self, tick: Tick) -> None:
        if self.pending_rollback is not None:
            await self._retry_rollback()
        r = self.rollout
        if not ro.judged(r):  # progressing, or paused with traffic (judged for failure only)
            return
        r = ro.accumulate(r, tick.now, tick.canary, tick.stable)
        if not ro.due(r, tick.now, self.config.settings.interval):
            self.rollout = r
            return
        self.rollout = r
        if not self.dry_run:
            # Someone may have acted on the route directly (`canaryd rollback`, kubectl): theirs wins.
            try:
                await self.restore()
            except ActuationError as e:
                self._set_error(str(e))
            if not ro.judged(self.rollout):
                return
            r = self.rollout
        async with self.pacer.turn(self.key):  # nothing else changes the rollout meanwhile: this task owns it
            started = time.perf_counter()
            new, effects, judgement = ro.judge_tick(r, tick.now)
            self.metrics.observe_analysis(time.perf_counter() - started)
            if not effects and rollout_position(new) != rollout_position(r):
                effects = [ro.SetWeight(new.weight)]  # a pause (max_step_duration, last step) is saved on the route
            try:
                await self._commit(r, new, effects, judgement)
            except RouteChanged:
                pass  # another replica paused or rolled back meanwhile: its decision stands, adopted from the route

    async def _command(self, cmd: Command) -> None:
        if self.pending_rollback is not None:
            # A redelivered alert or a repeated rollback is the moment to try the failed write again.
            await self._retry_rollback()
            if self.pending == "rollback" and cmd.verb == "rollback":
                raise ActuationError(self.error or "the rollback's route write is still failing")
        # Decided on this replica's view first; a view that another replica (or a person) has made stale
        # shows as a refused write (RouteChanged: the route's state is adopted) or as a refused transition
        # (a follower that has not seen the start yet): then it is decided again on the route's state.
        for attempt in range(1, COMMAND_ATTEMPTS + 1):
            try:
                return await self._command_once(cmd)
            except RouteChanged:
                if attempt == COMMAND_ATTEMPTS:
                    raise
            except ro.TransitionError:
                if self.dry_run or attempt == COMMAND_ATTEMPTS or not await self._adopt_route():
                    raise

    async def _command_once(self, cmd: Command) -> None:
        now = self.clock()
        old = self.rollout
        new, effects = ro.command(old, cmd.verb, now, trigger=cmd.trigger, reason=cmd.reason,
                                  emergency=cmd.emergency, step=cmd.step)
        if cmd.verb == "start":  # valid (ro.command raised otherwise): first the canary's pods
            new, effects = await self._start(old, now, cmd)
        if not effects and rollout_position(new) != rollout_position(old):
            effects = [ro.SetWeight(new.weight)]  # a pause or resume is saved on the route: every replica sees it
        await self._commit(old, new, effects, None)
        if self.pending == "rollback" or (self.error and any(isinstance(e, ro.SetWeight) for e in effects)):
            raise ActuationError(self.error or "the route write failed")
        if any(isinstance(e, ro.Promote) for e in effects) and self.rollout.phase is not Phase.SUCCEEDED:
            raise ActuationError(f"promotion failed: {self._failure or 'see the canary status'}")

    async def _adopt_route(self) -> bool:
        """Take the route's saved state if it differs from this view; whether the view changed."""
        before = rollout_position(self.rollout)
        try:
            await self.restore()
        except ActuationError as e:
            log.warning("cannot read the route's saved state", extra={"canary": self.key, "error": str(e)})
        return rollout_position(self.rollout) != before

    async def _commit(self, old: Rollout, new: Rollout, effects: list[ro.Effect], judgement: Judgement | None) -> None:
        """Perform a transition's effects; keep the transition only if they worked (rollback excepted).
        RouteChanged: nothing was written, the route's state is adopted, and the error goes on."""
        try:
            await self._perform(old, new, effects, judgement)
        except RouteChanged:
            self.rollout = old
            await self._adopt_route()
            self._report()
            raise

    async def _perform(self, old: Rollout, new: Rollout, effects: list[ro.Effect], judgement: Judgement | None) -> None:
        ns, name = self.config.namespace, self.config.name
        self.rollout = new
        for effect in effects:
            if isinstance(effect, ro.SetWeight):
                if not await self._write(lambda e=effect: self.actuator.set_weight(e.weight, self.rollout.persisted())):
                    # The traffic did not move: stay where we were, and say why.
                    self.rollout = ro.source_down(replace(old, analysis=new.analysis, counters=new.counters,
                                                          last_judged_at=new.last_judged_at),
                                                  self.clock(), f"router write failed: {self.error}")
                    self._report(judgement)
                    return
            elif isinstance(effect, ro.Rollback):
                ok = await self._write(lambda e=effect: self.actuator.rollback(self.rollout.persisted(),
                                                                             emergency=e.emergency))
                self.metrics.rollback(ns, name, self._last_trigger())  # decided, written or not (RouteChanged: not)
                if not ok:
                    self.pending_rollback = effect  # never give up on taking traffic off a bad canary
                    written = self._failure is not None and self._failure.route_written
                    self._route_weight = None if written else old.weight
            elif isinstance(effect, ro.Promote):
                self._report()  # "promoting" is visible while it runs; the judgement is counted once, below
                if await self._write(lambda: self.actuator.promote(self.rollout.persisted())):
                    trigger = Trigger(self.rollout.last_decision.get("trigger", "manual")) \
                        if self.rollout.last_decision else Trigger.MANUAL
                    self.rollout, more = ro.promoted(self.rollout, self.clock(), trigger)
                    self.metrics.promotion(ns, name)
                    await self._persist()
                    effects.extend(more)
                else:
                    self.rollout = ro.promotion_failed(self.rollout, self.clock(), self.error or "unknown error")
                    await self._persist()
            elif isinstance(effect, ro.Notify):
                self._notify(effect)
            elif isinstance(effect, ro.RunGate):
                self.run_gate_effect(effect)
        self.follow_flags(old)
        for notice in transitions(old, self.rollout, effects):  # started, advanced, paused, ...
            self._notify(notice)
        self._report(judgement)

    async def _write(self, action: Callable[[], Any]) -> bool:
        ns, name = self.config.namespace, self.config.name
        try:
            await action()
        except RouteChanged:
            raise
        except ActuationError as e:
            self._failure = e
            self._set_error(str(e))
            self.metrics.router_update(ns, name, "error")
            log.error("route update failed", extra={"canary": self.key, "error": self.error})
            return False
        self._set_error(None)
        self.metrics.router_update(ns, name, "ok")
        return True

    async def _persist(self) -> None:
        await self._write(lambda: self.actuator.set_weight(self.rollout.weight, self.rollout.persisted()))

    async def _retry_rollback(self) -> None:
        effect = self.pending_rollback
        assert effect is not None
        try:
            written = await self._write(lambda: self.actuator.rollback(self.rollout.persisted(),
                                                                       emergency=effect.emergency))
        except RouteChanged:
            await self._adopt_route()  # another replica wrote since; its state wins over this retry
            return
        if written:
            self.pending_rollback = self._route_weight = None
            log.info("rollback written after retry", extra={"canary": self.key})
        elif self._failure is not None and self._failure.route_written:
            self._route_weight = None
        self._report()

    def _last_trigger(self) -> str:
        trigger = str((self.rollout.last_decision or {}).get("trigger") or "manual")
        return next((m.value for t, m in METRIC_TRIGGER.items() if t.value == trigger), trigger)

    def _notify(self, effect: ro.Notify) -> None:
        if self.notifier is None:
            return
        r = self.rollout
        self.notifier.fire(Event(kind=effect.kind, namespace=self.config.namespace, canary=self.config.name,
                                 trigger=effect.trigger.value, reasons=list(effect.reasons), weight=r.weight,
                                 at=datetime.now(UTC), decision=r.last_decision))

    def _report(self, judgement: Judgement | None = None) -> None:
        ns, name = self.config.namespace, self.config.name
        r = self.rollout
        self.metrics.set_phase(ns, name, r.phase.value)
        self.metrics.set_weight(ns, name, r.weight if self._route_weight is None else self._route_weight)
        if judgement is not None:
            self.metrics.observe_decision(ns, name, judgement.decision.value, [
                MetricObservation(m.name, m.verdict.value, m.anytime_p_value, m.ratio) for m in judgement.metrics])
            self._decisions.log(judgement.decision.value, r.phase.value, r.weight, r.step, judgement.reasons)

