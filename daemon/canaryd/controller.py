"""Schedules analysis ticks, routes alerts and manual commands to each canary's task.

One guarded task per canary (worker.py; it runs while the canary has messages to handle) owns that
canary's state; the controller only fans out. Each tick selects a slot of the progressing canaries,
reads their counters (sources/reader.py: one query per metric for a part of them, a few parts a tick),
then posts the increments to the workers. A Prometheus failure becomes a visible hold, never a step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .actuator import ActuationError, Actuator
from .alerts import AlertDeduper, AlertOutcome, CanaryIndex, WebhookMessage, plan_alerts
from .analysis.snapshot import ArmSnapshot
from .config import AlertAction, CanaryConfig, Config
from .health import Health
from .leadership import Leadership
from .metrics import Metrics
from .notify import Notifier
from .pacing import Pacer
from .report import timeline
from .rollout import Phase, TransitionError, Trigger, judged
from .sources.prometheus import PrometheusClient
from .sources.reader import CounterReader, Reading
from .worker import CanaryWorker, Command, Refresh, SourceDown, Tick

log = logging.getLogger("canaryd.controller")

ActuatorFactory = Callable[[CanaryConfig], Actuator]
SLOT_SIZE = 200  # progressing canaries read per tick at most (about 0.5 s of judging on one core)
MIN_SLOT_TICK = 1.0  # seconds: slots never make ticks more frequent than this
READ_PART = 25  # canaries read with one round of queries (see tick)
MAX_READ_PARTS = 8  # rounds of queries per tick at most: queries per tick stay bounded whatever the number
ANSWER_TURN = "prometheus answer"  # the pacer's key for a decode: no canary's, so a command never waits on it
SCAN_CHUNK = 1000  # canaries a tick looks at in one pass of the loop (see _scan)
COMMAND_TIMEOUT = 10.0  # seconds an API call or webhook waits for its change to be made
PRIME_WAIT = 2.0  # seconds a start or resume waits for its analysis' first reads before it answers
SAFE_VERBS = frozenset({"rollback", "pause"})  # any replica may write these: they only stop a rollout


class UnknownCanary(LookupError):
    pass


class NotLeader(RuntimeError):
    """A verb that advances a rollout (start, resume, promote) reached a replica that does not lead."""


class CommandQueued(Exception):
    """The command did not finish within COMMAND_TIMEOUT; it stays queued and will be applied (it is
    never cancelled half-way). The caller is told where to look: the canary's status."""

    def __init__(self, namespace: str, name: str, verb: str) -> None:
        super().__init__(f"{verb} is queued for {namespace}/{name} and not done yet; it will be applied: "
                         "see the canary's status")
        self.status_url = f"/api/v1/canaries/{namespace}/{name}"
        self.verb = verb


@dataclass
class _Scan:
    """What a tick's look at every canary found (Controller._scan)."""

    judged: list[CanaryWorker] = field(default_factory=list)  # progressing, or paused with traffic
    paused: list[CanaryWorker] = field(default_factory=list)
    pending: list[CanaryWorker] = field(default_factory=list)  # a rollback whose write failed


@dataclass
class AlertReport:
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    retry: bool = False  # some action could not be applied now: answer 503 so Alertmanager retries
    queued: bool = False  # some action is still queued (COMMAND_TIMEOUT): answer 202, it will be applied


class Controller:
    def __init__(self, config: Config, *, metrics: Metrics, prometheus: PrometheusClient,
                 actuator_factory: ActuatorFactory, notifier: Notifier | None = None,
                 clock: Callable[[], float] = time.time, leadership: Leadership | None = None,
                 health: Health | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self.reader = CounterReader(prometheus, config.canaries)  # the counters' targets and totals
        self.actuator_factory = actuator_factory
        self.notifier = notifier
        self.clock = clock
        self.dry_run = not config.kubernetes.enabled
        self.workers: dict[str, CanaryWorker] = {}
        self.deduper = AlertDeduper()
        self.leadership = leadership or Leadership()  # read here; only the leader election writes it
        self.health = health or Health()  # this writes "analysis" and "prometheus"
        self.last_tick_at: float | None = None
        self._round = (0, 1)  # (this tick's slot in the round, the round's number of slots): see _select
        self._base: tuple[Config | None, float] = (None, 0.0)  # the config and its shortest interval
        self._interval = 0.0  # the last tick_interval (0: none yet)
        self._slots: dict[str, int] = {}  # the round's slot of each canary judged at its start
        self._places: dict[str, int] = {}  # place_of each canary judged at the round's start (kept a round)
        self._viewed_at: dict[str, float] = {}  # when the leader last re-read a canary's route for its view
        self._index = CanaryIndex([])
        self._priming: dict[str, asyncio.Task[None]] = {}  # canary key -> its counters' reads at an analysis' start
        self.pacer = Pacer()  # the workers' judgements take turns, and a command goes first (pacing.py)
        if prometheus is not None:
            # Prometheus' answers are decoded and split as turns of the same pacer: a tick's reads then hold
            # the loop ~1 ms a pass, and wait while a webhook's command is in flight.
            prometheus.turn = lambda: self.pacer.turn(ANSWER_TURN)

    # ------------------------------------------------------------------------------------------ life

    async def start(self) -> None:
        for canary in self.config.canaries:
            await self._add(canary)
        self._index = CanaryIndex([(c.namespace, c.name) for c in self.config.canaries])

    async def _add(self, canary: CanaryConfig) -> None:
        worker = CanaryWorker(canary, self.actuator_factory(canary), metrics=self.metrics, notifier=self.notifier,
                              clock=self.clock, dry_run=self.dry_run, health=self.health, pacer=self.pacer)
        worker.on_analysis_start = self._prime
        self.workers[canary.key] = worker
        await worker.refresh(at_start=True)  # resume from the route's saved state, if any

    def _prime(self, key: str) -> None:
        """A canary's analysis starts now: read its counters' totals now, so that its first tick judges the
        traffic since (not only sets a baseline). Not awaited: the canary's task goes on meanwhile."""
        task = asyncio.create_task(self._prime_read(key), name=f"prime {key}")
        self._priming[key] = task
        task.add_done_callback(lambda t: self._priming.pop(key, None) if self._priming.get(key) is t else None)

    async def primed(self) -> None:
        """Wait until the starting canaries' counters are read (see _prime)."""
        if self._priming:
            await asyncio.gather(*self._priming.values(), return_exceptions=True)

    async def _prime_read(self, key: str) -> None:
        """The counters' totals and stable's history, read at once: two round trips would delay the first tick."""
        worker = self.workers.get(key)
        if worker is None:
            return
        totals, history = await asyncio.gather(
            self.reader.prime([key], gauge_window=self._gauge_window()),
            self.reader.history(key, interval=worker.config.settings.interval, end=self.clock()),
            return_exceptions=True)
        if isinstance(totals, Exception):  # a failed prime only means the old behaviour: the first read sets it
            log.warning("could not read a starting canary's counters", extra={"canary": key, "error": str(totals)})
        # Stable's last intervals show whether its errors come in bursts, which the first ticks cannot.
        if isinstance(history, Exception):  # without it the first ticks are read as a little bursty
            log.warning("could not read stable's history", extra={"canary": key, "error": str(history)})
        elif self.workers.get(key) is worker:
            worker.take_history(history)

    async def stop(self) -> None:
        for p in list(self._priming.values()):
            p.cancel()
        tasks = [t for w in self.workers.values() if (t := w.stop()) is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    async def drain(self, timeout: float) -> None:
        """Wait, for `timeout` seconds at most, until what the canary tasks have queued (commands, route
        writes) is done: a stop lets them finish rather than cut a write in half."""
        live = [w.barrier() for w in self.workers.values()]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*live, return_exceptions=True), timeout)

    async def reload(self, config: Config) -> None:
        """Apply a new config: new canaries start idle, removed ones stop, the others keep their place."""
        new = {c.key: c for c in config.canaries}
        self.reader.configure(config.canaries)
        for key in list(self.workers):
            if key not in new:
                worker = self.workers.pop(key)
                worker.stop()
                self.metrics.forget(worker.config.namespace, worker.config.name)
        for key, canary in new.items():
            if key in self.workers:
                self.workers[key].reconfigure(canary)
            else:
                await self._add(canary)
        self.config = config
        self.metrics.detail = config.server.metrics_detail.value
        self._index = CanaryIndex([(c.namespace, c.name) for c in config.canaries])

    def tick_interval(self) -> float:
        """Time between ticks: the shortest analysis interval, divided among the slots (see `slots`)."""
        base = self._base_interval()
        pos, k = self._round
        self._interval = max(base / (k if pos else self.slots()), min(base, MIN_SLOT_TICK))
        return self._interval

    @property
    def round_position(self) -> tuple[int, int]:
        """(the next tick's slot, the slots of the round it is in): 0 is a round's first tick."""
        return self._round

    def _gauge_window(self) -> float:
        """The window of a read's gauges (CPU, memory): two ticks, a minute at least. From the last tick's
        interval: `tick_interval` counts the judged canaries, a loop over all of them at a round's start."""
        return max(60.0, 2 * (self._interval or self._base_interval()))

    def _base_interval(self) -> float:
        if self._base[0] is not self.config:  # once per config: a loop over 10,000 canaries is ~5 ms
            intervals = [c.settings.interval for c in self.config.canaries] or [self.config.defaults.interval]
            self._base = (self.config, max(0.2, min(intervals)))
        return self._base[1]

    def slots(self, active: int | None = None) -> int:
        """Many progressing canaries are read in slots, one slot per tick, each canary once per interval:
        every tick stays small (the same 4 queries, a bounded share of the judging) however many there are.
        Slots are SLOT_SIZE canaries, but never so many that a round of them (a tick each, MIN_SLOT_TICK
        apart at least) outlasts the interval: 10,000 canaries at 30 s are 30 slots of 334."""
        if active is None:
            active = sum(1 for w in self.workers.values() if judged(w.rollout))
        fit = max(1, math.floor(self._base_interval() / MIN_SLOT_TICK + 1e-9))
        return max(1, min(math.ceil(active / SLOT_SIZE), fit))

    async def run_ticks(self) -> None:
        """The analysis loop; runs until cancelled."""
        interval = self.tick_interval()
        next_at = time.monotonic() + interval
        while True:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
            if next_at < time.monotonic():  # a slow tick: skip, do not pile up
                next_at = time.monotonic() + interval
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.exception("tick failed")
                self.health.set_problem("analysis", f"tick failed: {type(e).__name__}: {e}")
            interval = self.tick_interval()

    # ------------------------------------------------------------------------------------------ ticks

    async def refresh_from_routes(self) -> None:
        """Every canary re-reads its saved state (a new leader starts from what the routes say)."""
        await asyncio.gather(*(w.refresh() for w in self.workers.values()), return_exceptions=True)

    async def tick(self) -> int:
        """Select the canaries to read, read their increments, post them. Returns the number of queries."""
        now = self.clock()
        self.last_tick_at = now
        if not self.leadership.is_leader:
            # Followers do not judge. They retry a rollback they took (from an alert, say) whose write
            # failed, and keep their view current from the routes: once per interval (a command does not
            # need it fresh: a stale view is refused by the route's compare-and-set and decided again),
            # and each tick while a read is failing, so that the problem clears as soon as it reads again.
            calm = []
            for w in self.workers.values():
                if w.pending_rollback is not None:
                    w.post(Tick(now, ArmSnapshot(), ArmSnapshot()))
                elif w.error is not None:
                    w.post(Refresh())
                else:
                    calm.append(w)
            self._refresh_views(now, calm)
            return 0
        await self.primed()  # a starting canary's totals first: its first read is an increment since then
        scan = await self._scan()
        round_starts = self._round[0] == 0
        progressing, active = await self._select(scan.judged)
        # Another replica may have paused or rolled back: the leader's view of the canaries it does not
        # judge now follows the routes too (a judged one re-reads its route before each judgement).
        self._refresh_views(now, scan.paused)
        self._retry_rollbacks(now, scan.pending, {w.key for w in active})
        if round_starts:  # once a round: a restart primes afresh anyway (reader.prime)
            self.reader.keep({w.key for w in progressing})
        if not active:
            self.health.clear("prometheus")  # nothing reads it now: an old outage must not stick
            return 0
        # The slot in parts of READ_PART canaries (MAX_READ_PARTS at most): decoding one answer of 200
        # canaries' series holds the loop for tens of ms; a part's, a few. Each part is posted once read.
        parts = min(MAX_READ_PARTS, math.ceil(len(active) / READ_PART))
        window = self._gauge_window()
        queries = 0
        for i in range(parts):
            if i:
                await self.pacer.pause()  # a command in flight goes first
            part = active[i::parts]
            reading = await self.reader.read([w.key for w in part], gauge_window=window)
            self._post(now, part, reading)
            queries += reading.queries
        return queries

    async def _scan(self) -> _Scan:
        """One look at every canary, SCAN_CHUNK of them a pass of the loop: at 10,000 canaries the tick's
        looks together are ~10 ms, which a webhook arriving meanwhile would wait for. A canary's report
        ticks past its share of the budget are trimmed on the way (timeline.kept_per_rollout)."""
        scan = _Scan()
        workers = list(self.workers.values())
        keep = timeline.kept_per_rollout(len(workers))  # the report's ticks of all canaries within a budget
        async for w in self._paced(workers):
            r = w.rollout
            if len(r.ticks) > keep:
                w.rollout = r = replace(r, ticks=timeline.trimmed(r.ticks, keep))
            if judged(r):
                scan.judged.append(w)
            if r.phase is Phase.PAUSED:
                scan.paused.append(w)
            if w.pending_rollback is not None:
                scan.pending.append(w)
        return scan

    async def _select(self, progressing: list[CanaryWorker]) -> tuple[list[CanaryWorker], list[CanaryWorker]]:
        """The judged canaries (progressing, or paused while still serving traffic: rollout.judged), and
        this tick's slot of them (see `slots`).

        The number of slots is fixed for a whole round: were it taken afresh each tick, a canary started
        or stopped mid-round (1000 canaries are 5 slots, 1001 are 6) would move the others between slots,
        and some would miss the round. Slots are as even as can be, in the order of the canaries' places
        in the round (slot_of), so that when the number of slots changes between rounds a canary's reads
        stay about an interval apart."""
        slot, k = self._round
        if slot == 0:
            k = self.slots(len(progressing))
            self._slots = await self._balanced(progressing, k) if k > 1 else {}
        self._round = ((slot + 1) % k, k)
        if k == 1:
            return progressing, progressing
        # A canary that started during the round has no slot in it: its place in the round says. SCAN_CHUNK
        # canaries a pass of the loop, as in _scan: at 10,000 canaries the whole look is ~10 ms.
        slots, active = self._slots, []
        async for w in self._paced(progressing):
            key = w.key
            given = slots.get(key)
            if (slot_of(key, k) if given is None else given) == slot:
                active.append(w)
        return progressing, active

    async def _balanced(self, progressing: list[CanaryWorker], k: int) -> dict[str, int]:
        """balanced_slots of the canaries, their places hashed in the paced walk and kept from the last round:
        at 10,000 canaries, hashing and sorting in one step held the loop for ~5-8 ms once a round."""
        old, places = self._places, {}
        async for w in self._paced(progressing):
            key = w.key
            place = old.get(key)
            places[key] = place_of(key) if place is None else place
        self._places = places
        return balanced_slots(list(places), k, places.__getitem__)

    async def _paced(self, workers: list[CanaryWorker]) -> AsyncIterator[CanaryWorker]:
        """`workers` one by one, SCAN_CHUNK of them a pass of the loop (a command in flight goes first)."""
        for i in range(0, len(workers), SCAN_CHUNK):
            if i:
                await self.pacer.pause()
            for w in workers[i:i + SCAN_CHUNK]:
                yield w

    def _refresh_views(self, now: float, workers: list[CanaryWorker]) -> None:
        """Post a Refresh to each of `workers` whose route was not re-read within its interval."""
        for w in workers:
            if now - self._viewed_at.get(w.key, -math.inf) >= w.config.settings.interval:
                self._viewed_at[w.key] = now
                w.post(Refresh())

    def _retry_rollbacks(self, now: float, pending: list[CanaryWorker], active: set[str]) -> None:
        for w in pending:
            if w.pending_rollback is not None and w.key not in active:
                w.post(Tick(now, ArmSnapshot(), ArmSnapshot()))  # not progressing: the tick only retries the write

    def _post(self, now: float, active: list[CanaryWorker], reading: Reading) -> None:
        if reading.failure is not None:
            self._refresh_views(now, active)  # no judgement, so no re-read before one: re-read here
            self.health.set_problem("prometheus", reading.failure)
            for w in active:
                w.post(SourceDown(now, reading.failure))
            return
        self.health.clear("prometheus")
        if reading.errors:
            log.warning("some Prometheus queries failed", extra={"errors": reading.errors})
        for w in active:
            if w.key in reading.implausible:
                # Impossible totals are a fault of the source, not evidence: hold, say why, count it.
                self.metrics.prometheus_error("bad_response")
                w.post(SourceDown(now, reading.implausible[w.key]))
                continue
            canary, stable = reading.increments[w.key]
            w.post(Tick(now, canary, stable))

    # ------------------------------------------------------------------------------------------ commands

    def worker(self, namespace: str, name: str) -> CanaryWorker:
        w = self.workers.get(f"{namespace}/{name}")
        if w is None:
            raise UnknownCanary(f"no canary {namespace}/{name}; configured: "
                                + (", ".join(sorted(self.workers)) or "none"))
        return w

    async def command(self, namespace: str, name: str, verb: str, *, trigger: Trigger = Trigger.MANUAL,
                      reason: str | None = None, emergency: bool = False, step: int = 0) -> dict[str, Any]:
        """Apply a verb and return the canary's status once it is done. Any replica takes a rollback or a
        pause (written as a compare-and-set on the route, see leader.py); the others need the leader."""
        w = self.worker(namespace, name)
        if verb not in SAFE_VERBS and not self.leadership.is_leader:
            raise NotLeader(f"this replica is not the leader; {verb} is done by the leader (rollback and pause "
                            "are taken by any replica)")
        # Awaited in this task, with no task, shield or wait_for in between: the answer is ready the pass
        # of the loop after the canary's task applied it (each of those added a pass, under load a few ms).
        # A command that outlives the wait stays queued and is still applied (the canary's task handles
        # it whether or not anyone waits), so it is answered "queued", never "retry".
        try:
            with self.pacer.urgent(w.key):  # judgements of other canaries wait until it is applied
                async with asyncio.timeout(COMMAND_TIMEOUT):
                    status = await w.submit(Command(verb, trigger, reason, emergency, step))
        except TimeoutError:
            raise CommandQueued(namespace, name, verb) from None
        await self._settle_prime(w.key)
        return status

    async def _settle_prime(self, key: str) -> None:
        """A command that started an analysis (start, resume) answers once its first reads are done (or after
        PRIME_WAIT): its caller's next look finds the analysis counting, and a caller's next request does
        not share the loop with those reads. The reads go on regardless (never cancelled here)."""
        task = self._priming.get(key)
        if task is not None:
            await asyncio.wait((task,), timeout=PRIME_WAIT)

    async def handle_alerts(self, message: WebhookMessage) -> AlertReport:
        with self.pacer.urgent():  # judgements, scrapes and reads give way until the alerts are handled
            return await self._handle_alerts(message)

    async def _handle_alerts(self, message: WebhookMessage) -> AlertReport:
        rules = {r.alertname: r.action.value for r in self.config.alerts}
        outcomes = plan_alerts(message, self._index, rules, self.deduper)
        report = AlertReport()
        for o in outcomes:
            entry: dict[str, Any] = {"alertname": o.alertname, "status": o.status, "outcome": o.outcome,
                                     "canary": o.canary_key, "action": o.action}
            if o.outcome == "accepted" and o.action not in (None, AlertAction.IGNORE.value):
                entry["result"] = await self._apply_alert(o, report)
            self.metrics.alert_received(o.alertname or "unknown", o.status, o.outcome)
            report.outcomes.append(entry)
        return report

    async def _apply_alert(self, o: AlertOutcome, report: AlertReport) -> str:
        assert o.canary_key is not None
        namespace, name = o.canary_key.split("/", 1)
        summary = o.alert.annotations.get("summary") or o.alert.annotations.get("description") or ""
        reason = f"alert {o.alertname} firing" + (f": {summary}" if summary else "")
        verb = "rollback" if o.action == AlertAction.ROLLBACK.value else "pause"
        try:
            await self.command(namespace, name, verb, trigger=Trigger.ALERT, reason=reason)
        except TransitionError as e:
            return f"no change: {e}"
        except CommandQueued as e:
            report.queued = True  # not forgotten: the queued action will be applied, a redelivery is a duplicate
            return f"queued: {e}"
        except (ActuationError, NotLeader) as e:
            # Forget it, so that Alertmanager's retry is not taken for a duplicate.
            self.deduper.forget(o.alert)
            report.retry = True
            return f"not applied, retry: {e or type(e).__name__}"
        return f"{verb} applied"

    # ------------------------------------------------------------------------------------------ status

    def canaries(self) -> list[dict[str, Any]]:
        return [w.status() for w in self.workers.values()]



def balanced_slots(keys: list[str], slots: int, place: Callable[[str], int] | None = None) -> dict[str, int]:
    """Each of `keys` a slot among `slots`, as many in each (±1), in the order of their places (place_of,
    or `place` when it is known already; ties in the order of `keys`): a canary's slot is about its place in
    the round (slot_of), whatever the number of slots."""
    order = sorted(keys, key=place or place_of)
    return {k: i * slots // len(order) for i, k in enumerate(order)}


def place_of(key: str) -> int:
    """A canary's place in the round: its key's hash, in [0, 2**32)."""
    return zlib.crc32(key.encode())


def slot_of(key: str, slots: int) -> int:
    """A canary's slot among `slots`: its place as a fraction of the round, so the same canary keeps about
    the same moment in the interval whatever the number of slots."""
    return (place_of(key) * slots) >> 32
