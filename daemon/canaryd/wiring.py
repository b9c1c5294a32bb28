"""The composition root: every part of the daemon built from a config, in one place.

`canaryd run` (daemon.py), `canaryd deploy` and the demo build their parts here. Each shared object
has one owner that writes it: the leadership is flipped only by the leader election, and each health
component is written by the part it is named after. The parts live as long as `assemble`'s context;
leaving it stops the controller's canary tasks and closes the notifier, the Kubernetes client and the
HTTP session, in that order.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from .actuator import Actuator, RouterActuator
from .config import CanaryConfig, Config
from .controller import Controller
from .health import Health
from .kube import KubeClient
from .leader import LeaderGuard, run_leadership
from .leadership import Leadership
from .metrics import Metrics
from .notify import Notifier, NotifyTarget
from .routers import make_router
from .server import make_app, read_token, token_problems
from .sources.http_config import http_options
from .sources.prometheus import PrometheusClient, SourceError

if TYPE_CHECKING:
    from .canary_resources import CanaryResources

ActuatorFactory = Callable[[CanaryConfig], Actuator]
Loop = Callable[[], Coroutine[Any, Any, None]]

_ERROR_KINDS = {"prometheus": "api", "connection": "connection", "timeout": "timeout", "http": "http",
                "bad_response": "bad_response"}
NOTIFIER_CLOSE_TIMEOUT = 1.0  # seconds for notifications still being delivered at shutdown


def dry_run_actuators() -> ActuatorFactory:
    def make(c: CanaryConfig) -> Actuator:
        router = make_router("dry-run", kube=None, namespace=c.namespace, route=c.route,
                             stable_backend=c.stable.backend or "stable", canary_backend=c.canary.backend or "canary")
        return RouterActuator(router)
    return make


@dataclass
class Parts:
    config: Config
    registry: CollectorRegistry
    metrics: Metrics
    health: Health
    leadership: Leadership
    prometheus: PrometheusClient
    notifier: Notifier | None
    kube: KubeClient | None  # None: dry-run, or actuators given by the caller
    controller: Controller
    electing: bool
    app: web.Application | None  # the HTTP API, when asked for
    canary_resources: CanaryResources | None = None  # Canary objects, with a cluster (canary_resources.py)

    def loops(self) -> dict[str, Loop]:
        """The daemon's long-running loops by name: the analysis ticks, and with a cluster the
        Deployment watches and the leader election. Each runs until cancelled."""
        loops: dict[str, Loop] = {"analysis ticks": self.controller.run_ticks}
        kube = self.kube
        if kube is None:
            return loops
        from .watcher import run_watchers  # only a cluster-backed daemon needs it
        loops["watchers"] = lambda: run_watchers(self.controller, kube, self.health)
        if self.electing:
            loops["leader"] = lambda: run_leadership(
                self.leadership, kube, self.config.kubernetes.leader_election, self.health,
                on_lead=self.controller.refresh_from_routes)
        if self.canary_resources is not None:
            loops["canary resources"] = self.canary_resources.run
        return loops


@contextlib.asynccontextmanager
async def assemble(config: Config, *, registry: CollectorRegistry | None = None,
                   actuator_factory: ActuatorFactory | None = None, kube: KubeClient | None = None,
                   with_app: bool = False, notify: bool = True, elect: bool = True,
                   clock: Callable[[], float] = time.time) -> AsyncIterator[Parts]:
    """Build and start the parts. Actuators: `actuator_factory` if given; else the cluster's (through
    `kube`, or a client connected here when the config enables Kubernetes); else dry-run ones.
    `with_app` builds the HTTP app (its token files are read first, before anything starts);
    `notify` and `elect` turn off notifications and leader election for a one-shot command."""
    tokens = _tokens(config) if with_app else {}
    registry = registry if registry is not None else CollectorRegistry()
    metrics = Metrics(registry, detail=config.server.metrics_detail.value)
    health = Health()
    async with contextlib.AsyncExitStack() as stack:
        # trust_env: the environment's HTTP(S)_PROXY and NO_PROXY apply, as to any client in the cluster.
        session = await stack.enter_async_context(aiohttp.ClientSession(trust_env=True))
        url, http = http_options(config.prometheus)
        # Prometheus' session looks the environment up once (use_environment), not per query in a thread.
        http.use_environment(url)
        queries = await stack.enter_async_context(aiohttp.ClientSession())
        prometheus = PrometheusClient(queries, url, timeout=config.prometheus.timeout,
                                      retries=config.prometheus.retries,
                                      on_error=lambda e: _count_error(metrics, e), http=http)
        notifier = _notifier(config, session, stack) if notify else None
        kube, factory = await _actuators(config, stack, actuator_factory, kube, metrics)
        electing = elect and kube is not None and config.kubernetes.leader_election.enabled
        leadership = Leadership(leading=not electing)  # a candidate follows until it wins the lease
        leadership.subscribe(metrics.set_leader)
        if electing:
            factory = _guarded(factory, leadership)
        controller = Controller(config, metrics=metrics, prometheus=prometheus, actuator_factory=factory,
                                notifier=notifier, clock=clock, leadership=leadership, health=health)
        await controller.start()
        stack.push_async_callback(controller.stop)
        app = make_app(controller, registry, health=health, leadership=leadership, **tokens) if with_app else None
        yield Parts(config, registry, metrics, health, leadership, prometheus, notifier, kube, controller,
                    electing, app, _canary_resources(config, kube, controller, leadership, clock))


def start_problems(config: Config) -> list[str]:
    """What `canaryd run` checks before it starts anything, beyond the config file itself (the token
    files: missing, unreadable or empty). `canaryd validate` runs the same checks."""
    return token_problems(config.server)


def _canary_resources(config: Config, kube: KubeClient | None, controller: Controller, leadership: Leadership,
                      clock: Callable[[], float]) -> CanaryResources | None:
    if kube is None or not config.kubernetes.enabled or not config.kubernetes.canary_resources.enabled:
        return None
    from .canary_resources import CanaryResources  # only a cluster-backed daemon needs it
    from .kube.canaries import CanaryApi
    return CanaryResources(controller, CanaryApi(kube), config, leadership=leadership, clock=clock)


def _tokens(config: Config) -> dict[str, str | None]:
    return {"webhook_token": read_token(config.server.webhook_token_file),
            "api_token": read_token(config.server.api_token_file)}


def _notifier(config: Config, session: aiohttp.ClientSession, stack: contextlib.AsyncExitStack) -> Notifier | None:
    targets = [NotifyTarget(n.url, "msteams" if n.format == "teams" else n.format, n.timeout,
                            None if n.events is None else frozenset(n.events), n.api_url, n.grafana_url)
               for n in config.notifications]
    if not targets:
        return None
    notifier = Notifier(session, targets)
    stack.push_async_callback(notifier.close, timeout=NOTIFIER_CLOSE_TIMEOUT)
    return notifier


async def _actuators(config: Config, stack: contextlib.AsyncExitStack, given: ActuatorFactory | None,
                     kube: KubeClient | None, metrics: Metrics) -> tuple[KubeClient | None, ActuatorFactory]:
    if given is not None:
        return kube, given
    if kube is None and not config.kubernetes.enabled:
        return None, dry_run_actuators()
    from .kube_actuator import connect, kube_actuators  # only a cluster-backed daemon needs it
    if kube is None:
        kube = await connect(config)
        stack.push_async_callback(kube.close)
    # A conflict retried is another writer on the route (a GitOps tool, a person): worth seeing.
    return kube, await kube_actuators(config, stack, kube,
                                      on_conflict=lambda c: metrics.router_update(c.namespace, c.name, "conflict_retry"))


def _guarded(factory: ActuatorFactory, leadership: Leadership) -> ActuatorFactory:
    return lambda c: LeaderGuard(factory(c), lambda: leadership.is_leader)


def _count_error(metrics: Metrics, e: SourceError) -> None:
    metrics.prometheus_error(_ERROR_KINDS.get(e.kind, "other"))
