"""The demo from start to finish: start everything, run the scenarios, report, stop everything.

Topology, all on 127.0.0.1:

    traffic ──► auth-service-stable / auth-service-canary (built-in services, split by canaryd's weight)
    Prometheus ──scrapes──► both services and canaryd's /metrics; evaluates rules/ ──► Alertmanager
    Alertmanager ──webhook (bearer token)──► canaryd ──queries──► Prometheus
    canaryd (in this process, dry-run router) ──► the weight the traffic generator reads

The scenarios run one after the other on the same canary. Before each one after the first,
Prometheus restarts with an empty database: rules/ judge 5 minute windows, and the previous
scenario's canary traffic would otherwise dilute the next one's error rate for minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import yaml

from ..config import parse_config, parse_duration
from ..daemon import Daemon
from ..logs import JsonFormatter, TextFormatter
from .report import LEGEND, ScenarioResult, decision_line, stamp, summary
from .servers import HOST, AlertmanagerServer, PrometheusServer, ServerError, free_port
from .service import Behaviour, DemoService
from .traffic import ACTIVE_PHASES, Split, TrafficGenerator
from .watch import PromAlert, ReceivedKey, Watch, WatchError

NAMESPACE = "orion"
SERVICE = "auth-service"
RACE_ALERT = "CanaryHighErrorRate"
TERMINAL = ("succeeded", "rolled_back", "paused")
EXPECTED = {"good": "succeeded", "bad": "rolled_back"}
SCENARIOS = ("good", "bad")

T = TypeVar("T")


class DemoError(RuntimeError):
    """The demo could not set itself up or lost a part; the message says which and why."""


@dataclass(frozen=True)
class DemoSettings:
    rps: float = 150.0  # total, both arms
    header_share: float = 0.03  # requests carrying x-canary: true
    steps: tuple[int, ...] = (5, 25, 50, 100)
    step_duration: float = 15.0
    interval: float = 2.0
    min_requests: int = 100
    # A 5 % step of a demo-sized service sees a few hundred requests: the upper bound on its error rate
    # cannot come within 1 point of stable's in 15 s, so the demo allows 2.
    tolerance_pp: float = 2.0
    healthy: Behaviour = field(default_factory=Behaviour)
    failing: Behaviour = field(default_factory=lambda: Behaviour(error_rate=0.25))
    fail_after: float = 6.0  # seconds into the bad rollout
    good_timeout: float = 100.0
    alert_wait: float = 50.0  # after the failure begins, how long the demo waits for the alert
    scrape_interval: float = 1.0
    seed: int = 20240611


DEFAULT = DemoSettings()
# Shorter steps for CI; the alert keeps its real timing (rules/ as they are), so the bad scenario does not shrink.
FAST = DemoSettings(rps=200.0, header_share=0.05, step_duration=8.0, interval=1.0, min_requests=60,
                    tolerance_pp=3.0, fail_after=4.0, good_timeout=75.0)
STARTUP = 10.0  # seconds: services, canaryd, Alertmanager, Prometheus, the first scrapes
RESTART = 8.0  # Prometheus again, with an empty database, between scenarios


def worst_case_seconds(s: DemoSettings, scenarios: Sequence[str] = SCENARIOS) -> float:
    """The longest the scenarios can run before the demo gives up on them: the "under 3 minutes" promise."""
    total = STARTUP + RESTART * (len(scenarios) - 1)
    for name in scenarios:
        total += s.good_timeout if name == "good" else 2 + s.fail_after + s.alert_wait
    return total


def find_rules(explicit: str | None = None) -> Path:
    """The rules/ directory: `explicit`, $CANARYD_RULES_DIR, the source tree's, or ./rules."""
    candidates = [Path(explicit)] if explicit else []
    if os.environ.get("CANARYD_RULES_DIR"):
        candidates.append(Path(os.environ["CANARYD_RULES_DIR"]))
    candidates += [Path(__file__).resolve().parents[3] / "rules", Path.cwd() / "rules"]
    for c in candidates:
        if (c / "canary-alerts.yml").is_file():
            return c
    if explicit:
        raise DemoError(f"{explicit}: no canary-alerts.yml there; give the repository's rules/ directory")
    raise DemoError("cannot find rules/ (canary-alerts.yml); run from the repository or pass --rules DIR")


def rule_files(rules: Path) -> list[Path]:
    return sorted(p for p in rules.glob("*.yml") if p.is_file())


def alert_for_seconds(rules: Path, alertname: str) -> float | None:
    """The `for:` of an alerting rule in rules/, so the demo states the alert's real timing."""
    for path in rule_files(rules):
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue
        for group in doc.get("groups") or ():
            for rule in group.get("rules") or ():
                if rule.get("alert") == alertname:
                    return parse_duration(rule.get("for", "0s"))
    return None


def daemon_config(s: DemoSettings, *, port: int, prometheus_url: str, token_file: Path) -> dict[str, Any]:
    """The daemon's config, as a user would write it (config v1)."""
    return {
        "server": {"listen": f"{HOST}:{port}", "webhook_token_file": str(token_file)},
        "prometheus": {"url": prometheus_url, "timeout": "5s", "retries": 1},
        "kubernetes": {"enabled": False},
        "defaults": {
            "traffic_steps": list(s.steps),
            "step_duration": f"{s.step_duration:g}s",
            "interval": f"{s.interval:g}s",
            "min_requests": s.min_requests,
            "auto_promote": True,
            "tolerance_pp": s.tolerance_pp,
        },
        "canaries": [{
            "name": SERVICE,
            "namespace": NAMESPACE,
            "route": SERVICE,
            "stable": {"deployment": f"{SERVICE}-stable", "selector": f'job="{SERVICE}-stable"'},
            "canary": {"deployment": f"{SERVICE}-canary", "selector": f'job="{SERVICE}-canary"'},
        }],
    }


@contextlib.contextmanager
def daemon_logs(path: Path) -> Iterator[None]:
    """The daemon's JSON logs go to a file; only errors reach the terminal (on stderr)."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(JsonFormatter())
    to_err = logging.StreamHandler()
    to_err.setFormatter(TextFormatter())
    to_err.setLevel(logging.ERROR)
    root.handlers[:] = [to_file, to_err]
    root.setLevel(logging.INFO)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.handlers[:], root.level = saved
        to_file.close()


@dataclass
class AlertTrack:
    """One scenario's view of an alert: when Prometheus had it pending and firing, when canaryd got it."""

    pending_at: float | None = None
    firing_at: float | None = None
    received: list[tuple[float, ReceivedKey, int]] = field(default_factory=list)  # (time, key, how many)

    def first_firing_received(self) -> tuple[float, ReceivedKey] | None:
        firing = [(t, k) for t, k, _ in self.received if k.status == "firing"]
        return firing[0] if firing else None


class Demo:
    """One run of the demo. `results` fills as scenarios end; `run()` returns when they have all run
    (or, with keep_running, when cancelled). Everything it started is stopped in `run()`'s finally."""

    def __init__(self, settings: DemoSettings, *, scenarios: Sequence[str], rules: Path, workdir: Path,
                 out: Callable[[str], None], keep_running: bool = False) -> None:
        unknown = [s for s in scenarios if s not in SCENARIOS]
        if unknown:
            raise ValueError(f"unknown scenarios {unknown}; allowed: {', '.join(SCENARIOS)}")
        self.s = settings
        self.scenarios = list(scenarios)
        self.rules = rules
        self.workdir = workdir
        self.out = out
        self.keep_running = keep_running
        self.results: list[ScenarioResult] = []
        self.finished = False  # every scenario has run
        self.rng = random.Random(settings.seed)
        self.t0 = time.time()
        self.tag = "setup"
        self.status: dict[str, Any] = {}
        self.status_at = 0.0  # when the request that read `status` was sent
        self.split = Split()
        self.alerts: dict[str, AlertTrack] = {}
        self._printed: set[tuple[Any, ...]] = set()
        self._received: dict[ReceivedKey, float] = {}
        self._prom_state: dict[str, str] = {}
        self.canaryd_port = free_port()
        self.stable = DemoService(f"{SERVICE}-stable", settings.healthy, rng=random.Random(settings.seed + 1))
        self.canary = DemoService(f"{SERVICE}-canary", settings.healthy, rng=random.Random(settings.seed + 2))
        self.prometheus: PrometheusServer | None = None
        self.alertmanager: AlertmanagerServer | None = None
        self.daemon: Daemon | None = None
        self._watch: Watch | None = None  # set once Prometheus runs
        self.traffic: TrafficGenerator | None = None
        self._daemon_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[Any]] = []  # traffic and polling

    # ------------------------------------------------------------------------------------------ output

    @property
    def watch(self) -> Watch:
        assert self._watch is not None, "the demo has not started"
        return self._watch

    @property
    def canaryd_url(self) -> str:
        return f"http://{HOST}:{self.canaryd_port}"

    def say(self, text: str, at: float | None = None) -> None:
        when = (at if at is not None else time.time()) - self.t0
        self.out(f"{stamp(when)} {self.tag:<5} {text}")

    def urls(self) -> list[str]:
        lines = [f"  canaryd metrics   {self.canaryd_url}/metrics",
                 f"  canaryd canaries  {self.canaryd_url}/api/v1/canaries",
                 f"  this canary       {self.canaryd_url}/api/v1/canaries/{NAMESPACE}/{SERVICE}"]
        if self.prometheus is not None:
            lines.append(f"  Prometheus        {self.prometheus.url}/alerts")
        if self.alertmanager is not None:
            lines.append(f"  Alertmanager      {self.alertmanager.url}")
        return lines

    # ------------------------------------------------------------------------------------------ life

    async def run(self) -> None:
        with daemon_logs(self.workdir / "canaryd.log"):
            try:
                async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session:
                    try:
                        await self._start(session)
                        await self._until_daemon_stops(self._scenarios())
                        self.finished = True
                        self._summary()
                        if self.keep_running:
                            self.tag = "idle"
                            self.out("\nEverything stays up, with traffic, until Ctrl-C:")
                            for line in self.urls():
                                self.out(line)
                            await self._until_daemon_stops(asyncio.Event().wait())
                    finally:
                        await self._stop()
            finally:
                self._stop_servers()

    async def _start(self, session: aiohttp.ClientSession) -> None:
        s = self.s
        token = secrets.token_urlsafe(24)
        token_file = self.workdir / "webhook-token"
        token_file.write_text(token + "\n", encoding="utf-8")
        token_file.chmod(0o600)
        prom_port = free_port()
        raw = daemon_config(s, port=self.canaryd_port, prometheus_url=f"http://{HOST}:{prom_port}",
                            token_file=token_file)
        (self.workdir / "canaryd.yml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
        config = parse_config(raw, str(self.workdir / "canaryd.yml"))

        await self.stable.start(free_port())
        await self.canary.start(free_port())
        self.daemon = Daemon(config=config)
        self._daemon_task = daemon_task = asyncio.create_task(self.daemon.run(), name="canaryd")
        ready = asyncio.create_task(self.daemon.ready.wait())
        await asyncio.wait({ready, daemon_task}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
        if not self.daemon.ready.is_set():
            ready.cancel()
            if daemon_task.done() and not daemon_task.cancelled() and daemon_task.exception() is not None:
                raise DemoError(f"canaryd did not start: {daemon_task.exception()}")
            raise DemoError("canaryd did not start listening within 15 s")

        webhook = f"{self.canaryd_url}/webhooks/alertmanager"
        self.alertmanager = AlertmanagerServer(webhook, token, workdir=self.workdir / "alertmanager")
        _start_server(self.alertmanager)
        scrape = [
            _job(f"{SERVICE}-stable", self.stable.port),
            _job(f"{SERVICE}-canary", self.canary.port),
            _job("canaryd", self.canaryd_port),
        ]
        every = f"{s.scrape_interval:g}s"
        self.prometheus = PrometheusServer(rule_files=rule_files(self.rules), scrape_interval=every,
                                           evaluation_interval=every, extra_scrape_configs=scrape,
                                           alertmanagers=[self.alertmanager.address],
                                           workdir=self.workdir / "prometheus", port=prom_port)
        _start_server(self.prometheus)
        self._watch = Watch(session, canaryd_url=self.canaryd_url, prometheus_url=self.prometheus.url)
        self._describe()
        await self.watch.wait_targets_up(3)

        self.traffic = TrafficGenerator(session, stable_url=self.stable.url, canary_url=self.canary.url,
                                        split=lambda: self.split, rps=s.rps, header_share=s.header_share,
                                        rng=self.rng)
        self._tasks.append(asyncio.create_task(self.traffic.run(), name="traffic"))
        self._tasks.append(asyncio.create_task(self._poll(), name="poll"))

    def _describe(self) -> None:
        s = self.s
        assert self.prometheus is not None and self.alertmanager is not None
        steps = " → ".join(str(w) for w in s.steps)
        for_s = alert_for_seconds(self.rules, RACE_ALERT)
        self.out("canaryd demo: the whole system on loopback (dry-run router; real Prometheus and Alertmanager)")
        self.out(f"  canaryd       {self.canaryd_url}  (in this process; steps {steps} %, "
                 f"{s.step_duration:g} s each at least, a tick every {s.interval:g} s, "
                 f"{s.min_requests} requests per arm, auto_promote)")
        self.out(f"  prometheus    {self.prometheus.url}  pid {self.prometheus.pid}  "
                 f"(rules/: {', '.join(p.name for p in rule_files(self.rules))}; "
                 f"scrape and evaluation every {s.scrape_interval:g} s)")
        self.out(f"  alertmanager  {self.alertmanager.url}  pid {self.alertmanager.pid}  "
                 f"(→ {self.canaryd_url}/webhooks/alertmanager with a bearer token, send_resolved, "
                 "group_wait 0s, group_interval 1s)")
        self.out(f"  services      {SERVICE}-stable {self.stable.url}, {SERVICE}-canary {self.canary.url} "
                 f"(namespace {NAMESPACE})")
        self.out(f"  traffic       {s.rps:g} requests/s split by canaryd's weight; {100 * s.header_share:g} % carry "
                 "x-canary: true and go to the canary while a rollout is on")
        if for_s is not None:
            self.out(f"  race          {RACE_ALERT} (rules/: for {for_s:g}s over 5m windows) against canaryd's "
                     "own analysis")
        self.out(f"  files         {self.workdir} (canaryd.yml, canaryd.log, prometheus/, alertmanager/)")
        self.out(f"  {LEGEND}")

    async def _until_daemon_stops(self, work: Awaitable[T]) -> T:
        """Run `work`, but fail at once if the daemon stops under it."""
        daemon_task = self._daemon_task
        assert daemon_task is not None
        job = asyncio.ensure_future(work)
        try:
            await asyncio.wait({job, daemon_task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not job.done():
                job.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await job
        if job.done() and not job.cancelled():
            return job.result()
        exc = daemon_task.exception() if daemon_task.done() and not daemon_task.cancelled() else None
        raise DemoError(f"canaryd stopped: {exc or 'without an error'}")

    async def _stop(self) -> None:
        """Traffic and polling, then the daemon (it finishes what it is writing), then the services."""
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        daemon_task = self._daemon_task
        if self.daemon is not None and daemon_task is not None:
            self.daemon.stop()
            try:
                await asyncio.wait_for(asyncio.shield(daemon_task), 8)
            except (TimeoutError, asyncio.CancelledError):
                daemon_task.cancel()
            except Exception as e:  # noqa: BLE001 - reported; the rest of the clean-up still runs
                self.out(f"canaryd stopped with an error: {e}")
            await asyncio.gather(daemon_task, return_exceptions=True)
        for svc in (self.stable, self.canary):
            await svc.stop()

    def _stop_servers(self) -> None:
        for server in (self.prometheus, self.alertmanager):
            if server is not None:
                server.stop()
                shutil.rmtree(server.workdir / "data", ignore_errors=True)

    # ------------------------------------------------------------------------------------------ polling

    async def _poll(self) -> None:
        """Read canaryd's API and /metrics every 0.25 s, Prometheus' alerts every 0.5 s; print what changed."""
        n = 0
        while True:
            sent = time.time()
            with contextlib.suppress(WatchError):
                status = await self.watch.canary(NAMESPACE, SERVICE)
                self._on_status(status, sent)
            with contextlib.suppress(WatchError):
                self._on_received(await self.watch.alerts_received())
            if n % 2 == 0:
                with contextlib.suppress(WatchError):
                    self._on_prometheus_alerts(await self.watch.prometheus_alerts())
            n += 1
            await asyncio.sleep(0.25)

    def _on_status(self, status: dict[str, Any], sent: float) -> None:
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
            self.say(decision_line(entry, same, self.s.steps), at=None)

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
                    self.say(f"webhook   {key.alertname} {key.status} reached canaryd: {what}{self._effect(key)}")
            self._received[key] = value

    def _effect(self, key: ReceivedKey) -> str:
        if key.outcome != "accepted" or key.status != "firing":
            return ""
        history = self.status.get("history") or ()
        by_alert = any(h.get("decision") == "rollback" and h.get("trigger") == "alert" for h in history)
        if by_alert:
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
                track.pending_at = _rfc3339(active_at[name]) or now
            if state == "firing" and track.firing_at is None:
                track.firing_at = now
            self.say(f"alert     {name} {state} in Prometheus")
        for name in set(self._prom_state) - set(states):
            self.say(f"alert     {name} inactive in Prometheus")
        self._prom_state = states

    # ------------------------------------------------------------------------------------------ scenarios

    async def _scenarios(self) -> None:
        for i, name in enumerate(self.scenarios):
            if i > 0:
                await self._fresh_prometheus()
            self.alerts = {}
            result = await (self._good() if name == "good" else self._bad())
            self.results.append(result)
            self.tag = name
            verdict = "as expected" if result.ok else f"UNEXPECTED (expected {result.expected})"
            self.say(f"result    {result.phase}, {result.seconds:.1f} s after {result.since}: {verdict}")
            if result.note:
                self.say(f"result    {result.note}")

    async def _fresh_prometheus(self) -> None:
        assert self.prometheus is not None
        self.tag = "setup"
        self.say("restarting Prometheus with an empty database, so that the last scenario's canary traffic "
                 "does not dilute rules/' 5m windows")
        self.prometheus.stop()
        shutil.rmtree(self.prometheus.data_dir, ignore_errors=True)
        _start_server(self.prometheus)
        self._prom_state = {}
        self.out(f"{'':9} {'':5} prometheus pid {self.prometheus.pid}")
        await self.watch.wait_targets_up(3)

    async def _start_rollout(self) -> float:
        started = time.time()
        status = await self.watch.command(NAMESPACE, SERVICE, "start")
        self._on_status(status, started)
        return started

    async def _wait_phase(self, since: float, deadline: float) -> str:
        """Wait until a status read after `since` shows a final phase, or the deadline; the phase then."""
        while time.time() < deadline:
            if self.status_at > since and self.status.get("phase") in TERMINAL:
                break
            await asyncio.sleep(0.1)
        return str(self.status.get("phase", "unknown"))

    def _final(self, kinds: Sequence[str]) -> dict[str, Any] | None:
        return next((h for h in reversed(self.status.get("history") or ()) if h.get("decision") in kinds), None)

    async def _good(self) -> ScenarioResult:
        s = self.s
        self.tag = "good"
        self.out("")
        self.out(f"== Scenario 1 (good): a healthy canary ({100 * s.healthy.error_rate:g} % 5xx, "
                 f"P95 ~{s.healthy.p95_ms():.0f} ms, like stable) should walk "
                 f"{' → '.join(str(w) for w in s.steps)} % and be promoted ==")
        self.canary.behaviour = s.healthy
        started = await self._start_rollout()
        phase = await self._wait_phase(started, started + s.good_timeout)
        seconds = time.time() - started
        final = self._final(("promoted", "rollback"))
        note = ""
        if phase == "succeeded" and final is not None:
            seconds = float(final["at"]) - started
            note = f"promoted {seconds:.1f} s after the start, {len(s.steps)} steps"
        elif phase not in TERMINAL:
            note = (f"still {phase} at {self.status.get('weight')} % after {s.good_timeout:g} s: "
                    + "; ".join((self.status.get("last_decision") or {}).get("reasons") or ()))
        elif final is not None:
            note = f"{final.get('decision')} by {final.get('trigger')}: {'; '.join(final.get('reasons') or ())}"
        else:
            note = str(self.status.get("paused_reason") or "")
        return ScenarioResult("good", EXPECTED["good"], phase, seconds,
                              trigger=None if final is None else str(final.get("trigger")), note=note)

    async def _bad(self) -> ScenarioResult:
        s = self.s
        self.tag = "bad"
        self.out("")
        self.out(f"== Scenario 2 (bad): the canary starts answering {100 * s.failing.error_rate:g} % of its "
                 f"requests with 500, {s.fail_after:g} s into the rollout; canaryd's analysis and "
                 f"{RACE_ALERT} race to roll it back ==")
        self.canary.behaviour = s.healthy
        started = await self._start_rollout()
        await self._wait_phase(started, started + s.fail_after)
        failed_at = time.time()
        if self.status.get("phase") in TERMINAL:
            return ScenarioResult("bad", EXPECTED["bad"], str(self.status.get("phase")), failed_at - started,
                                  note="the rollout ended before the canary started failing")
        self.canary.behaviour = s.failing
        self.say(f"FAILURE   the canary now answers {100 * s.failing.error_rate:g} % of requests with 500 (t0)")
        phase = await self._wait_phase(failed_at, failed_at + s.alert_wait)
        rollback = self._final(("rollback",))
        # The race is decided; keep going until the alert has arrived too, so the demo can show it.
        deadline = failed_at + s.alert_wait
        while time.time() < deadline and self._race_alert_received(failed_at) is None:
            await asyncio.sleep(0.25)
        await asyncio.sleep(0.5)  # one more poll: its outcome and first duplicates
        trigger = None if rollback is None else str(rollback.get("trigger"))
        seconds = (float(rollback["at"]) - failed_at) if rollback is not None else time.time() - failed_at
        return ScenarioResult("bad", EXPECTED["bad"], phase, seconds, since="the failure", trigger=trigger,
                              note=self._race(failed_at, rollback))

    def _race_alert_received(self, since: float) -> tuple[float, ReceivedKey] | None:
        track = self.alerts.get(RACE_ALERT)
        got = track.first_firing_received() if track else None
        return got if got is not None and got[0] >= since else None

    def _race(self, t0: float, rollback: dict[str, Any] | None) -> str:
        """Who rolled the bad canary back, how fast, and what became of the alert."""
        track = self.alerts.get(RACE_ALERT, AlertTrack())
        got = self._race_alert_received(t0)
        for_s = alert_for_seconds(self.rules, RACE_ALERT)
        parts: list[str] = []
        if rollback is None:
            parts.append("nobody rolled the canary back")
        else:
            winner = str(rollback.get("trigger"))
            parts.append(f"{winner} won: rolled back {float(rollback['at']) - t0:.1f} s after the failure began")
        seen = []
        if track.pending_at is not None:
            seen.append(f"pending at t0+{track.pending_at - t0:.1f} s")
        if track.firing_at is not None:
            seen.append(f"firing at t0+{track.firing_at - t0:.1f} s")
        prom = f" (in Prometheus: {', '.join(seen)})" if seen else ""
        if got is not None:
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
            parts.append(text)
        else:
            timing = f"rules/ give it `for: {for_s:g}s` over 5m windows, " if for_s is not None else ""
            parts.append(f"{RACE_ALERT} did not reach canaryd within the demo's {self.s.alert_wait:g} s"
                         f"{prom or ' (never pending in Prometheus)'}; {timing}plus scrape, evaluation and "
                         "Alertmanager delays")
        return "; ".join(parts)

    # ------------------------------------------------------------------------------------------ end

    def _summary(self) -> None:
        self.tag = "end"
        self.out("")
        self.out(f"== Summary ({time.time() - self.t0:.0f} s) ==")
        for line in summary(self.results):
            self.out(line)
        if self.traffic is not None:
            st = self.traffic.stats
            self.out(f"  traffic: {st.sent} requests sent, {st.to_canary} to the canary ({st.header_to_canary} of "
                     f"them by x-canary: true), {st.failed} answered 5xx, {st.errors} unanswered, {st.dropped} "
                     "not sent (in-flight limit)")
        self.out("URLs (up while the demo runs; --keep-running keeps them up):")
        for line in self.urls():
            self.out(line)
        ok = all(r.ok for r in self.results) and len(self.results) == len(self.scenarios)
        outcome = {"succeeded": "promoted", "rolled_back": "rolled back"}
        self.out(f"demo {'passed' if ok else 'FAILED'}: "
                 + ", ".join(f"{r.name} → {outcome.get(r.phase, r.phase)}" for r in self.results))

    def exit_code(self) -> int:
        ok = self.finished and all(r.ok for r in self.results) and len(self.results) == len(self.scenarios)
        return 0 if ok else 1


def _job(name: str, port: int | None) -> dict[str, Any]:
    return {"job_name": name,
            "static_configs": [{"targets": [f"{HOST}:{port}"], "labels": {"namespace": NAMESPACE}}]}


def _rfc3339(text: str) -> float | None:
    """Prometheus' timestamps (nanoseconds, Z) as epoch seconds; None when unreadable."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text or "")
    if m is None:
        return None
    base = datetime.fromisoformat(m.group(1) + ("+00:00" if m.group(3) == "Z" else m.group(3)))
    return base.timestamp() + float("0." + (m.group(2) or "0"))


def _start_server(server: AlertmanagerServer | PrometheusServer) -> None:
    try:
        server.start()
    except ServerError as e:
        raise DemoError(str(e)) from None
