"""canaryd configuration: YAML → typed, validated, frozen settings.

`load_config(path)` reads a file; `parse_config(data, source)` takes data already parsed. Every problem
found is collected and raised together as one `ConfigError`; each problem reads
``<file>: <key.path>: <what is wrong>; <what is allowed>``.

The model (`model`) is the one source: each dataclass field carries its default, its doc line and its
validator kind. The schema (`schema`) that validates files, the reference (`config_reference()`) and the
JSON Schema (`json_schema()`) are derived from those fields, so documented keys and defaults cannot drift
from what is accepted. The judge's settings and thresholds live in `canaryd.analysis.settings` and are
used here as they are.

Durations are strings such as ``30s``, ``5m``, ``1h``, ``1m30s``, ``500ms`` (units d, h, m, s, ms, largest
first, each at most once) or a bare number of seconds; they are stored as float seconds.

Per-canary settings: a canary may set ``mesh:`` and any other ``defaults`` key. Its value replaces the
default; ``thresholds`` merge key by key. ``max_step_duration`` left unset everywhere is 3 × the canary's
effective step_duration. Backends left unset are resolved per mesh (`default_backend`).

Alerts: a file's ``alerts:`` extends `DEFAULT_ALERTS` (`extend_alerts`); the same alertname replaces a
default's action, ``action: ignore`` drops one.

Query templates: see `canaryd.config.queries`.
"""

from __future__ import annotations

from ..analysis.durations import format_duration, parse_duration
from .kinds import read_setting
from .load import ConfigError, load_config, parse_config
from .model import (
    DEFAULT_ALERTS,
    THRESHOLD_ACTIONS,
    AlertAction,
    AlertRule,
    AnalysisSettings,
    ArmConfig,
    CanaryConfig,
    Config,
    HoldPolicy,
    KubernetesConfig,
    LeaderElectionConfig,
    Mesh,
    NotifierConfig,
    PrometheusConfig,
    Queries,
    ServerConfig,
    Thresholds,
    default_backend,
    extend_alerts,
)
from .queries import render_query
from .reference import config_reference
from .schema import json_schema

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
    "extend_alerts",
    "format_duration",
    "json_schema",
    "load_config",
    "parse_config",
    "parse_duration",
    "read_setting",
    "render_query",
]
