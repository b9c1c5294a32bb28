"""config: the example of docs/contracts.md loads as is; every bad input names file, key path and what is allowed."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from canaryd.config import (
    DEFAULT_ALERTS,
    THRESHOLD_ACTIONS,
    AlertAction,
    AlertRule,
    AnalysisSettings,
    ArmConfig,
    CanaryConfig,
    Config,
    ConfigError,
    HoldPolicy,
    Mesh,
    NotifierConfig,
    Queries,
    Thresholds,
    config_reference,
    default_backend,
    format_duration,
    load_config,
    parse_config,
    parse_duration,
    render_query,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "canaryd.yaml"
CONTRACTS = REPO / "docs" / "contracts.md"

CANARY = """\
canaries:
  - name: auth-service
    namespace: orion
    route: auth-service
    stable: {deployment: auth-service-stable, selector: 'job="auth-service-stable"'}
    canary: {deployment: auth-service-canary, selector: 'job="auth-service-canary"'}
"""


def problems_of(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> list[str]:
    """Load `text` as ./canaryd.yaml (a relative path, as a user would pass it) and return the problems."""
    monkeypatch.chdir(tmp_path)
    Path("canaryd.yaml").write_text(textwrap.dedent(text))
    with pytest.raises(ConfigError) as info:
        load_config("canaryd.yaml")
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def load_text(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "canaryd.yaml"
    path.write_text(textwrap.dedent(text))
    return load_config(path)


# --- the contract's example ------------------------------------------------------------------------------

def test_example_is_the_contracts_block() -> None:
    contracts = CONTRACTS.read_text()
    block = contracts.split("## Config (v1)", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    assert EXAMPLE.read_text() == block


def test_example_loads_with_the_right_values() -> None:
    config = load_config(EXAMPLE)
    assert config.source == str(EXAMPLE)
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)
    assert config.server.webhook_token_file is None and config.server.api_token_file is None
    assert config.prometheus.url == "http://127.0.0.1:9090" and config.prometheus.timeout == 10.0
    assert config.kubernetes.enabled is True
    le = config.kubernetes.leader_election
    assert (le.enabled, le.namespace, le.lease) == (False, "orion", "canaryd")
    d = config.defaults
    assert d.mesh is Mesh.ISTIO
    assert d.traffic_steps == (5, 25, 50, 100)
    assert (d.step_duration, d.interval, d.min_requests, d.auto_promote, d.alpha) == (300.0, 30.0, 1000, False, 0.05)
    assert d.thresholds == Thresholds(5, 95, 500, 1000, 2.0, 1.5, 80, 80)
    assert d.max_step_duration == 900.0 and d.on_max_step_duration is HoldPolicy.PAUSE
    (canary,) = config.canaries
    assert canary.key == "orion/auth-service" and canary.route == "auth-service"
    assert canary.stable == ArmConfig("auth-service-stable", 'job="auth-service-stable"', "stable")
    assert canary.canary == ArmConfig("auth-service-canary", 'job="auth-service-canary"', "canary")
    assert canary.settings == d
    assert canary.queries == Queries()
    assert config.alerts == (
        AlertRule("CanaryHighErrorRate", AlertAction.ROLLBACK),
        AlertRule("CanaryPodCrashLooping", AlertAction.ROLLBACK),
        AlertRule("CanaryLatencyHigherThanStable", AlertAction.HOLD),
        AlertRule("CanaryErrorRateHigherThanStable", AlertAction.ROLLBACK),
    ) == DEFAULT_ALERTS
    assert config.canary("orion", "auth-service") is canary and config.canary("orion", "nope") is None


def test_empty_config_is_all_defaults() -> None:
    assert parse_config({}) == Config()
    assert parse_config(None) == Config()
    config = Config()
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)
    assert config.prometheus.url == "http://127.0.0.1:9090" and config.prometheus.retries == 3
    assert config.kubernetes.enabled and not config.kubernetes.leader_election.enabled
    assert config.canaries == () and config.notifications == () and config.alerts == DEFAULT_ALERTS
    # Sections left empty in YAML ("server:" with every key commented out) are defaults too.
    assert parse_config({"server": None, "defaults": None, "canaries": None}) == Config()


def test_config_is_frozen_and_hashable() -> None:
    config = load_config(EXAMPLE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.defaults.alpha = 0.1  # type: ignore[misc]
    with pytest.raises(TypeError):
        THRESHOLD_ACTIONS["cpu"] = "rollback"  # type: ignore[index]
    assert hash(config) == hash(load_config(EXAMPLE))


def test_threshold_actions_table() -> None:
    assert set(THRESHOLD_ACTIONS) == {f.name for f in dataclasses.fields(Thresholds)}
    rollback = {k for k, v in THRESHOLD_ACTIONS.items() if v == "rollback"}
    assert rollback == {"error_rate", "success_rate", "latency_p99_ms", "error_ratio", "latency_ratio"}
    assert {k for k, v in THRESHOLD_ACTIONS.items() if v == "warn"} == {"latency_p95_ms", "cpu", "memory"}


# --- reference generated from the schema ---------------------------------------------------------------------

def test_reference_covers_the_dataclasses() -> None:
    paths = {row[0] for row in config_reference()}
    for prefix, cls in (("defaults", AnalysisSettings), ("defaults.thresholds", Thresholds),
                        ("canaries[].queries", Queries), ("alerts[]", AlertRule),
                        ("notifications[]", NotifierConfig), ("canaries[].stable", ArmConfig)):
        for f in dataclasses.fields(cls):
            if f.name != "thresholds":
                assert f"{prefix}.{f.name}" in paths
    for row in config_reference():
        assert len(row) == 3 and all(isinstance(x, str) for x in row) and row[2]


def test_reference_defaults_are_the_loaded_defaults() -> None:
    """Writing every documented default into a file gives exactly the default Config."""
    data: dict = {}
    for path, default, _ in config_reference():
        if "[]" in path or default.startswith("("):
            continue
        *parents, leaf = path.split(".")
        node = data
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(default)
    assert parse_config(data) == Config()


def test_every_defaults_key_can_be_overridden_per_canary() -> None:
    paths = {row[0] for row in config_reference()}
    for path in paths:
        if path.startswith("defaults."):
            assert "canaries[]." + path.removeprefix("defaults.") in paths


# --- durations and templates ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("5m", 300), ("1h", 3600), ("1m30s", 90), ("500ms", 0.5), ("1h30m", 5400), ("1.5m", 90),
    ("2d", 172800), ("0s", 0), (45, 45), (2.5, 2.5), ("10", 10), (" 5m ", 300), ("1s250ms", 1.25),
])
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["-5m", "-1", -3, "5 minutes", "5x", "30m1h", "1m1m", "", "m", True, None,
                                  float("nan"), "1h-5m"])
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (0.5, "500ms"), (30, "30s"), (90, "1m30s"), (3600, "1h"), (5400, "1h30m"), (1.25, "1s250ms"),
])
def test_format_duration_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


def test_render_query_default_templates() -> None:
    q = Queries()
    args = {"selector": 'job="auth-service-canary"', "namespace": "orion", "deployment": "auth-service-canary"}
    assert render_query(q.requests, **args) == 'http_requests_total{job="auth-service-canary"}'
    assert render_query(q.errors, **args) == 'http_requests_total{job="auth-service-canary",status=~"5.."}'
    assert render_query(q.successes, **args) == 'http_requests_total{job="auth-service-canary",status=~"2.."}'
    assert render_query(q.latency_buckets, **args) == 'http_request_duration_seconds_bucket{job="auth-service-canary"}'
    cpu = 'avg(x{{pod=~"{deployment}-.*",namespace="{namespace}"}}[{window}])'
    assert render_query(cpu, window=90, **args) == 'avg(x{pod=~"auth-service-canary-.*",namespace="orion"}[1m30s])'


def test_query_overrides(tmp_path: Path) -> None:
    config = load_text(tmp_path, CANARY + """\
    queries:
      requests: 'grpc_server_handled_total{{{selector}}}'
      errors: null
      cpu: '100 * avg(rate(cpu_seconds{{namespace="{namespace}",pod=~"{deployment}-.*"}}[{window}]))'
""")
    q = config.canaries[0].queries
    assert q.requests == "grpc_server_handled_total{{{selector}}}"
    assert q.errors is None and q.successes == Queries().successes and q.memory is None
    assert q.cpu is not None and "{window}" in q.cpu


@pytest.mark.parametrize(("query", "expected"), [
    ('http_requests_total{job="x"}', "unknown placeholder {job=\"x\"}"),
    ("http_requests_total{{{selector}}}[{window}]", "unknown placeholder {window}"),
    ("http_requests_total{{{pod}}}", "unknown placeholder {pod}"),
    ("http_requests_total{{{selector!r}}}", "unknown placeholder {selector!r}"),
    ("http_requests_total", "must use {selector} or {deployment}"),
    ("sum(rate(http_requests_total{{{selector}}}[5m]))", "must be a plain series selector"),
    ("http_requests_total{{{selector}}", "is not a valid template"),
    (42, "must be a series selector template"),
])
def test_bad_query_templates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, query: object, expected: str) -> None:
    (problem,) = problems_of(tmp_path, monkeypatch, CANARY + f"    queries:\n      requests: {json.dumps(query)}\n")
    assert problem.startswith("canaryd.yaml: canaries[0].queries.requests: ")
    assert expected in problem
    assert "{selector}" in problem  # says what is allowed


# --- per-canary overrides and backends --------------------------------------------------------------------------

def test_canary_overrides_merge_over_defaults(tmp_path: Path) -> None:
    config = load_text(tmp_path, """\
defaults:
  step_duration: 2m
  min_requests: 500
  thresholds: {error_rate: 3, latency_p95_ms: 400}
canaries:
  - name: a
    namespace: orion
    route: a
    mesh: linkerd
    step_duration: 10m
    traffic_steps: [10, 100]
    thresholds: {error_rate: 1, cpu: null}
    stable: {deployment: a-stable, selector: 'job="a-stable"'}
    canary: {deployment: a-canary, selector: 'job="a-canary"'}
  - name: b
    namespace: orion
    route: b
    stable: {deployment: b-stable, selector: 'job="b-stable"'}
    canary: {deployment: b-canary, selector: 'job="b-canary"'}
""")
    a, b = config.canaries
    assert a.settings.mesh is Mesh.LINKERD and config.defaults.mesh is Mesh.ISTIO
    assert a.settings.traffic_steps == (10, 100) and a.settings.step_duration == 600
    assert a.settings.max_step_duration == 1800  # 3 × the canary's own step_duration
    assert a.settings.min_requests == 500  # inherited
    t = a.settings.thresholds
    assert (t.error_rate, t.latency_p95_ms, t.cpu, t.memory, t.success_rate) == (1, 400, None, 80, 95)
    assert b.settings == config.defaults
    assert config.defaults.thresholds.error_rate == 3 and config.defaults.max_step_duration == 360


def test_explicit_max_step_duration_is_inherited(tmp_path: Path) -> None:
    config = load_text(tmp_path, "defaults: {max_step_duration: 1h, on_max_step_duration: rollback}\n" + CANARY)
    assert config.canaries[0].settings.max_step_duration == 3600
    assert config.canaries[0].settings.on_max_step_duration is HoldPolicy.ROLLBACK


@pytest.mark.parametrize(("mesh", "stable", "canary"), [
    ("istio", "stable", "canary"),
    ("linkerd", "auth-service-stable", "auth-service-canary"),
    ("gateway-api", "auth-service-stable", "auth-service-canary"),
])
def test_backend_defaults_per_mesh(tmp_path: Path, mesh: str, stable: str, canary: str) -> None:
    config = load_text(tmp_path, CANARY + f"    mesh: {mesh}\n")
    c = config.canaries[0]
    assert (c.stable.backend, c.canary.backend) == (stable, canary)
    assert default_backend(Mesh(mesh), "auth-service", "canary") == canary


def test_explicit_backend_is_kept(tmp_path: Path) -> None:
    text = CANARY.replace("selector: 'job=\"auth-service-canary\"'", "selector: 'job=\"auth-service-canary\"', backend: v2")
    c = load_text(tmp_path, text).canaries[0]
    assert (c.stable.backend, c.canary.backend) == ("stable", "v2")


def test_backends_resolved_for_configs_built_in_code() -> None:
    c = CanaryConfig("web", "shop", "web", ArmConfig("web", 'app="web"'), ArmConfig("web-next", 'app="next"'),
                     settings=AnalysisSettings(mesh=Mesh.GATEWAY_API))
    assert (c.stable.backend, c.canary.backend) == ("web-stable", "web-canary")


def test_other_sections(tmp_path: Path) -> None:
    config = load_text(tmp_path, """\
server: {listen: '[::1]:9000', webhook_token_file: /run/secrets/webhook}
prometheus: {url: 'https://prom.example:9090/prometheus/', timeout: 2500ms, retries: 0}
kubernetes:
  enabled: false
  kubeconfig: /home/me/.kube/config
  leader_election: {enabled: true, namespace: ops, lease: canaryd, lease_duration: 30s, renew_deadline: 20s, retry_period: 5}
alerts: []
notifications:
  - {url: 'https://hooks.slack.com/services/x', format: slack}
  - {url: 'http://127.0.0.1:9999/hook', timeout: 1s}
""")
    assert (config.server.host, config.server.port) == ("::1", 9000)
    assert config.server.webhook_token_file == "/run/secrets/webhook"
    assert config.prometheus.url == "https://prom.example:9090/prometheus" and config.prometheus.timeout == 2.5
    assert config.kubernetes.enabled is False and config.kubernetes.kubeconfig == "/home/me/.kube/config"
    assert config.kubernetes.leader_election.retry_period == 5.0
    assert config.alerts == DEFAULT_ALERTS  # an empty list extends the defaults by nothing
    assert config.notifications == (NotifierConfig("https://hooks.slack.com/services/x", "slack", 5.0),
                                    NotifierConfig("http://127.0.0.1:9999/hook", "json", 1.0))


# --- bad input: every message names file, key path and what is allowed ------------------------------------------

def test_unknown_key_suggests_the_nearest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    problems = problems_of(tmp_path, monkeypatch, "defaults:\n  step_duraton: 5m\n")
    assert problems == ["canaryd.yaml: defaults.step_duraton: unknown key; did you mean 'step_duration'?"]


def test_unknown_key_without_a_near_one_lists_the_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (problem,) = problems_of(tmp_path, monkeypatch, "server: {zzz: 1}\n")
    assert problem == ("canaryd.yaml: server.zzz: unknown key; allowed keys are listen, webhook_token_file, "
                       "api_token_file, metrics_detail")
    (problem,) = problems_of(tmp_path, monkeypatch, "servr: {}\n")
    assert problem == "canaryd.yaml: servr: unknown key; did you mean 'server'?"
    (problem,) = problems_of(tmp_path, monkeypatch, CANARY + "    thresholds: {eror_rate: 1}\n")
    assert problem == "canaryd.yaml: canaries[0].thresholds.eror_rate: unknown key; did you mean 'error_rate'?"


def test_wrong_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (problem,) = problems_of(tmp_path, monkeypatch, CANARY + "    thresholds: {error_rate: high}\n")
    assert problem == "canaryd.yaml: canaries[0].thresholds.error_rate: must be a number between 0 and 100, got 'high'"
    (problem,) = problems_of(tmp_path, monkeypatch, "kubernetes: {enabled: 'yes please'}\n")
    assert problem == "canaryd.yaml: kubernetes.enabled: must be true or false, got 'yes please'"
    (problem,) = problems_of(tmp_path, monkeypatch, "defaults: {min_requests: 10.5}\n")
    assert problem == "canaryd.yaml: defaults.min_requests: must be a whole number >= 0, got 10.5"
    (problem,) = problems_of(tmp_path, monkeypatch, "defaults: [1, 2]\n")
    assert problem.startswith("canaryd.yaml: defaults: must be a mapping with the keys mesh, traffic_steps,")
    assert problem.endswith("got a list")


@pytest.mark.parametrize(("steps", "path", "message"), [
    ("[5, 50, 25, 100]", "defaults.traffic_steps[2]",
     "must be greater than the previous step 50, got 25; steps are strictly increasing percentages 1-100"),
    ("[5, 5]", "defaults.traffic_steps[1]", "must be greater than the previous step 5, got 5"),
    ("[5, 25, 150]", "defaults.traffic_steps[2]", "must be a whole percentage between 1 and 100, got 150"),
    ("[0, 50]", "defaults.traffic_steps[0]", "must be a whole percentage between 1 and 100, got 0"),
    ("[5, 12.5]", "defaults.traffic_steps[1]", "must be a whole percentage between 1 and 100, got 12.5"),
    ("[]", "defaults.traffic_steps", "must be a non-empty list of whole percentages 1-100"),
    ("'5,25,50,100'", "defaults.traffic_steps", "such as [5, 25, 50, 100], got '5,25,50,100'"),
])
def test_bad_traffic_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, steps: str, path: str, message: str) -> None:
    (problem,) = problems_of(tmp_path, monkeypatch, f"defaults: {{traffic_steps: {steps}}}\n")
    assert problem.startswith(f"canaryd.yaml: {path}: ")
    assert message in problem


def test_bad_durations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Problems come in schema order (server, prometheus, kubernetes, defaults, ...), not file order.
    zero, negative, malformed = problems_of(tmp_path, monkeypatch, """\
defaults: {step_duration: -5m, interval: 5 minutes}
prometheus: {timeout: 0s}
""")
    form = "a duration such as 30s, 5m, 1h, 1m30s or 500ms (a bare number means seconds)"
    assert negative == f"canaryd.yaml: defaults.step_duration: must not be negative, got '-5m'; use {form}"
    assert malformed == f"canaryd.yaml: defaults.interval: must be {form}, greater than 0, got '5 minutes'"
    assert zero == f"canaryd.yaml: prometheus.timeout: must be greater than 0, got '0s'; use {form}"


def test_bad_mesh_and_alert_action(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mesh, action = problems_of(tmp_path, monkeypatch, """\
defaults: {mesh: istoi}
alerts: [{alertname: CanaryHighErrorRate, action: explode}]
""")
    assert mesh == ("canaryd.yaml: defaults.mesh: must be one of istio, linkerd, gateway-api, got 'istoi'; "
                    "did you mean 'istio'?")
    assert action == "canaryd.yaml: alerts[0].action: must be one of rollback, pause, hold, ignore, got 'explode'"
    (problem,) = problems_of(tmp_path, monkeypatch, CANARY + "    mesh: smi\n")
    assert problem.startswith("canaryd.yaml: canaries[0].mesh: must be one of istio, linkerd, gateway-api")


def test_duplicate_canary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    body = CANARY.split("\n", 1)[1]
    (problem,) = problems_of(tmp_path, monkeypatch, CANARY + body)
    assert problem == ("canaryd.yaml: canaries[1].name: duplicate canary orion/auth-service, already defined at "
                       "canaries[0]; each namespace/name must be unique")
    # The same name in another namespace is a different canary.
    config = load_text(tmp_path, CANARY + body.replace("namespace: orion", "namespace: other"))
    assert [c.key for c in config.canaries] == ["orion/auth-service", "other/auth-service"]


def test_duplicate_alert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (problem,) = problems_of(tmp_path, monkeypatch, """\
alerts:
  - {alertname: A, action: rollback}
  - {alertname: A, action: pause}
""")
    assert problem == ("canaryd.yaml: alerts[1].alertname: duplicate alert 'A', already mapped at alerts[0]; "
                       "each alertname may appear once")


def test_alerts_extend_the_defaults(tmp_path: Path) -> None:
    config = load_text(tmp_path, """\
alerts:
  - {alertname: MyAppDown, action: pause}
  - {alertname: CanaryLatencyHigherThanStable, action: rollback}
  - {alertname: CanaryPodCrashLooping, action: ignore}
""")
    # Defaults keep their place with the user's action; new names follow in the user's order.
    assert config.alerts == (
        AlertRule("CanaryHighErrorRate", AlertAction.ROLLBACK),
        AlertRule("CanaryPodCrashLooping", AlertAction.IGNORE),
        AlertRule("CanaryLatencyHigherThanStable", AlertAction.ROLLBACK),
        AlertRule("CanaryErrorRateHigherThanStable", AlertAction.ROLLBACK),
        AlertRule("MyAppDown", AlertAction.PAUSE),
    )
    # The example's list before CanaryErrorRateHigherThanStable was a default no longer drops it.
    config = load_text(tmp_path, "alerts:\n  - {alertname: CanaryHighErrorRate, action: rollback}\n")
    assert config.alerts == DEFAULT_ALERTS
    assert load_text(tmp_path, "alerts:\n").alerts == DEFAULT_ALERTS


def test_a_duplicate_of_a_default_is_still_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (problem,) = problems_of(tmp_path, monkeypatch, """\
alerts:
  - {alertname: CanaryHighErrorRate, action: ignore}
  - {alertname: CanaryHighErrorRate, action: pause}
""")
    assert problem == ("canaryd.yaml: alerts[1].alertname: duplicate alert 'CanaryHighErrorRate', already mapped "
                       "at alerts[0]; each alertname may appear once")


def _alerts_in(path: Path) -> list[dict[str, str]]:
    data = yaml.safe_load(path.read_text())
    if "data" in data:  # a ConfigMap: the config is its one file
        (text,) = data["data"].values()
        data = yaml.safe_load(text)
    return data["alerts"]


def test_every_shipped_config_lists_exactly_the_defaults() -> None:
    """A user copies an example: it must show every default, so that none looks optional."""
    defaults = [{"alertname": r.alertname, "action": r.action.value} for r in DEFAULT_ALERTS]
    shipped = [*sorted((REPO / "examples").glob("*.yaml")), REPO / "deploy" / "configmap.yaml"]
    # examples/canary.yaml is a Canary object, not a config file: it has no alerts to list
    shipped = [p for p in shipped if (yaml.safe_load(p.read_text()) or {}).get("kind") != "Canary"]
    for path in shipped:
        assert _alerts_in(path) == defaults, path


def test_alertmanager_routes_send_every_default_alert() -> None:
    names = {r.alertname for r in DEFAULT_ALERTS}
    for path in (REPO / "README.md", REPO / "deploy" / "examples" / "alertmanager.yml"):
        (routed,) = re.findall(r'alertname =~ "([^"]+)"', path.read_text())
        assert set(routed.split("|")) == names, path


@pytest.mark.parametrize("listen", ["localhost", "8080", "'::1:8080'", "':8080'", "'127.0.0.1:70000'",
                                    "'[zz]:80'", "'host name:80'"])
def test_bad_listen_address(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listen: str) -> None:
    (problem,) = problems_of(tmp_path, monkeypatch, f"server: {{listen: {listen}}}\n")
    assert problem.startswith("canaryd.yaml: server.listen: must be host:port such as 127.0.0.1:8080, "
                              "0.0.0.0:8080 or [::1]:8080 (port 0-65535), got ")


@pytest.mark.parametrize(("listen", "host", "port"), [
    ("0.0.0.0:0", "0.0.0.0", 0), ("localhost:8080", "localhost", 8080), ("[::]:443", "::", 443),
])
def test_good_listen_address(listen: str, host: str, port: int) -> None:
    server = parse_config({"server": {"listen": listen}}).server
    assert (server.host, server.port) == (host, port)


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (problem,) = problems_of(tmp_path, monkeypatch, "server:\n  listen: 127.0.0.1:8080\n defaults: [\n")
    assert problem.startswith("canaryd.yaml: line 3, column ")
    assert "invalid YAML" in problem
    (problem,) = problems_of(tmp_path, monkeypatch, "defaults:\n  mesh: istio\n  mesh: linkerd\n")
    assert problem.startswith("canaryd.yaml: line 3, column 3: invalid YAML: found duplicate key 'mesh'")


def test_top_level_must_be_a_mapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (problem,) = problems_of(tmp_path, monkeypatch, "- server\n- defaults\n")
    assert problem == ("canaryd.yaml: (top level): must be a mapping with the sections server, prometheus, "
                       "kubernetes, defaults, canaries, alerts, notifications, got a list")
    with pytest.raises(ConfigError, match=r"^<config>: \(top level\): must be a mapping"):
        parse_config("just text")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing.yaml: \\(file\\): cannot read: No such file"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "latin1.yaml").write_bytes(b"server: {listen: \xe9}\n")
    with pytest.raises(ConfigError, match="latin1.yaml: \\(file\\): not UTF-8"):
        load_config(tmp_path / "latin1.yaml")


def test_several_problems_are_reported_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    problems = problems_of(tmp_path, monkeypatch, """\
server: {listen: nowhere}
prometheus: {url: 'ftp://prom:9090'}
defaults:
  alpha: 0.7
  traffic_steps: [50, 25]
canaries:
  - name: Auth_Service
    namespace: orion
    stable: {deployment: auth-stable, selector: '{job="a"}'}
    canary: {deployment: auth-stable, selector: 'job="b"'}
""")
    assert problems == [
        "canaryd.yaml: server.listen: must be host:port such as 127.0.0.1:8080, 0.0.0.0:8080 or [::1]:8080 "
        "(port 0-65535), got 'nowhere'",
        "canaryd.yaml: prometheus.url: must be an http:// or https:// URL such as http://127.0.0.1:9090, "
        "got 'ftp://prom:9090'",
        "canaryd.yaml: defaults.traffic_steps[1]: must be greater than the previous step 50, got 25; "
        "steps are strictly increasing percentages 1-100",
        "canaryd.yaml: defaults.alpha: must be a number greater than 0 and at most 0.5, got 0.7",
        "canaryd.yaml: canaries[0].name: must be a Kubernetes name (DNS-1123 label: lowercase letters, digits "
        "and '-', at most 63), got 'Auth_Service'",
        "canaryd.yaml: canaries[0].route: missing required key; must be a Kubernetes name (DNS-1123 subdomain: "
        "lowercase letters, digits, '-' and '.', at most 253)",
        "canaryd.yaml: canaries[0].stable.selector: must be PromQL label matchers without braces, such as "
        "job=\"auth-service-canary\", got '{job=\"a\"}'",
        "canaryd.yaml: canaries[0].canary.deployment: is the same as stable.deployment ('auth-stable'); "
        "the canary needs its own Deployment",
    ]


@pytest.mark.parametrize(("text", "expected"), [
    ("kubernetes: {leader_election: {lease_duration: 10s, renew_deadline: 10s}}",
     "kubernetes.leader_election.renew_deadline: must be shorter than lease_duration (10s), got 10s"),
    ("kubernetes: {leader_election: {retry_period: 12s}}",
     "kubernetes.leader_election.retry_period: must be shorter than renew_deadline (10s), got 12s"),
    ("defaults: {step_duration: 5m, max_step_duration: 4m}",
     "defaults.step_duration: must be at most max_step_duration (4m), got 5m"),
    ("defaults: {interval: 10m}", "defaults.interval: must be at most step_duration (5m), got 10m"),
    ("defaults: {thresholds: {error_ratio: 0.5}}",
     "defaults.thresholds.error_ratio: must be a number of at least 1 (canary / stable), got 0.5"),
    ("defaults: {alpha: 0}", "defaults.alpha: must be a number greater than 0 and at most 0.5, got 0"),
    ("defaults: {on_max_step_duration: hold}",
     "defaults.on_max_step_duration: must be one of pause, rollback, got 'hold'"),
    ("notifications: [{url: 'http://x', format: xml}]",
     "notifications[0].format: must be one of json, slack, got 'xml'"),
    ("notifications: [{format: json}]", "notifications[0].url: missing required key; must be an http:// or"),
    ("alerts: [CanaryHighErrorRate]", "alerts[0]: must be a mapping with the keys alertname, action, got "),
    ("canaries: {name: x}", "canaries: must be a list of mappings with the keys name, namespace, route,"),
    ("server: {1: x}", "server.1: unknown key; allowed keys are listen,"),
    ("server: {api_token_file: ''}", "server.api_token_file: must be a file path, got ''"),
])
def test_other_bad_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, expected: str) -> None:
    (problem,) = problems_of(tmp_path, monkeypatch, text + "\n")
    assert problem.startswith("canaryd.yaml: " + expected)


def test_canary_checks_after_merge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A canary that lengthens its step past an explicit default max_step_duration is caught on the canary.
    (problem,) = problems_of(tmp_path, monkeypatch, "defaults: {max_step_duration: 10m}\n" + CANARY
                             + "    step_duration: 20m\n")
    assert problem == "canaryd.yaml: canaries[0].step_duration: must be at most max_step_duration (10m), got 20m"
    # Both arms on the same explicit backend cannot be split.
    text = CANARY.replace("'}\n", "', backend: v1}\n")
    (problem,) = problems_of(tmp_path, monkeypatch, text)
    assert problem == ("canaryd.yaml: canaries[0].canary.backend: is the same as the stable backend ('v1'); "
                       "the two arms need different backends")
    # A bad default is reported once, not again for every canary that inherits it.
    assert len(problems_of(tmp_path, monkeypatch, "defaults: {interval: 1h}\n" + CANARY)) == 1


def test_parse_config_names_its_source() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"defaults": {"mesh": 1}}, source="inline")
    assert info.value.problems == ["inline: defaults.mesh: must be one of istio, linkerd, gateway-api, got 1"]


# --- CLI: canaryd validate FILE ---------------------------------------------------------------------------------

needs_cli = pytest.mark.skipif(importlib.util.find_spec("canaryd.cli") is None,
                               reason="canaryd.cli (owned by the lead) does not exist yet")


def run_validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "canaryd.cli", "validate", str(path)],
                          capture_output=True, text=True, timeout=60)


@needs_cli
def test_cli_validate_ok() -> None:
    result = run_validate(EXAMPLE)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout.lower()
    assert "Traceback" not in result.stderr


@needs_cli
def test_cli_validate_reports_problems(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("defaults:\n  step_duraton: 5m\n  mesh: istoi\n")
    result = run_validate(path)
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert f"{path}: defaults.step_duraton: unknown key; did you mean 'step_duration'?" in output
    assert f"{path}: defaults.mesh: must be one of istio, linkerd, gateway-api" in output
    assert "Traceback" not in output


@needs_cli
@pytest.mark.parametrize("text", ["defaults: [\n", None])
def test_cli_validate_bad_yaml_or_missing_file(tmp_path: Path, text: str | None) -> None:
    path = tmp_path / "broken.yaml"
    if text is not None:
        path.write_text(text)
    result = run_validate(path)
    assert result.returncode == 2
    assert str(path) in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_leader_election_durations_the_elector_would_refuse_are_config_errors():
    with pytest.raises(ConfigError) as e:
        parse_config({"kubernetes": {"leader_election": {"enabled": True, "retry_period": "0.5s",
                                                         "renew_deadline": "2s", "lease_duration": "3s"}}}, "c.yaml")
    assert "c.yaml: kubernetes.leader_election.retry_period: must be at least 1s" in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_config({"kubernetes": {"leader_election": {"retry_period": "1.8s", "renew_deadline": "2s",
                                                         "lease_duration": "3s"}}}, "c.yaml")
    assert "renew_deadline: must be more than 1.2 × retry_period" in str(e.value)
    ok = parse_config({"kubernetes": {"leader_election": {"retry_period": "1s", "renew_deadline": "2s",
                                                          "lease_duration": "3s"}}}, "c.yaml")
    assert ok.kubernetes.leader_election.retry_period == 1.0


def test_an_empty_file_is_refused_and_an_empty_mapping_is_every_default(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing but a comment\n")
    with pytest.raises(ConfigError) as e:
        load_config(empty)
    assert e.value.problems == [f"{empty}: (file): the file is empty; a config is a mapping of sections such as "
                                "canaries:, or {} for every default (see examples/canaryd.yaml)"]
    braces = tmp_path / "defaults.yaml"
    braces.write_text("{}\n")
    assert load_config(braces) == dataclasses.replace(Config(), source=str(braces))


def test_a_deeply_nested_file_is_one_problem_not_a_recursion_error(tmp_path: Path) -> None:
    deep = tmp_path / "deep.yaml"
    deep.write_text("defaults: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError) as e:
        load_config(deep)
    assert e.value.problems == [f"{deep}: (file): nested too deeply to read; a canaryd config is at most a few "
                                "levels deep (see examples/canaryd.yaml)"]
