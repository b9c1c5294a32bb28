"""canaryd configuration: YAML → typed, validated, frozen settings.

`load_config(path)` reads a file; `parse_config(data, source)` takes data already parsed. Every problem
found is collected and raised together as one `ConfigError`; each problem reads
``<file>: <key.path>: <what is wrong>; <what is allowed>``.

The schema is one table per section (`_SERVER`, `_PROMETHEUS`, ...). The same tables validate the file
and generate `config_reference()`, so the documented keys and defaults cannot drift from what is
accepted. Defaults in the tables are written as a user writes them in YAML ("10s", "127.0.0.1:8080") and
go through the same validation as user values.

Durations are strings such as ``30s``, ``5m``, ``1h``, ``1m30s``, ``500ms`` (units d, h, m, s, ms, largest
first, each at most once) or a bare number of seconds; they are stored as float seconds.

Per-canary settings: a canary may set ``mesh:`` and any other ``defaults`` key. Its value replaces the
default; ``thresholds`` merge key by key. ``max_step_duration`` left unset everywhere is 3 × the canary's
effective step_duration. Backends left unset are resolved per mesh (`default_backend`).

Query templates
---------------
Templates use Python ``str.format`` syntax; render them with `render_query`. The placeholders are
``{selector}`` (the arm's label matchers, e.g. ``job="auth-service-canary"``), ``{namespace}`` (the
canary's namespace), ``{deployment}`` (the arm's Deployment) and, in cpu/memory only, ``{window}`` (a
Prometheus duration such as ``30s``). Literal PromQL braces are doubled:
``http_requests_total{{{selector},status=~"5.."}}`` renders to
``http_requests_total{job="auth-service-canary",status=~"5.."}``. A single brace is rejected at load as
an unknown placeholder, so the mistake cannot reach Prometheus.

- ``requests``, ``errors``, ``successes``, ``latency_buckets`` are plain series selectors of counters
  (a metric name and/or matchers; no functions, no range). The Prometheus source wraps each as
  ``sum by (...) (increase(<rendered>[<window>]))`` (latency_buckets also by ``le``), so they may not
  use ``{window}``.
- ``cpu`` and ``memory`` are complete PromQL expressions returning the arm's utilisation in percent
  (0-100) over ``{window}``. They are unset by default, and an unset query's metric is skipped. For
  example, with cAdvisor and kube-state-metrics::

    100 * sum(rate(container_cpu_usage_seconds_total{{namespace="{namespace}",pod=~"{deployment}-.*"}}[{window}]))
      / sum(kube_pod_container_resource_limits{{namespace="{namespace}",pod=~"{deployment}-.*",resource="cpu"}})

- Every template uses ``{selector}`` or ``{deployment}``; otherwise both arms would read the same series.
  Any query but ``requests`` may be null, which skips that metric.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
import string
import types
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import yaml

from .analysis.durations import DURATION_FORM, DurationError, format_duration, parse_duration

__all__ = [
    "THRESHOLD_ACTIONS",
    "DEFAULT_ALERTS",
    "AlertAction",
    "AlertRule",
    "AnalysisSettings",
    "ArmConfig",
    "CanaryConfig",
    "Config",
    "ConfigError",
    "HoldPolicy",
    "KubernetesConfig",
    "LeaderElectionConfig",
    "Mesh",
    "NotifierConfig",
    "PrometheusConfig",
    "Queries",
    "ServerConfig",
    "Thresholds",
    "config_reference",
    "default_backend",
    "format_duration",
    "load_config",
    "parse_config",
    "parse_duration",
    "render_query",
]


class ConfigError(Exception):
    """The configuration is invalid. `problems` lists every problem found, one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


# ---------------------------------------------------------------------------------------------------------
# Closed choices

class Mesh(str, Enum):
    ISTIO = "istio"  # VirtualService, subsets
    LINKERD = "linkerd"  # SMI TrafficSplit, services
    GATEWAY_API = "gateway-api"  # HTTPRoute, services


class AlertAction(str, Enum):
    ROLLBACK = "rollback"
    PAUSE = "pause"
    HOLD = "hold"  # DESIGN's name for keeping the current weight; same effect as pause
    IGNORE = "ignore"


class HoldPolicy(str, Enum):
    """What a hold becomes once a step has lasted max_step_duration."""

    PAUSE = "pause"
    ROLLBACK = "rollback"


THRESHOLD_ACTIONS: Mapping[str, str] = types.MappingProxyType({
    "error_rate": "rollback",
    "success_rate": "rollback",
    "latency_p95_ms": "warn",
    "latency_p99_ms": "rollback",
    "error_ratio": "rollback",
    "latency_ratio": "rollback",
    "cpu": "warn",
    "memory": "warn",
})
"""The seed's action for each threshold when it is exceeded; fixed, not configurable."""


# ---------------------------------------------------------------------------------------------------------
# The typed configuration. Defaults here must equal the schema's (a test checks parse_config({}) == Config()).

@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"  # IPv6 without brackets
    port: int = 8080
    webhook_token_file: str | None = None
    api_token_file: str | None = None


@dataclass(frozen=True)
class PrometheusConfig:
    url: str = "http://127.0.0.1:9090"  # without a trailing slash
    timeout: float = 10.0
    retries: int = 3


@dataclass(frozen=True)
class LeaderElectionConfig:
    enabled: bool = False
    namespace: str = "default"
    lease: str = "canaryd"
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


@dataclass(frozen=True)
class KubernetesConfig:
    enabled: bool = True  # False: dry run, nothing is patched
    kubeconfig: str | None = None  # None: in-cluster, else the client's default lookup
    leader_election: LeaderElectionConfig = field(default_factory=LeaderElectionConfig)


@dataclass(frozen=True)
class Thresholds:
    """Absolute and relative limits; None disables that check. Actions: THRESHOLD_ACTIONS."""

    error_rate: float | None = 5.0  # % 5xx
    success_rate: float | None = 95.0  # % 2xx, minimum
    latency_p95_ms: float | None = 500.0
    latency_p99_ms: float | None = 1000.0
    error_ratio: float | None = 2.0  # canary / stable error rate
    latency_ratio: float | None = 1.5  # canary P95 / stable P95
    cpu: float | None = 80.0  # %
    memory: float | None = 80.0  # %


@dataclass(frozen=True)
class AnalysisSettings:
    mesh: Mesh = Mesh.ISTIO
    traffic_steps: tuple[int, ...] = (5, 25, 50, 100)
    step_duration: float = 300.0
    interval: float = 30.0
    min_requests: int = 1000
    auto_promote: bool = False
    alpha: float = 0.05
    thresholds: Thresholds = field(default_factory=Thresholds)
    # None means 3 × step_duration; resolved in __post_init__, so readers always see a float.
    max_step_duration: float = None  # type: ignore[assignment]
    on_max_step_duration: HoldPolicy = HoldPolicy.PAUSE
    progress_deadline: float = 600.0
    # Pass bound: the canary error rate's upper confidence bound <= stable's rate + this many points.
    tolerance_pp: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "traffic_steps", tuple(self.traffic_steps))
        if self.max_step_duration is None:
            object.__setattr__(self, "max_step_duration", 3.0 * self.step_duration)


@dataclass(frozen=True)
class Queries:
    """PromQL templates; see the module docstring for the convention and `render_query`."""

    requests: str = "http_requests_total{{{selector}}}"
    errors: str | None = 'http_requests_total{{{selector},status=~"5.."}}'
    successes: str | None = 'http_requests_total{{{selector},status=~"2.."}}'
    latency_buckets: str | None = "http_request_duration_seconds_bucket{{{selector}}}"
    cpu: str | None = None
    memory: str | None = None


@dataclass(frozen=True)
class ArmConfig:
    deployment: str
    selector: str  # PromQL label matchers without braces: job="auth-service-canary"
    backend: str | None = None  # Istio subset, or SMI / HTTPRoute service; resolved by CanaryConfig


def default_backend(mesh: Mesh, canary_name: str, role: Literal["stable", "canary"]) -> str:
    """The seed's naming: Istio subsets "stable"/"canary"; SMI and Gateway API services "<name>-<role>"."""
    if mesh is Mesh.ISTIO:
        return role
    return f"{canary_name}-{role}"


@dataclass(frozen=True)
class CanaryConfig:
    name: str
    namespace: str
    route: str  # VirtualService / TrafficSplit / HTTPRoute name
    stable: ArmConfig
    canary: ArmConfig
    settings: AnalysisSettings = field(default_factory=AnalysisSettings)
    queries: Queries = field(default_factory=Queries)

    def __post_init__(self) -> None:
        # Backends are resolved here so that configs built in code get the same defaults as loaded ones.
        for role in ("stable", "canary"):
            arm: ArmConfig = getattr(self, role)
            if arm.backend is None:
                object.__setattr__(self, role, replace(arm, backend=default_backend(self.settings.mesh, self.name, role)))

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class AlertRule:
    alertname: str
    action: AlertAction


@dataclass(frozen=True)
class NotifierConfig:
    url: str
    format: Literal["json", "slack"] = "json"
    timeout: float = 5.0


DEFAULT_ALERTS: tuple[AlertRule, ...] = (
    AlertRule("CanaryHighErrorRate", AlertAction.ROLLBACK),
    AlertRule("CanaryPodCrashLooping", AlertAction.ROLLBACK),
    AlertRule("CanaryLatencyHigherThanStable", AlertAction.HOLD),
    AlertRule("CanaryErrorRateHigherThanStable", AlertAction.ROLLBACK),
)


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    prometheus: PrometheusConfig = field(default_factory=PrometheusConfig)
    kubernetes: KubernetesConfig = field(default_factory=KubernetesConfig)
    defaults: AnalysisSettings = field(default_factory=AnalysisSettings)
    canaries: tuple[CanaryConfig, ...] = ()
    alerts: tuple[AlertRule, ...] = DEFAULT_ALERTS
    notifications: tuple[NotifierConfig, ...] = ()
    source: str = "<config>"

    def canary(self, namespace: str, name: str) -> CanaryConfig | None:
        return next((c for c in self.canaries if c.namespace == namespace and c.name == name), None)


# ---------------------------------------------------------------------------------------------------------
# Durations and query rendering

_COUNTER_PLACEHOLDERS = ("selector", "namespace", "deployment")
_GAUGE_PLACEHOLDERS = ("selector", "namespace", "deployment", "window")


def render_query(template: str, *, selector: str, namespace: str, deployment: str,
                 window: str | float = "") -> str:
    """Fill a validated query template. `window` may be seconds (formatted as a PromQL duration)."""
    if not isinstance(window, str):
        window = format_duration(window)
    return template.format(selector=selector, namespace=namespace, deployment=deployment, window=window)


# ---------------------------------------------------------------------------------------------------------
# Schema machinery: kinds convert one YAML value; fields and sections are tables of them.

class _Invalid(Exception):
    """A value is wrong; the message reads '<what is wrong>; <what is allowed>' (or 'must be …, got …')."""


class _Fail:
    """Marks a value that was invalid; its problem has already been recorded."""

    def __repr__(self) -> str:
        return "<invalid>"


_FAIL = _Fail()


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_EMPTY: Mapping[str, Any] = types.MappingProxyType({})  # schema defaults are immutable, like all module state
_REQUIRED = _Marker("<required>")
_ABSENT = _Marker("<absent>")  # no default: a missing key stays missing (per-canary overrides)


@dataclass
class _Ctx:
    """Per-parse state: where problems are collected (never module-level)."""

    source: str
    problems: list[str] = field(default_factory=list)

    def add(self, path: str, message: str) -> None:
        self.problems.append(f"{self.source}: {path or '(top level)'}: {message}")


def _show(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "a list" if value else "an empty list"
    if isinstance(value, Mapping):
        return "a mapping"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


class _Kind:
    def allowed(self) -> str:
        raise NotImplementedError

    def convert(self, value: Any) -> Any:
        raise NotImplementedError

    def must(self, value: object) -> _Invalid:
        return _Invalid(f"must be {self.allowed()}, got {_show(value)}")

    def parse(self, value: object, ctx: _Ctx, path: str) -> Any:
        try:
            return self.convert(value)
        except _Invalid as e:
            ctx.add(path, str(e))
            return _FAIL


@dataclass(frozen=True)
class _Str(_Kind):
    what: str = "a non-empty string"
    pattern: str | None = None
    max_len: int | None = None

    def allowed(self) -> str:
        return self.what

    def convert(self, value: Any) -> Any:
        if not isinstance(value, str) or not value.strip():
            raise self.must(value)
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise self.must(value)
        if self.max_len is not None and len(value) > self.max_len:
            raise self.must(value)
        return value


_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_K8S_LABEL = _Str("a Kubernetes name (DNS-1123 label: lowercase letters, digits and '-', at most 63)",
                  _DNS_LABEL, 63)
_K8S_NAME = _Str("a Kubernetes name (DNS-1123 subdomain: lowercase letters, digits, '-' and '.', at most 253)",
                 rf"{_DNS_LABEL}(\.{_DNS_LABEL})*", 253)
_PATH = _Str("a file path")

_PROM_STRING = r"""("([^"\\]|\\.)*"|'([^'\\]|\\.)*'|`[^`]*`)"""
_MATCHER = rf"\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=~|!~|!=|=)\s*{_PROM_STRING}\s*"
_SELECTOR = _Str('PromQL label matchers without braces, such as job="auth-service-canary"',
                 rf"{_MATCHER}(,{_MATCHER})*,?\s*")


@dataclass(frozen=True)
class _Bool(_Kind):
    def allowed(self) -> str:
        return "true or false"

    def convert(self, value: Any) -> Any:
        if not isinstance(value, bool):
            raise self.must(value)
        return value


@dataclass(frozen=True)
class _Int(_Kind):
    lo: int
    hi: int
    what: str | None = None

    def allowed(self) -> str:
        return self.what or f"a whole number between {self.lo} and {self.hi}"

    def convert(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or not self.lo <= value <= self.hi:
            raise self.must(value)
        return value


@dataclass(frozen=True)
class _Number(_Kind):
    what: str
    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False

    def allowed(self) -> str:
        return self.what

    def convert(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.must(value)
        above = value > self.lo if self.lo_open else value >= self.lo
        if not (above and value <= self.hi):
            raise self.must(value)
        return float(value)


_PERCENT = _Number("a number between 0 and 100", 0, 100)
_POSITIVE = _Number("a number greater than 0", 0, lo_open=True)
_RATIO = _Number("a number of at least 1 (canary / stable)", 1)


@dataclass(frozen=True)
class _Duration(_Kind):
    positive: bool = True

    def allowed(self) -> str:
        return DURATION_FORM + (", greater than 0" if self.positive else "")

    def convert(self, value: Any) -> Any:
        try:
            seconds = parse_duration(value)
        except DurationError as e:
            if e.negative:
                raise _Invalid(f"must not be negative, got {_show(value)}; use {DURATION_FORM}") from None
            raise self.must(value) from None
        if self.positive and seconds <= 0:
            raise _Invalid(f"must be greater than 0, got {_show(value)}; use {DURATION_FORM}")
        return seconds


@dataclass(frozen=True)
class _Choice(_Kind):
    values: tuple[str, ...]
    enum: type[Enum] | None = None

    def allowed(self) -> str:
        return "one of " + ", ".join(self.values)

    def convert(self, value: Any) -> Any:
        if not isinstance(value, str) or value not in self.values:
            hint = ""
            if isinstance(value, str):
                close = difflib.get_close_matches(value, self.values, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
            raise _Invalid(f"must be {self.allowed()}, got {_show(value)}{hint}")
        return self.enum(value) if self.enum is not None else value


def _choice(enum: type[Enum]) -> _Choice:
    return _Choice(tuple(m.value for m in enum), enum)


@dataclass(frozen=True)
class _Optional(_Kind):
    """null is allowed (it disables or unsets). Error messages stay those of the inner kind."""

    inner: _Kind

    def allowed(self) -> str:
        return f"{self.inner.allowed()}, or null"

    def parse(self, value: object, ctx: _Ctx, path: str) -> Any:
        return None if value is None else self.inner.parse(value, ctx, path)


@dataclass(frozen=True)
class _Listen(_Kind):
    def allowed(self) -> str:
        return "host:port such as 127.0.0.1:8080, 0.0.0.0:8080 or [::1]:8080 (port 0-65535)"

    def convert(self, value: Any) -> Any:
        if not isinstance(value, str):
            raise self.must(value)
        text = value.strip()
        m = re.fullmatch(r"\[([^\]]+)\]:(\d+)", text)
        if m:
            host, port = m[1], m[2]
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise self.must(value) from None
        else:
            host, sep, port = text.rpartition(":")
            host_ok = re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*",
                                   host)
            if not sep or not host_ok:
                raise self.must(value)
        if not port.isdigit() or int(port) > 65535:
            raise self.must(value)
        return host, int(port)


@dataclass(frozen=True)
class _Url(_Kind):
    example: str

    def allowed(self) -> str:
        return f"an http:// or https:// URL such as {self.example}"

    def convert(self, value: Any) -> Any:
        if not isinstance(value, str):
            raise self.must(value)
        try:
            parts = urllib.parse.urlsplit(value.strip())
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise self.must(value) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self.must(value)
        return value.strip().rstrip("/")


@dataclass(frozen=True)
class _Steps(_Kind):
    def allowed(self) -> str:
        return "a non-empty list of whole percentages 1-100, strictly increasing, such as [5, 25, 50, 100]"

    def parse(self, value: object, ctx: _Ctx, path: str) -> Any:
        if not isinstance(value, list | tuple) or not value:
            ctx.add(path, f"must be {self.allowed()}, got {_show(value)}")
            return _FAIL
        steps, ok, previous = [], True, None
        for i, step in enumerate(value):
            where = f"{path}[{i}]"
            if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step <= 100:
                ctx.add(where, f"must be a whole percentage between 1 and 100, got {_show(step)}")
                ok = False
                continue
            if previous is not None and step <= previous:
                ctx.add(where, f"must be greater than the previous step {previous}, got {step}; "
                               "steps are strictly increasing percentages 1-100")
                ok = False
            previous = step
            steps.append(step)
        return tuple(steps) if ok else _FAIL


_SERIES_SELECTOR_RE = re.compile(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*\s*(\{[^{}]*\})?|\{[^{}]*\})\s*")


@dataclass(frozen=True)
class _Template(_Kind):
    counter: bool  # counters are plain selectors, wrapped by the source; gauges are full expressions

    def placeholders(self) -> tuple[str, ...]:
        return _COUNTER_PLACEHOLDERS if self.counter else _GAUGE_PLACEHOLDERS

    def allowed(self) -> str:
        names = ", ".join("{" + p + "}" for p in self.placeholders())
        if self.counter:
            return (f"a series selector template such as http_requests_total{{{{{{selector}}}}}} "
                    f"(placeholders {names}; literal braces doubled)")
        return f"a PromQL expression template returning a percentage (placeholders {names}; literal braces doubled)"

    def convert(self, value: Any) -> Any:
        if not isinstance(value, str) or not value.strip():
            raise self.must(value)
        names = ", ".join("{" + p + "}" for p in self.placeholders())
        braces = "write literal PromQL braces as {{ and }}"
        try:
            parsed = list(string.Formatter().parse(value))
        except ValueError as e:
            raise _Invalid(f"is not a valid template ({e}), got {_show(value)}; {braces}") from None
        used = set()
        for _literal, name, spec, conversion in parsed:
            if name is None:
                continue
            if name not in self.placeholders() or spec or conversion:
                shown = "{" + name + ("!" + conversion if conversion else "") + (":" + spec if spec else "") + "}"
                raise _Invalid(f"uses unknown placeholder {shown}, got {_show(value)}; "
                               f"allowed placeholders are {names}; {braces}")
            used.add(name)
        if not used & {"selector", "deployment"}:
            raise _Invalid(f"must use {{selector}} or {{deployment}}, got {_show(value)}; "
                           "otherwise the stable and canary arms read the same series")
        if self.counter:
            rendered = render_query(value, selector='a="b"', namespace="ns", deployment="d")
            if not _SERIES_SELECTOR_RE.fullmatch(rendered):
                raise _Invalid(f"must be a plain series selector (metric{{matchers}}, no functions or range), "
                               f"got {_show(value)}; the daemon wraps it in increase(...[window])")
        return value


@dataclass(frozen=True)
class _Field:
    key: str
    kind: _Kind
    default: object  # as written in YAML; _REQUIRED or _ABSENT for none
    doc: str
    inherits: str | None = None  # per-canary override of this defaults key


@dataclass(frozen=True)
class _Section(_Kind):
    fields: tuple[_Field, ...]

    def keys(self) -> tuple[str, ...]:
        return tuple(f.key for f in self.fields)

    def allowed(self) -> str:
        return "a mapping with the keys " + ", ".join(self.keys())

    def parse(self, value: object, ctx: _Ctx, path: str) -> Any:
        if value is None:  # "server:" with every key commented out
            value = {}
        if not isinstance(value, Mapping):
            ctx.add(path, f"must be {self.allowed()}, got {_show(value)}")
            return _FAIL
        known = self.keys()
        for key in value:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else "allowed keys are " + ", ".join(known)
                ctx.add(_join(path, key), f"unknown key; {hint}")
        out: dict[str, Any] = {}
        for f in self.fields:
            where = _join(path, f.key)
            if f.key in value:
                out[f.key] = f.kind.parse(value[f.key], ctx, where)
            elif f.default is _REQUIRED:
                ctx.add(where, f"missing required key; must be {f.kind.allowed()}")
                out[f.key] = _FAIL
            elif f.default is not _ABSENT:
                out[f.key] = f.kind.parse(f.default, ctx, where)
        return out


@dataclass(frozen=True)
class _List(_Kind):
    item: _Section

    def allowed(self) -> str:
        return "a list of mappings"

    def parse(self, value: object, ctx: _Ctx, path: str) -> Any:
        if value is None:
            return ()
        if not isinstance(value, list | tuple):
            ctx.add(path, f"must be {self.allowed()} with the keys {', '.join(self.item.keys())}, "
                          f"got {_show(value)}")
            return _FAIL
        return tuple(self.item.parse(v, ctx, f"{path}[{i}]") for i, v in enumerate(value))


def _partial(section: _Section, prefix: str) -> tuple[_Field, ...]:
    """The same keys with no defaults, for overriding `prefix` key by key."""
    out = []
    for f in section.fields:
        kind = f.kind
        if isinstance(kind, _Section):
            kind = _Section(_partial(kind, _join(prefix, f.key)))
        out.append(replace(f, kind=kind, default=_ABSENT, inherits=_join(prefix, f.key)))
    return tuple(out)


# ---------------------------------------------------------------------------------------------------------
# The schema, one table per section

_SERVER = _Section((
    _Field("listen", _Listen(), "127.0.0.1:8080", "Address of the HTTP server (webhooks, API, metrics)"),
    _Field("webhook_token_file", _Optional(_PATH), None,
           'File holding a token; if set, /webhooks/* need "Authorization: Bearer <token>"'),
    _Field("api_token_file", _Optional(_PATH), None, "File holding a token; if set, POST /api/v1/* need it"),
))

_PROMETHEUS = _Section((
    _Field("url", _Url("http://127.0.0.1:9090"), "http://127.0.0.1:9090", "Prometheus base URL"),
    _Field("timeout", _Duration(), "10s", "Timeout of one Prometheus HTTP request"),
    _Field("retries", _Int(0, 10), 3, "Retries of a failed Prometheus request before the tick holds"),
))

_LEADER_ELECTION = _Section((
    _Field("enabled", _Bool(), False, "Elect one acting replica through a coordination.k8s.io Lease"),
    _Field("namespace", _K8S_LABEL, "default", "Namespace of the Lease"),
    _Field("lease", _K8S_NAME, "canaryd", "Name of the Lease"),
    _Field("lease_duration", _Duration(), "15s", "How long a lease is valid without renewal"),
    _Field("renew_deadline", _Duration(), "10s", "How long the leader retries renewing before it steps down"),
    _Field("retry_period", _Duration(), "2s", "Pause between attempts to acquire or renew"),
))

_KUBERNETES = _Section((
    _Field("enabled", _Bool(), True, "false: dry run; decisions are logged and exported, nothing is patched"),
    _Field("kubeconfig", _Optional(_PATH), None, "Kubeconfig file; null: in-cluster config, else the default"),
    _Field("leader_election", _LEADER_ELECTION, _EMPTY, "Leader election"),
))

_THRESHOLDS = _Section((
    _Field("error_rate", _Optional(_PERCENT), 5, "Canary 5xx rate, % (rollback above; null disables)"),
    _Field("success_rate", _Optional(_PERCENT), 95, "Canary 2xx rate, % (rollback below; null disables)"),
    _Field("latency_p95_ms", _Optional(_POSITIVE), 500, "Canary P95 latency, ms (warn above; null disables)"),
    _Field("latency_p99_ms", _Optional(_POSITIVE), 1000,
           "Canary P99 latency, ms (rollback above; null disables)"),
    _Field("error_ratio", _Optional(_RATIO), 2.0,
           "Canary / stable error rate (rollback when significantly above; null disables)"),
    _Field("latency_ratio", _Optional(_RATIO), 1.5,
           "Canary P95 / stable P95 (rollback when significantly above; null disables)"),
    _Field("cpu", _Optional(_PERCENT), 80, "Canary CPU utilisation, % (warn above; null disables)"),
    _Field("memory", _Optional(_PERCENT), 80, "Canary memory utilisation, % (warn above; null disables)"),
))

_DEFAULTS = _Section((
    _Field("mesh", _choice(Mesh), "istio",
           "Traffic router: istio (VirtualService), linkerd (SMI TrafficSplit), gateway-api (HTTPRoute)"),
    _Field("traffic_steps", _Steps(), (5, 25, 50, 100), "Canary weights, %, one per step"),
    _Field("step_duration", _Duration(), "5m", "Minimum time at each step before it may pass"),
    _Field("interval", _Duration(), "30s", "Time between analysis ticks"),
    _Field("min_requests", _Int(0, 10**12, "a whole number >= 0"), 1000, "Requests per arm needed before a step may pass"),
    _Field("auto_promote", _Bool(), False, "Promote after the last step without a manual promote"),
    _Field("alpha", _Number("a number greater than 0 and at most 0.5", 0, 0.5, lo_open=True), 0.05,
           "Family-wise error rate of the statistical tests"),
    _Field("thresholds", _THRESHOLDS, _EMPTY, "Limits"),
    _Field("max_step_duration", _Optional(_Duration()), None,
           "After this long at one step a hold becomes on_max_step_duration; null: 3 × step_duration"),
    _Field("on_max_step_duration", _choice(HoldPolicy), "pause", "What a too-long hold becomes"),
    _Field("progress_deadline", _Duration(), "10m", "Time for the canary Deployment to become ready"),
    _Field("tolerance_pp", _Number("a number of percentage points between 0 and 100", 0, 100), 1.0,
           "A step passes when the canary error rate's upper bound is at most stable's + this many points"),
))

_COUNTER = _Template(counter=True)
_GAUGE = _Template(counter=False)
_QUERIES = _Section((
    _Field("requests", _COUNTER, Queries.requests, "Request counter"),
    _Field("errors", _Optional(_COUNTER), Queries.errors, "Error (5xx) counter; null skips error checks"),
    _Field("successes", _Optional(_COUNTER), Queries.successes,
           "Success (2xx) counter; null skips success_rate"),
    _Field("latency_buckets", _Optional(_COUNTER), Queries.latency_buckets,
           "Latency histogram buckets (seconds, with le); null skips latency checks"),
    _Field("cpu", _Optional(_GAUGE), None, "CPU utilisation in percent over {window}; null skips cpu"),
    _Field("memory", _Optional(_GAUGE), None, "Memory utilisation in percent; null skips memory"),
))

_ARM = _Section((
    _Field("deployment", _K8S_NAME, _REQUIRED, "The arm's Deployment"),
    _Field("selector", _SELECTOR, _REQUIRED, "Label matchers substituted for {selector} in queries"),
    _Field("backend", _Optional(_K8S_NAME), None,
           'Istio subset or SMI / HTTPRoute service; null: istio "stable"/"canary", else "<name>-stable"/"<name>-canary"'),
))

_CANARY = _Section((
    _Field("name", _K8S_LABEL, _REQUIRED, "Canary name (metrics label; default backend prefix)"),
    _Field("namespace", _K8S_LABEL, _REQUIRED, "Namespace of the route and the Deployments"),
    _Field("route", _K8S_NAME, _REQUIRED, "VirtualService / TrafficSplit / HTTPRoute name"),
    _Field("stable", _ARM, _REQUIRED, "Stable arm"),
    _Field("canary", _ARM, _REQUIRED, "Canary arm"),
    _Field("queries", _QUERIES, _EMPTY, "Query templates"),
    *_partial(_DEFAULTS, "defaults"),
))

_ALERT = _Section((
    _Field("alertname", _Str("an alert name"), _REQUIRED, "Alertmanager alertname"),
    _Field("action", _choice(AlertAction), _REQUIRED, "What the alert does to its canary (hold = pause)"),
))

_NOTIFIER = _Section((
    _Field("url", _Url("https://hooks.example.com/canaryd"), _REQUIRED, "Webhook URL"),
    _Field("format", _Choice(("json", "slack")), "json", "Payload: generic JSON or Slack-compatible"),
    _Field("timeout", _Duration(), "5s", "Timeout of one notification request"),
))

_TOP = _Section((
    _Field("server", _SERVER, _EMPTY, "HTTP server"),
    _Field("prometheus", _PROMETHEUS, _EMPTY, "Prometheus"),
    _Field("kubernetes", _KUBERNETES, _EMPTY, "Kubernetes"),
    _Field("defaults", _DEFAULTS, _EMPTY, "Analysis settings for every canary"),
    _Field("canaries", _List(_CANARY), (),
           "Watched canaries; each may also set any defaults key (thresholds merge key by key)"),
    _Field("alerts", _List(_ALERT), tuple(types.MappingProxyType({"alertname": a.alertname, "action": a.action.value})
                                         for a in DEFAULT_ALERTS),
           "Alertmanager alertname → action, matched to a canary by the labels canary|service and namespace"),
    _Field("notifications", _List(_NOTIFIER), (), "Outbound notifications of decisions"),
))


# ---------------------------------------------------------------------------------------------------------
# Building the typed config from the validated tables, with the checks that span keys

def _valid(value: object) -> bool:
    if value is _FAIL:
        return False
    if isinstance(value, Mapping):
        return all(_valid(v) for v in value.values())
    if isinstance(value, tuple):
        return all(_valid(v) for v in value)
    return True


def _check_order(ctx: _Ctx, d: Mapping[str, Any], path: str, shorter: str, longer: str, *,
                 strict: bool = False) -> None:
    """Report when d[shorter] must be below (or at most) d[longer] and is not."""
    a, b = d.get(shorter), d.get(longer)
    if not isinstance(a, float) or not isinstance(b, float):
        return
    if a > b or (strict and a == b):
        relation = "shorter than" if strict else "at most"
        ctx.add(_join(path, shorter),
                f"must be {relation} {longer} ({format_duration(b)}), got {format_duration(a)}")


def _check_election(ctx: _Ctx, le: Mapping[str, Any], path: str) -> None:
    """kubernetes_asyncio's elector refuses durations under 1 s and a renew_deadline within 1.2 × retry_period:
    say so at load rather than fail every election round."""
    for key in ("lease_duration", "renew_deadline", "retry_period"):
        v = le.get(key)
        if isinstance(v, float) and v < 1.0:
            ctx.add(_join(path, key), f"must be at least 1s (the Lease API counts whole seconds), got {format_duration(v)}")
    renew, retry = le.get("renew_deadline"), le.get("retry_period")
    if isinstance(renew, float) and isinstance(retry, float) and 1.0 <= retry < renew <= 1.2 * retry:
        ctx.add(_join(path, "renew_deadline"),
                f"must be more than 1.2 × retry_period ({format_duration(1.2 * retry)}), got {format_duration(renew)}")


def _check_settings(ctx: _Ctx, s: Mapping[str, Any], path: str, own: Mapping[str, Any] | None = None) -> None:
    # For a canary, only recheck what it changed, so a bad default is reported once, not per canary.
    if own is not None and not {"step_duration", "interval", "max_step_duration"} & own.keys():
        return
    _check_order(ctx, s, path, "interval", "step_duration")
    if s.get("max_step_duration") is not None:
        _check_order(ctx, {"step_duration": s.get("step_duration"), "max_step_duration": s["max_step_duration"]},
                     path, "step_duration", "max_step_duration")


def _settings(s: Mapping[str, Any]) -> AnalysisSettings:
    return AnalysisSettings(**{**s, "thresholds": Thresholds(**s["thresholds"])})


def _merge(defaults: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(defaults)
    for key in _DEFAULTS.keys():
        if key == "thresholds":
            merged[key] = {**defaults.get(key, {}), **own.get(key, {})} if _valid(own.get(key, {})) else _FAIL
        elif key in own:
            merged[key] = own[key]
    return merged


def _check_canaries(ctx: _Ctx, canaries: tuple[Any, ...], defaults: Mapping[str, Any]) -> None:
    seen: dict[tuple[str, str], int] = {}
    for i, c in enumerate(canaries):
        if not isinstance(c, Mapping):
            continue
        path = f"canaries[{i}]"
        if isinstance(defaults, Mapping):
            _check_settings(ctx, _merge(defaults, c), path, own=c)
        ns, name = c.get("namespace"), c.get("name")
        if isinstance(ns, str) and isinstance(name, str):
            if (ns, name) in seen:
                ctx.add(_join(path, "name"), f"duplicate canary {ns}/{name}, already defined at "
                                             f"canaries[{seen[ns, name]}]; each namespace/name must be unique")
            seen.setdefault((ns, name), i)
        stable, canary = c.get("stable"), c.get("canary")
        if not (isinstance(stable, Mapping) and isinstance(canary, Mapping)):
            continue
        for key, what in (("deployment", "Deployment"), ("selector", "selector")):
            if isinstance(stable.get(key), str) and stable.get(key) == canary.get(key):
                ctx.add(f"{path}.canary.{key}", f"is the same as stable.{key} ({stable[key]!r}); "
                                                f"the canary needs its own {what}")
        mesh = c.get("mesh", defaults.get("mesh") if isinstance(defaults, Mapping) else None)
        if isinstance(mesh, Mesh) and isinstance(name, str):
            backends = [arm.get("backend") or default_backend(mesh, name, role)
                        for role, arm in (("stable", stable), ("canary", canary))]
            if backends[0] == backends[1] and _valid(backends[0]):
                ctx.add(f"{path}.canary.backend", f"is the same as the stable backend ({backends[0]!r}); "
                                                  "the two arms need different backends")


def _check_alerts(ctx: _Ctx, alerts: tuple[Any, ...]) -> None:
    seen: dict[str, int] = {}
    for i, a in enumerate(alerts):
        name = a.get("alertname") if isinstance(a, Mapping) else None
        if isinstance(name, str):
            if name in seen:
                ctx.add(f"alerts[{i}].alertname", f"duplicate alert {name!r}, already mapped at alerts[{seen[name]}]; "
                                                  "each alertname may appear once")
            seen.setdefault(name, i)


def _build(raw: Mapping[str, Any], ctx: _Ctx) -> Config | None:
    k8s = raw.get("kubernetes")
    if isinstance(k8s, Mapping) and isinstance(k8s.get("leader_election"), Mapping):
        le = k8s["leader_election"]
        _check_order(ctx, le, "kubernetes.leader_election", "renew_deadline", "lease_duration", strict=True)
        _check_order(ctx, le, "kubernetes.leader_election", "retry_period", "renew_deadline", strict=True)
        _check_election(ctx, le, "kubernetes.leader_election")
    defaults = raw.get("defaults")
    if isinstance(defaults, Mapping):
        _check_settings(ctx, defaults, "defaults")
    if isinstance(raw.get("canaries"), tuple):
        _check_canaries(ctx, raw["canaries"], defaults)
    if isinstance(raw.get("alerts"), tuple):
        _check_alerts(ctx, raw["alerts"])
    if ctx.problems or not _valid(raw):
        return None

    server = raw["server"]
    host, port = server["listen"]
    canaries = tuple(
        CanaryConfig(name=c["name"], namespace=c["namespace"], route=c["route"],
                     stable=ArmConfig(**c["stable"]), canary=ArmConfig(**c["canary"]),
                     settings=_settings(_merge(defaults, c)), queries=Queries(**c["queries"]))
        for c in raw["canaries"]
    )
    return Config(
        server=ServerConfig(host=host, port=port, webhook_token_file=server["webhook_token_file"],
                            api_token_file=server["api_token_file"]),
        prometheus=PrometheusConfig(**raw["prometheus"]),
        kubernetes=KubernetesConfig(**{**k8s, "leader_election": LeaderElectionConfig(**k8s["leader_election"])}),
        defaults=_settings(defaults),
        canaries=canaries,
        alerts=tuple(AlertRule(**a) for a in raw["alerts"]),
        notifications=tuple(NotifierConfig(**n) for n in raw["notifications"]),
        source=ctx.source,
    )


def parse_config(data: object, source: str = "<config>") -> Config:
    """Validate already-parsed YAML/JSON data. Raises ConfigError listing every problem."""
    ctx = _Ctx(source)
    if data is None:  # an empty file: every default, no canaries
        data = {}
    if not isinstance(data, Mapping):
        ctx.add("", f"must be a mapping with the sections {', '.join(_TOP.keys())}, got {_show(data)}")
        raise ConfigError(ctx.problems)
    config = _build(_TOP.parse(data, ctx, ""), ctx)
    if ctx.problems or config is None:
        raise ConfigError(ctx.problems or [f"{source}: (top level): invalid configuration"])
    return config


# ---------------------------------------------------------------------------------------------------------
# Loading YAML

class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, which plain YAML loading silently resolves to the last."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _value in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"found duplicate key {key_node.value!r}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(source: str, error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        context = f" ({error.context})" if error.context else ""
        return f"{source}: {where}: invalid YAML: {error.problem}{context}; fix the syntax at that line"
    return f"{source}: (top level): invalid YAML: {error}"


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file. Raises ConfigError (unreadable file, bad YAML, bad values)."""
    source = str(path)
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError([f"{source}: (file): cannot read: {e.strerror or e}; give a readable YAML file"]) from None
    except UnicodeDecodeError as e:
        raise ConfigError([f"{source}: (file): not UTF-8 text at byte {e.start}; save the file as UTF-8"]) from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as e:
        raise ConfigError([_yaml_problem(source, e)]) from None
    return parse_config(data, source)


# ---------------------------------------------------------------------------------------------------------
# Reference, generated from the schema

def _format_default(f: _Field) -> str:
    if f.default is _REQUIRED:
        return "(required)"
    if f.default is _ABSENT:
        return f"({f.inherits})" if f.inherits else ""
    if f.default is None:
        return "null"
    if isinstance(f.default, bool):
        return "true" if f.default else "false"
    if isinstance(f.default, tuple | Mapping):
        return yaml.safe_dump(_plain(f.default), default_flow_style=True, sort_keys=False, width=10**6).strip()
    return str(f.default)


def _plain(value: object) -> object:
    """Tuples and read-only mappings as lists and dicts, for yaml.safe_dump."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _reference_rows(section: _Section, prefix: str, rows: list[tuple[str, str, str]]) -> None:
    for f in section.fields:
        path = _join(prefix, f.key)
        if isinstance(f.kind, _Section):
            _reference_rows(f.kind, path, rows)
        elif isinstance(f.kind, _List):
            rows.append((path, _format_default(f), f.doc))
            _reference_rows(f.kind.item, path + "[]", rows)
        else:
            doc = f"Overrides {f.inherits} for this canary" if f.inherits else f.doc
            rows.append((path, _format_default(f), f"{doc}. Allowed: {f.kind.allowed()}."))


def config_reference() -> list[tuple[str, str, str]]:
    """Every key as (key path, default as written in YAML, description), from the validating schema."""
    rows: list[tuple[str, str, str]] = []
    _reference_rows(_TOP, "", rows)
    return rows

