"""The typed configuration: frozen dataclasses whose fields carry their default, doc line and kind.

A field's ``metadata`` holds ``doc`` (one line for the reference) and ``kind`` (a validator from
`kinds`, the name of one in `kinds.NAMED`, or a dataclass for a nested section). ``items`` names the
dataclass of a list's entries, ``yaml`` a YAML key that differs from the field's name, ``joins`` the
fields that one YAML key fills, ``inherits`` a section whose keys are repeated inline (a canary's own
settings). A field without ``doc`` is not a YAML key. The schema, the reference and the JSON schema are
derived from these fields; the default written here is the only one.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal

from ..analysis.settings import JudgeBase, Thresholds
from ..windows import FORM
from .compound import _Choices, _GrownChoice, _Headers
from .delivery import _Strings, _Window
from .kinds import (
    _HOSTNAME,
    _K8S_LABEL,
    _K8S_NAME,
    _PATH,
    _SELECTOR,
    _Bool,
    _Choice,
    _choice,
    _Int,
    _Listen,
    _Names,
    _Str,
    _Url,
)
from .queries import _COUNTER, _GAUGE, LATENCY_UNITS, PRESETS

if TYPE_CHECKING:
    from ..analysis.settings import JudgeSettings

__all__ = [
    "DEFAULT_ALERTS", "NOTIFY_EVENTS", "THRESHOLD_ACTIONS", "AlertAction", "AlertRule", "AnalysisSettings", "ArmConfig",
    "CanaryConfig", "CanaryResourcesConfig", "Config", "CrashLoopConfig", "FeatureFlagsConfig", "GateConfig",
    "GateJob", "GatesConfig", "HoldPolicy", "MatchRoute", "KubernetesConfig", "LeaderElectionConfig",
    "MetricsDetail", "Mesh", "NotifierConfig", "PrometheusConfig", "Queries", "ServerConfig", "Thresholds", "default_backend", "extend_alerts",
]


class Mesh(str, Enum):
    ISTIO = "istio"  # VirtualService, subsets
    LINKERD = "linkerd"  # SMI TrafficSplit, services
    GATEWAY_API = "gateway-api"  # HTTPRoute, services


class AlertAction(str, Enum):
    ROLLBACK = "rollback"
    PAUSE = "pause"
    HOLD = "hold"  # the contract's name for keeping the current weight; same effect as pause
    IGNORE = "ignore"


class MetricsDetail(str, Enum):
    """Which per-canary series /metrics exports (metrics.py says which series each holds)."""

    BASIC = "basic"  # what the dashboard and the rules use, at most about 15 series per canary
    FULL = "full"  # also one-hot phase and verdict gauges, every judged metric's p-value and ratio


class HoldPolicy(str, Enum):
    """What a hold becomes once a step has lasted max_step_duration."""

    PAUSE = "pause"
    ROLLBACK = "rollback"


THRESHOLD_ACTIONS: Mapping[str, str] = types.MappingProxyType(
    {f.name: f.metadata["action"] for f in fields(Thresholds)})
"""The platform strategy's action for each threshold when it is exceeded; fixed, not configurable."""


def _key(default: Any, doc: str, kind: object, **more: Any) -> Any:
    return field(default=default, metadata={"doc": doc, "kind": kind, **more})


def _required(doc: str, kind: object) -> Any:
    return field(metadata={"doc": doc, "kind": kind})


def _section(cls: type, doc: str, **more: Any) -> Any:
    return field(default_factory=cls, metadata={"doc": doc, "kind": cls, **more})


def _judge(name: str) -> Any:
    """The judge's own field (default, doc and kind), so the config cannot restate it differently."""
    (f,) = (f for f in fields(JudgeBase) if f.name == name)
    return field(default=f.default, metadata=f.metadata)


@dataclass(frozen=True)
class ServerConfig:
    host: str = _key("127.0.0.1", "Address of the HTTP server (webhooks, API, metrics)", _Listen(),
                     yaml="listen", joins=("host", "port"))  # IPv6 without brackets
    port: int = 8080  # YAML: the port of listen
    webhook_token_file: str | None = _key(
        None, 'File holding a token; if set, /webhooks/* need "Authorization: Bearer <token>"', _PATH)
    api_token_file: str | None = _key(None, "File holding a token; if set, POST /api/v1/* need it", _PATH)
    metrics_detail: MetricsDetail = _key(
        MetricsDetail.BASIC, "Per-canary series in /metrics: basic (the weight, the current phase, the counters "
        "and the verdicts that fail or warn: ≤ 15 a canary) or full (also one-hot phase and verdict gauges, "
        "each judged metric's p-value and ratio)", _choice(MetricsDetail))


# The names of Prometheus' own http_config, which users of Prometheus-compatible backends already write.
# Secrets are read from files, never written in the config, and read again when the file changes.
@dataclass(frozen=True)
class AuthorizationConfig:
    type: str = _key("Bearer", "Scheme of the Authorization header",
                     _Str("an HTTP auth scheme such as Bearer", r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"))
    credentials_file: str | None = _key(
        None, "File holding the credentials (a token), read again when it changes; null: no Authorization", _PATH)


@dataclass(frozen=True)
class BasicAuthConfig:
    username: str | None = _key(None, "User name for HTTP basic auth; null: no basic auth", _Str("a user name"))
    password_file: str | None = _key(None, "File holding the password, read again when it changes", _PATH)


@dataclass(frozen=True)
class TLSConfig:
    ca_file: str | None = _key(None, "CA certificates (PEM) that sign the server's; null: the system's", _PATH)
    cert_file: str | None = _key(None, "Client certificate (PEM) for mutual TLS, with key_file", _PATH)
    key_file: str | None = _key(None, "Private key (PEM) of cert_file", _PATH)
    server_name: str | None = _key(None, "Name the server's certificate must carry (and SNI); null: the URL's host",
                                   _Str("a host name", _HOSTNAME, 253))
    insecure_skip_verify: bool = _key(False, "Accept any server certificate (tests only)", _Bool())


@dataclass(frozen=True)
class PrometheusConfig:
    url: str = _key("http://127.0.0.1:9090", "Prometheus base URL, with any path prefix (Mimir: .../prometheus)",
                    _Url("http://127.0.0.1:9090"))  # without a trailing slash
    timeout: float = _key(10.0, "Timeout of one Prometheus HTTP request", "duration")
    retries: int = _key(3, "Retries of a failed Prometheus request before the tick holds", _Int(0, 10))
    authorization: AuthorizationConfig = _section(AuthorizationConfig, "Authorization header (bearer token)")
    basic_auth: BasicAuthConfig = _section(BasicAuthConfig, "HTTP basic auth")
    tls_config: TLSConfig = _section(TLSConfig, "TLS for an https:// URL")
    # (name, value) pairs: frozen, in the order written.
    headers: tuple[tuple[str, str], ...] = _key((), "Extra HTTP headers, such as X-Scope-OrgID for a tenant",
                                                _Headers())


@dataclass(frozen=True)
class LeaderElectionConfig:
    enabled: bool = _key(False, "Elect one acting replica through a coordination.k8s.io Lease", _Bool())
    namespace: str = _key("default", "Namespace of the Lease", _K8S_LABEL)
    lease: str = _key("canaryd", "Name of the Lease", _K8S_NAME)
    lease_duration: float = _key(15.0, "How long a lease is valid without renewal", "duration")
    renew_deadline: float = _key(10.0, "How long the leader retries renewing before it steps down", "duration")
    retry_period: float = _key(2.0, "Pause between attempts to acquire or renew", "duration")


@dataclass(frozen=True)
class CanaryResourcesConfig:
    enabled: bool = _key(True, "Watch Canary objects (canaries.canaryd.io) beside the file's canaries; "
                               "only with kubernetes.enabled", _Bool())
    namespaces: tuple[str, ...] = _key((), "Namespaces whose Canary objects are watched; []: every namespace",
                                       _Names(_K8S_LABEL))


@dataclass(frozen=True)
class KubernetesConfig:
    enabled: bool = _key(True, "false: dry run; decisions are logged and exported, nothing is patched", _Bool())
    kubeconfig: str | None = _key(None, "Kubeconfig file; null: in-cluster config, else the default", _PATH)
    leader_election: LeaderElectionConfig = _section(LeaderElectionConfig, "Leader election")
    canary_resources: CanaryResourcesConfig = _section(CanaryResourcesConfig, "Canary custom resources")


@dataclass(frozen=True)
class AnalysisSettings:
    mesh: Mesh = _key(Mesh.ISTIO, "Traffic router: istio (VirtualService), linkerd (SMI TrafficSplit), "
                                  "gateway-api (HTTPRoute)", _choice(Mesh))
    traffic_steps: tuple[int, ...] = _key((5, 25, 50, 100), "Canary weights, %, one per step", "steps")
    step_duration: float = _judge("step_duration")
    interval: float = _key(30.0, "Time between analysis ticks", "duration")
    min_requests: int = _judge("min_requests")
    auto_promote: bool = _key(False, "Promote after the last step without a manual promote", _Bool())
    alpha: float = _judge("alpha")
    thresholds: Thresholds = _section(Thresholds, "Limits")
    # None means 3 × step_duration; resolved in __post_init__, so readers always see a float.
    max_step_duration: float | None = _key(
        None, "After this long at one step a hold becomes on_max_step_duration; null: 3 × step_duration",
        "duration")
    on_max_step_duration: HoldPolicy = _key(HoldPolicy.PAUSE, "What a too-long hold becomes", _choice(HoldPolicy))
    progress_deadline: float = _key(600.0, "Time for the canary Deployment to become ready", "duration")
    canary_replicas: int | None = _key(
        None, "Replicas the canary is scaled to before it gets traffic; null: as many as stable has",
        _Int(1, 10000))
    tolerance_pp: float = _judge("tolerance_pp")
    strict: bool = _judge("strict")

    def __post_init__(self) -> None:
        object.__setattr__(self, "traffic_steps", tuple(self.traffic_steps))
        if self.max_step_duration is None:
            object.__setattr__(self, "max_step_duration", 3.0 * self.step_duration)

    def judge_settings(self) -> JudgeSettings:
        """The judge's settings: every field the judge shares with this class, and every threshold."""
        from ..analysis.settings import JudgeSettings

        mine = {f.name for f in fields(self)}
        shared = {f.name: getattr(self, f.name) for f in fields(JudgeBase) if f.name in mine}
        limits = {f.name: getattr(self.thresholds, f.name) for f in fields(Thresholds)}
        return JudgeSettings(**shared, **limits,
                             timeout_rollback=self.on_max_step_duration is HoldPolicy.ROLLBACK)


@dataclass(frozen=True)
class Queries:
    """PromQL templates; see `canaryd.config.queries` for the convention and `render_query`."""

    requests: str = _key("http_requests_total{{{selector}}}", "Request counter", _COUNTER)
    errors: str | None = _key('http_requests_total{{{selector},status=~"5.."}}',
                              "Error (5xx) counter; null skips error checks", _COUNTER)
    successes: str | None = _key('http_requests_total{{{selector},status=~"2.."}}',
                                 "Success (2xx) counter; null skips success_rate", _COUNTER)
    latency_buckets: str | None = _key("http_request_duration_seconds_bucket{{{selector}}}",
                                       "Latency histogram buckets (seconds, with le); null skips latency checks",
                                       _COUNTER)
    cpu: str | None = _key(None, "CPU utilisation in percent over {window}; null skips cpu", _GAUGE)
    memory: str | None = _key(None, "Memory utilisation in percent; null skips memory", _GAUGE)
    latency_unit: str = _key("seconds", "Unit of latency_buckets' le bounds (Istio and Linkerd: milliseconds)",
                             _Choice(tuple(LATENCY_UNITS)))


@dataclass(frozen=True)
class ArmConfig:
    deployment: str = _required("The arm's Deployment", _K8S_NAME)
    # PromQL label matchers without braces: job="auth-service-canary"
    selector: str = _required("Label matchers substituted for {selector} in queries", _SELECTOR)
    # Resolved by CanaryConfig.
    backend: str | None = _key(None, 'Istio subset or SMI / HTTPRoute service; null: istio "stable"/"canary", '
                                     'else "<name>-stable"/"<name>-canary"', _K8S_NAME)


@dataclass(frozen=True)
class MatchRoute:
    name: str = _required("Name of the route; on the route object it is canaryd-<name>", _K8S_LABEL)
    headers: tuple[tuple[str, str], ...] = _required(
        "Header name → exact value; a request with all of them goes to the canary", _Headers(match=True))


DEFAULT_MATCH_ROUTES: tuple[MatchRoute, ...] = (MatchRoute("x-canary", (("x-canary", "true"),)),)


@dataclass(frozen=True)
class GateJob:
    image: str | None = _key(None, "Image of the Job's one container; null: no Job",
                             _Str("a container image", r"[^\s]+", 1024))
    command: tuple[str, ...] = _key((), "Its command and arguments; []: the image's entrypoint", _Strings())
    service_account: str | None = _key(None, "Service account of the Job's pod; null: the namespace's default",
                                       _K8S_NAME)


@dataclass(frozen=True)
class GateConfig:
    url: str | None = _key(None, "Webhook POSTed the canary's state (JSON); 2xx passes; null: no webhook",
                           _Url("https://ci.example.com/smoke"))
    job: GateJob = _section(GateJob, "Kubernetes Job run in the canary's namespace; succeeded passes")
    timeout: float = _key(30.0, "Time for one webhook request, or for the Job to finish", "duration")
    retries: int = _key(2, "Further attempts after a failed request or Job before the gate fails", _Int(0, 10))

    @property
    def enabled(self) -> bool:
        return self.url is not None or self.job.image is not None


@dataclass(frozen=True)
class GatesConfig:
    pre_rollout: GateConfig = _section(GateConfig, "Before any weight (the match routes are in place); "
                                                   "failing rolls back")
    confirm_promotion: GateConfig = _section(GateConfig, "After the last step; the rollout holds there until "
                                                         "it passes")
    post_rollout: GateConfig = _section(GateConfig, "After the promotion; its outcome is recorded")
    on_rollback: GateConfig = _section(GateConfig, "After a rollback; its outcome is recorded")


GATE_NAMES: tuple[str, ...] = ("pre_rollout", "confirm_promotion", "post_rollout", "on_rollback")


@dataclass(frozen=True)
class FeatureFlagsConfig:
    url: str | None = _key(None, "Webhook POSTed the canary's weight and phase at every step "
                                 "(OpenFeature-style JSON); null: none", _Url("https://flags.example.com/hooks"))
    flag: str | None = _key(None, "The flag key the body names; null: the canary's name",
                            _Str("a flag key", r"[^\s]+", 253))
    timeout: float = _key(5.0, "Timeout of one request", "duration")


@dataclass(frozen=True)
class CrashLoopConfig:
    enabled: bool = _key(True, "Watch the canary's pods and roll back when they crash-loop", _Bool())
    max_restarts: int = _key(3, "Container restarts of the canary's pods during a rollout above which it "
                                "rolls back", _Int(0, 10000))


def default_backend(mesh: Mesh, canary_name: str, role: Literal["stable", "canary"]) -> str:
    """The platform strategy's naming: Istio subsets "stable"/"canary"; SMI and Gateway API services "<name>-<role>"."""
    if mesh is Mesh.ISTIO:
        return role
    return f"{canary_name}-{role}"


@dataclass(frozen=True)
class CanaryConfig:
    name: str = _required("Canary name (metrics label; default backend prefix)", _K8S_LABEL)
    namespace: str = _required("Namespace of the route and the Deployments", _K8S_LABEL)
    route: str = _required("VirtualService / TrafficSplit / HTTPRoute name", _K8S_NAME)
    stable: ArmConfig = _required("Stable arm", ArmConfig)
    canary: ArmConfig = _required("Canary arm", ArmConfig)
    # In YAML the canary's own settings sit beside its other keys and override `defaults` key by key.
    settings: AnalysisSettings = _section(AnalysisSettings, "Analysis settings", inherits="defaults")
    queries: Queries = _section(Queries, "Query templates, or a preset: " + ", ".join(PRESETS), presets=PRESETS)
    match_routes: tuple[MatchRoute, ...] = field(default=DEFAULT_MATCH_ROUTES, metadata={
        "doc": "Header routes to the canary added while a rollout runs (Istio, Gateway API); []: none",
        "items": MatchRoute})
    match_stages: tuple[str, ...] = _key((), "Match-only stages before the first weight: names of match_routes, "
                                             "each added in its own stage, judged like a step", _Names(_K8S_LABEL))
    gates: GatesConfig = _section(GatesConfig, "Webhooks or Jobs around the rollout")
    windows: tuple[str, ...] = _key((), "When a rollout may advance ('Mon-Fri 02:00-05:00 UTC', or 'cron ...'); "
                                        "[]: any time", _Names(_Window(), f"a list of windows, each {FORM}"))
    feature_flags: FeatureFlagsConfig = _section(FeatureFlagsConfig, "A flag service following the rollout")
    crash_loop: CrashLoopConfig = _section(CrashLoopConfig, "Rollback on the canary's pods crash-looping")

    def __post_init__(self) -> None:
        # Backends are resolved here so that configs built in code get the same defaults as loaded ones.
        for role in ("stable", "canary"):
            arm: ArmConfig = getattr(self, role)
            if arm.backend is None:
                object.__setattr__(self, role, replace(arm, backend=default_backend(self.settings.mesh, self.name, role)))

    @functools.cached_property
    def key(self) -> str:  # made once: the controller, the reader and the metrics each keep it per canary
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class AlertRule:
    alertname: str = _required("Alertmanager alertname", _Str("an alert name"))
    action: AlertAction = _required("What the alert does to its canary (hold = pause)", _choice(AlertAction))


NOTIFY_EVENTS: tuple[str, ...] = ("started", "advanced", "paused", "awaiting_promotion", "promotion",
                                  "promotion_failed", "rollback", "restart")
"""The event kinds of notifications (the generic JSON's "kind"); promotion is "promoted", rollback
"rolled back"; restart: a new canary version during a rollout, judged from its first step."""


@dataclass(frozen=True)
class NotifierConfig:
    url: str = _required("Webhook URL", _Url("https://hooks.example.com/canaryd"))
    format: Literal["json", "slack", "teams", "msteams", "discord"] = _key(
        "json", "Payload: generic JSON, Slack, Microsoft Teams (Adaptive Card; teams = msteams) or Discord",
        _GrownChoice(("json", "slack"), added=("msteams", "teams", "discord")))
    timeout: float = _key(5.0, "Timeout of one notification request", "duration")
    events: tuple[str, ...] | None = _key(None, "Event kinds sent to this URL; null: every kind",
                                          _Choices(NOTIFY_EVENTS))
    api_url: str | None = _key(None, "canaryd's URL as people reach it: each message links the canary's "
                                     "status (/api/v1/canaries/<namespace>/<name>)",
                               _Url("https://canaryd.example.com"))
    grafana_url: str | None = _key(None, "A Grafana dashboard URL each message links; {namespace} and {canary} "
                                         "are filled in", _Url("https://grafana.example.com/d/canaryd"))


DEFAULT_ALERTS: tuple[AlertRule, ...] = (
    AlertRule("CanaryHighErrorRate", AlertAction.ROLLBACK),
    AlertRule("CanaryPodCrashLooping", AlertAction.ROLLBACK),
    AlertRule("CanaryLatencyHigherThanStable", AlertAction.HOLD),
    AlertRule("CanaryErrorRateHigherThanStable", AlertAction.ROLLBACK),
)


def extend_alerts(user: tuple[AlertRule, ...],
                  defaults: tuple[AlertRule, ...] = DEFAULT_ALERTS) -> tuple[AlertRule, ...]:
    """A file's `alerts:` added to the defaults: a user rule for a default's alertname replaces its action
    in place (`action: ignore` drops it), other user rules follow in their order. A list copied from an
    older example therefore never silently loses a default."""
    mine = {r.alertname: r for r in user}
    kept = tuple(mine.get(d.alertname, d) for d in defaults)
    known = {d.alertname for d in defaults}
    return kept + tuple(r for r in user if r.alertname not in known)


@dataclass(frozen=True)
class Config:
    server: ServerConfig = _section(ServerConfig, "HTTP server")
    prometheus: PrometheusConfig = _section(PrometheusConfig, "Prometheus")
    kubernetes: KubernetesConfig = _section(KubernetesConfig, "Kubernetes")
    defaults: AnalysisSettings = _section(AnalysisSettings, "Analysis settings for every canary")
    canaries: tuple[CanaryConfig, ...] = field(default=(), metadata={
        "doc": "Watched canaries; each may also set any defaults key (thresholds merge key by key)",
        "items": CanaryConfig})
    alerts: tuple[AlertRule, ...] = field(default=DEFAULT_ALERTS, metadata={
        "doc": "Alertmanager alertname → action, added to these defaults (the same alertname replaces a "
               "default's action; action: ignore drops it); matched to a canary by the labels canary|service "
               "and namespace",
        "items": AlertRule})
    notifications: tuple[NotifierConfig, ...] = field(default=(), metadata={
        "doc": "Outbound notifications of decisions", "items": NotifierConfig})
    source: str = "<config>"  # the file it was loaded from; not a YAML key

    def canary(self, namespace: str, name: str) -> CanaryConfig | None:
        return next((c for c in self.canaries if c.namespace == namespace and c.name == name), None)


def field_default(f: Any) -> Any:
    """A dataclass field's python default, or MISSING when the key is required."""
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else MISSING
