"""The demo from start to finish: start everything, run the scenarios, report, stop everything.

Topology, all on 127.0.0.1:

    traffic ──► auth-service-stable / auth-service-canary (built-in services, split by canaryd's weight)
    Prometheus ──scrapes──► both services and canaryd's /metrics; evaluates rules/ ──► Alertmanager
    Alertmanager ──webhook (bearer token)──► canaryd ──queries──► Prometheus
    canaryd (`canaryd run`, dry-run router) ──► the weight the traffic generator reads from its API

The scenarios run one after the other on the same canary. Before each one after the first,
Prometheus restarts with an empty database: rules/ judge 5 minute windows, and the previous
scenario's canary traffic would otherwise dilute the next one's error rate for minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import yaml

from .observe import Observer
from .report import LEGEND, Console, ScenarioResult, summary
from .scenarios import Scenarios
from .servers import (
    HOST,
    AlertmanagerServer,
    CanarydServer,
    PrometheusServer,
    ServerError,
    ServerProcess,
    free_port,
)
from .service import DemoService
from .settings import (
    NAMESPACE,
    RACE_ALERT,
    SCENARIOS,
    SERVICE,
    DemoError,
    DemoSettings,
    alert_for_seconds,
    daemon_config,
    rule_files,
)
from .traffic import TrafficGenerator
from .watch import Watch

T = TypeVar("T")


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
        self.console = Console(out)
        self.observer = Observer(self.console, settings.steps)
        self.keep_running = keep_running
        self.results: list[ScenarioResult] = []
        self.finished = False  # every scenario has run
        self.rng = random.Random(settings.seed)
        self.canaryd_port = free_port()
        self.stable = DemoService(f"{SERVICE}-stable", settings.healthy, rng=random.Random(settings.seed + 1))
        self.canary = DemoService(f"{SERVICE}-canary", settings.healthy, rng=random.Random(settings.seed + 2))
        self.canaryd: CanarydServer | None = None
        self.prometheus: PrometheusServer | None = None
        self.alertmanager: AlertmanagerServer | None = None
        self._watch: Watch | None = None  # set once Prometheus runs
        self.traffic: TrafficGenerator | None = None
        self._tasks: list[asyncio.Task[Any]] = []  # traffic and polling

    @property
    def watch(self) -> Watch:
        assert self._watch is not None, "the demo has not started"
        return self._watch

    @property
    def canaryd_url(self) -> str:
        return f"http://{HOST}:{self.canaryd_port}"

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
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session:
                try:
                    await self._start(session)
                    await self._until_daemon_stops(self._scenarios())
                    self.finished = True
                    self._summary()
                    if self.keep_running:
                        self.console.tag = "idle"
                        self.console.out("\nEverything stays up, with traffic, until Ctrl-C:")
                        for line in self.urls():
                            self.console.out(line)
                        await self._until_daemon_stops(asyncio.Event().wait())
                finally:
                    await self._stop()
        finally:
            self._stop_servers()

    async def _start(self, session: aiohttp.ClientSession) -> None:
        token = secrets.token_urlsafe(24)
        prom_port = free_port()
        await self.stable.start(free_port())
        await self.canary.start(free_port())
        self.canaryd = self._canaryd(token, prometheus_url=f"http://{HOST}:{prom_port}")
        _start_server(self.canaryd)
        self.alertmanager = AlertmanagerServer(f"{self.canaryd_url}/webhooks/alertmanager", token,
                                               workdir=self.workdir / "alertmanager")
        _start_server(self.alertmanager)
        every = f"{self.s.scrape_interval:g}s"
        scrape = [_job(f"{SERVICE}-stable", self.stable.port), _job(f"{SERVICE}-canary", self.canary.port),
                  _job("canaryd", self.canaryd_port)]
        self.prometheus = PrometheusServer(scrape_configs=scrape, rule_files=rule_files(self.rules),
                                           alertmanagers=[self.alertmanager.address], interval=every,
                                           workdir=self.workdir / "prometheus", port=prom_port)
        _start_server(self.prometheus)
        self._watch = Watch(session, canaryd_url=self.canaryd_url, prometheus_url=self.prometheus.url)
        self._describe()
        await self.watch.wait_targets_up(3)

        self.traffic = TrafficGenerator(session, stable_url=self.stable.url, canary_url=self.canary.url,
                                        split=lambda: self.observer.split, rps=self.s.rps,
                                        header_share=self.s.header_share, rng=self.rng)
        self._tasks.append(asyncio.create_task(self.traffic.run(), name="traffic"))
        self._tasks.append(asyncio.create_task(self.observer.poll(self.watch), name="poll"))

    def _canaryd(self, token: str, *, prometheus_url: str) -> CanarydServer:
        """canaryd's config and webhook token as an operator writes them, in the work directory."""
        token_file = self.workdir / "webhook-token"
        token_file.write_text(token + "\n", encoding="utf-8")
        token_file.chmod(0o600)
        raw = daemon_config(self.s, port=self.canaryd_port, prometheus_url=prometheus_url, token_file=token_file)
        config_path = self.workdir / "canaryd.yml"
        config_path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
        return CanarydServer(config_path, port=self.canaryd_port, workdir=self.workdir)

    def _describe(self) -> None:
        s, out = self.s, self.console.out
        assert self.prometheus is not None and self.alertmanager is not None
        steps = " → ".join(str(w) for w in s.steps)
        for_s = alert_for_seconds(self.rules, RACE_ALERT)
        out("canaryd demo: the whole system on loopback (dry-run router; real Prometheus and Alertmanager)")
        out(f"  canaryd       {self.canaryd_url}  (`canaryd run`; steps {steps} %, "
            f"{s.step_duration:g} s each at least, a tick every {s.interval:g} s, "
            f"{s.min_requests} requests per arm, auto_promote)")
        out(f"  prometheus    {self.prometheus.url}  pid {self.prometheus.pid}  "
            f"(rules/: {', '.join(p.name for p in rule_files(self.rules))}; "
            f"scrape and evaluation every {s.scrape_interval:g} s)")
        out(f"  alertmanager  {self.alertmanager.url}  pid {self.alertmanager.pid}  "
            f"(→ {self.canaryd_url}/webhooks/alertmanager with a bearer token, send_resolved, "
            "group_wait 0s, group_interval 1s)")
        out(f"  services      {SERVICE}-stable {self.stable.url}, {SERVICE}-canary {self.canary.url} "
            f"(namespace {NAMESPACE})")
        out(f"  traffic       {s.rps:g} requests/s split by canaryd's weight; {100 * s.header_share:g} % carry "
            "x-canary: true and go to the canary while a rollout is on")
        if for_s is not None:
            out(f"  race          {RACE_ALERT} (rules/: for {for_s:g}s over 5m windows) against canaryd's "
                "own analysis")
        out(f"  files         {self.workdir} (canaryd.yml, canaryd.log, prometheus/, alertmanager/)")
        out(f"  {LEGEND}")

    async def _until_daemon_stops(self, work: Awaitable[T]) -> T:
        """Run `work`, but fail at once if canaryd exits under it."""
        assert self.canaryd is not None
        exited = asyncio.ensure_future(_exit_code(self.canaryd))
        job = asyncio.ensure_future(work)
        try:
            await asyncio.wait({job, exited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (job, exited):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        if job.done() and not job.cancelled():
            return job.result()
        assert self.canaryd is not None
        raise DemoError(f"canaryd exited with code {exited.result()}\n{self.canaryd.log_tail()}")

    async def _stop(self) -> None:
        """Traffic and polling, then canaryd (it finishes what it is writing), then the services."""
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.canaryd is not None:
            await asyncio.to_thread(self.canaryd.stop)
        for svc in (self.stable, self.canary):
            await svc.stop()

    def _stop_servers(self) -> None:
        for server in (self.canaryd, self.prometheus, self.alertmanager):
            if server is not None:
                server.stop()
        for server in (self.prometheus, self.alertmanager):
            if server is not None:
                shutil.rmtree(server.data_dir, ignore_errors=True)

    # ------------------------------------------------------------------------------------------ scenarios

    async def _scenarios(self) -> None:
        scenarios = Scenarios(self.s, rules=self.rules, console=self.console, observer=self.observer,
                              watch=self.watch, canary=self.canary)
        for i, name in enumerate(self.scenarios):
            if i > 0:
                await self._fresh_prometheus()
            result = await scenarios.run(name)
            self.results.append(result)
            self.console.tag = name
            verdict = "as expected" if result.ok else f"UNEXPECTED (expected {result.expected})"
            self.console.say(f"result    {result.phase}, {result.seconds:.1f} s after {result.since}: {verdict}")
            if result.note:
                self.console.say(f"result    {result.note}")

    async def _fresh_prometheus(self) -> None:
        assert self.prometheus is not None
        self.console.tag = "setup"
        self.console.say("restarting Prometheus with an empty database, so that the last scenario's canary "
                         "traffic does not dilute rules/' 5m windows")
        self.prometheus.stop()
        shutil.rmtree(self.prometheus.data_dir, ignore_errors=True)
        _start_server(self.prometheus)
        self.observer.new_prometheus()
        self.console.out(f"{'':9} {'':5} prometheus pid {self.prometheus.pid}")
        await self.watch.wait_targets_up(3)

    # ------------------------------------------------------------------------------------------ end

    def _summary(self) -> None:
        out = self.console.out
        self.console.tag = "end"
        out("")
        out(f"== Summary ({time.time() - self.console.t0:.0f} s) ==")
        for line in summary(self.results):
            out(line)
        if self.traffic is not None:
            st = self.traffic.stats
            out(f"  traffic: {st.sent} requests sent, {st.to_canary} to the canary ({st.header_to_canary} of "
                f"them by x-canary: true), {st.failed} answered 5xx, {st.errors} unanswered, {st.dropped} "
                "not sent (in-flight limit)")
        out("URLs (up while the demo runs; --keep-running keeps them up):")
        for line in self.urls():
            out(line)
        outcome = {"succeeded": "promoted", "rolled_back": "rolled back"}
        out(f"demo {'passed' if self._all_ok() else 'FAILED'}: "
            + ", ".join(f"{r.name} → {outcome.get(r.phase, r.phase)}" for r in self.results))

    def _all_ok(self) -> bool:
        return all(r.ok for r in self.results) and len(self.results) == len(self.scenarios)

    def exit_code(self) -> int:
        return 0 if self.finished and self._all_ok() else 1


def _job(name: str, port: int | None) -> dict[str, Any]:
    return {"job_name": name,
            "static_configs": [{"targets": [f"{HOST}:{port}"], "labels": {"namespace": NAMESPACE}}]}


async def _exit_code(server: ServerProcess) -> int:
    """Wait until `server`'s process exits; its exit code."""
    while (code := server.returncode()) is None:
        await asyncio.sleep(0.5)
    return code


def _start_server(server: ServerProcess) -> None:
    try:
        server.start()
    except ServerError as e:
        raise DemoError(str(e)) from None
