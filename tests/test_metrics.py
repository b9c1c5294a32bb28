"""metrics.py: the canaryd_* contract, one-hot gauges, series lifecycle and promtool-clean output."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import threading
import tracemalloc
from collections.abc import Iterable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from canaryd import __version__
from canaryd.metrics import (
    DECISIONS,
    OTHER_ALERTNAME,
    PHASES,
    PROMETHEUS_ERROR_KINDS,
    ROLLBACK_TRIGGERS,
    VERDICTS,
    MetricObservation,
    Metrics,
    render,
)

PROMTOOL = "/usr/bin/promtool"
CONTRACT = [
    "canaryd_canary_weight",
    "canaryd_canary_phase",
    "canaryd_decisions_total",
    "canaryd_rollbacks_total",
    "canaryd_promotions_total",
    "canaryd_metric_verdict",
    "canaryd_metric_p_value",
    "canaryd_metric_ratio",
    "canaryd_analysis_duration_seconds",
    "canaryd_alerts_received_total",
    "canaryd_prometheus_errors_total",
    "canaryd_router_updates_total",
    "canaryd_is_leader",
    "canaryd_build_info",
    "canaryd_config_reload_success",
    "canaryd_config_reloads_total",
]


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def m(registry: CollectorRegistry) -> Metrics:
    # Full detail: every series the contract names has samples (basic detail is tested on its own below).
    return Metrics(registry, detail="full")


def val(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def exercise(m: Metrics) -> None:
    """Every method once, for two canaries."""
    for ns, name in (("orion", "auth-service"), ("billing", "api")):
        m.set_phase(ns, name, "progressing")
        m.set_weight(ns, name, 25)
        m.observe_decision(ns, name, "advance", [
            MetricObservation("error_rate", "pass", 0.8, 1.1),
            ("latency_p95", "warn", None, 1.3),
            ("cpu", "skipped", None, None),
        ])
        m.router_update(ns, name, "ok")
    m.rollback("orion", "auth-service", "alert")
    m.promotion("billing", "api")
    m.alert_received("CanaryHighErrorRate", "firing", "accepted")
    m.alert_received("CanaryHighErrorRate", "firing", "duplicate")
    m.prometheus_error("timeout")
    m.set_leader(True)
    m.observe_analysis(0.2)
    with m.time_analysis():
        pass


def test_contract_names_present_and_no_double_suffix(m: Metrics, registry: CollectorRegistry) -> None:
    exercise(m)
    body, content_type = render(registry)
    text = body.decode()
    assert content_type.startswith("text/plain; version=0.0.4")
    names = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.M))
    for name in CONTRACT:
        expected = name + "_bucket" if name.endswith("_seconds") else name
        assert expected in names, name
    assert "_total_total" not in text
    assert "_created" not in text
    assert {n for n in names if n.startswith("canaryd_")} <= {
        *CONTRACT, "canaryd_analysis_duration_seconds_bucket", "canaryd_analysis_duration_seconds_count",
        "canaryd_analysis_duration_seconds_sum",
    }
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert families["canaryd_decisions"] == "counter"
    assert families["canaryd_analysis_duration_seconds"] == "histogram"
    assert families["canaryd_canary_phase"] == "gauge"


@pytest.mark.skipif(not os.access(PROMTOOL, os.X_OK), reason="promtool not installed")
def test_promtool_check_metrics_reports_nothing(m: Metrics, registry: CollectorRegistry) -> None:
    fresh, _ = render(registry)  # before any canary exists
    exercise(m)
    full, _ = render(registry)
    for body in (fresh, full):
        r = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True, timeout=30)
        assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
        assert r.stdout == b"" and r.stderr == b"", r.stdout.decode() + r.stderr.decode()


def test_openmetrics_on_request(m: Metrics, registry: CollectorRegistry) -> None:
    exercise(m)
    body, content_type = render(registry, "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    text = body.decode()
    assert text.endswith("# EOF\n")
    assert "canaryd_decisions_total{" in text and "_created" not in text


def test_phase_is_one_hot(m: Metrics, registry: CollectorRegistry) -> None:
    m.set_phase("orion", "auth-service", "progressing")
    m.set_phase("orion", "auth-service", "rolled_back")
    got = {p: val(registry, "canaryd_canary_phase", namespace="orion", canary="auth-service", phase=p)
           for p in PHASES}
    assert got == {p: (1.0 if p == "rolled_back" else 0.0) for p in PHASES}


def test_counters_start_at_zero_for_every_label_value(m: Metrics, registry: CollectorRegistry) -> None:
    m.set_weight("orion", "auth-service", 5)
    lab = {"namespace": "orion", "canary": "auth-service"}
    assert val(registry, "canaryd_canary_weight", **lab) == 5
    for d in DECISIONS:
        assert val(registry, "canaryd_decisions_total", **lab, decision=d) == 0
    for t in ROLLBACK_TRIGGERS:
        assert val(registry, "canaryd_rollbacks_total", **lab, trigger=t) == 0
    assert val(registry, "canaryd_promotions_total", **lab) == 0
    for o in ("ok", "conflict_retry", "error"):
        assert val(registry, "canaryd_router_updates_total", **lab, outcome=o) == 0
    m.rollback("orion", "auth-service", "analysis")
    m.rollback("orion", "auth-service", "analysis")
    m.promotion("orion", "auth-service")
    m.router_update("orion", "auth-service", "conflict_retry")
    assert val(registry, "canaryd_rollbacks_total", **lab, trigger="analysis") == 2
    assert val(registry, "canaryd_promotions_total", **lab) == 1
    assert val(registry, "canaryd_router_updates_total", **lab, outcome="conflict_retry") == 1


def test_decision_verdicts_p_values_and_ratios(m: Metrics, registry: CollectorRegistry) -> None:
    lab = {"namespace": "orion", "canary": "auth-service"}
    m.observe_decision("orion", "auth-service", "hold", [
        ("error_rate", "inconclusive", 0.3, 1.4),
        ("latency_p95", "pass", 0.9, 1.0),
    ])
    assert val(registry, "canaryd_decisions_total", **lab, decision="hold") == 1
    verdicts = {v: val(registry, "canaryd_metric_verdict", **lab, metric="error_rate", verdict=v) for v in VERDICTS}
    assert verdicts == {v: (1.0 if v == "inconclusive" else 0.0) for v in VERDICTS}
    assert val(registry, "canaryd_metric_p_value", **lab, metric="error_rate") == 0.3
    assert val(registry, "canaryd_metric_ratio", **lab, metric="error_rate") == 1.4

    # Next decision: error_rate fails with no p-value (removed, not NaN); latency_p95 drops out.
    m.observe_decision("orion", "auth-service", "rollback", [("error_rate", "fail", None, float("nan"))])
    assert val(registry, "canaryd_decisions_total", **lab, decision="rollback") == 1
    assert val(registry, "canaryd_metric_verdict", **lab, metric="error_rate", verdict="fail") == 1
    assert val(registry, "canaryd_metric_verdict", **lab, metric="error_rate", verdict="inconclusive") == 0
    assert val(registry, "canaryd_metric_p_value", **lab, metric="error_rate") is None
    assert val(registry, "canaryd_metric_ratio", **lab, metric="error_rate") is None
    for v in VERDICTS:
        assert val(registry, "canaryd_metric_verdict", **lab, metric="latency_p95", verdict=v) is None
    assert val(registry, "canaryd_metric_p_value", **lab, metric="latency_p95") is None
    assert "NaN" not in render(registry)[0].decode()


def test_forget_removes_every_series_of_one_canary(m: Metrics, registry: CollectorRegistry) -> None:
    exercise(m)
    m.forget("orion", "auth-service")
    text = render(registry)[0].decode()
    assert 'namespace="orion"' not in text
    assert 'namespace="billing"' in text
    # Coming back starts from zero again.
    m.set_phase("orion", "auth-service", "idle")
    assert val(registry, "canaryd_rollbacks_total", namespace="orion", canary="auth-service", trigger="alert") == 0


def test_daemon_wide_metrics(m: Metrics, registry: CollectorRegistry) -> None:
    assert val(registry, "canaryd_build_info", version=__version__) == 1
    assert val(registry, "canaryd_is_leader") == 0
    m.set_leader(True)
    assert val(registry, "canaryd_is_leader") == 1
    m.set_leader(False)
    assert val(registry, "canaryd_is_leader") == 0

    for kind in PROMETHEUS_ERROR_KINDS:
        assert val(registry, "canaryd_prometheus_errors_total", kind=kind) == 0
    m.prometheus_error("timeout")
    m.prometheus_error("api")
    m.prometheus_error("something-new")  # counted, as "other"
    total = sum(val(registry, "canaryd_prometheus_errors_total", kind=k) or 0 for k in PROMETHEUS_ERROR_KINDS)
    assert total == 3 and val(registry, "canaryd_prometheus_errors_total", kind="other") == 1

    m.alert_received("CanaryHighErrorRate", "firing", "accepted")
    m.alert_received("CanaryHighErrorRate", "firing", "accepted")
    assert val(registry, "canaryd_alerts_received_total", alertname="CanaryHighErrorRate", status="firing",
               outcome="accepted") == 2

    m.observe_analysis(0.3)
    with pytest.raises(RuntimeError), m.time_analysis():
        raise RuntimeError("a failed tick is still timed")
    assert val(registry, "canaryd_analysis_duration_seconds_count") == 2
    assert val(registry, "canaryd_analysis_duration_seconds_bucket", le="0.5") == 2


def test_build_info_version_override(registry: CollectorRegistry) -> None:
    Metrics(registry, version="9.9.9")
    assert val(registry, "canaryd_build_info", version="9.9.9") == 1


def test_bad_label_values_fail_loudly(m: Metrics) -> None:
    with pytest.raises(ValueError, match="phase: 'running' is not one of idle"):
        m.set_phase("orion", "a", "running")
    with pytest.raises(ValueError, match="decision"):
        m.observe_decision("orion", "a", "promote")
    with pytest.raises(ValueError, match="verdict"):
        m.observe_decision("orion", "a", "hold", [("error_rate", "ok", None, None)])
    with pytest.raises(ValueError, match="trigger"):
        m.rollback("orion", "a", "panic")
    with pytest.raises(ValueError, match="outcome"):
        m.router_update("orion", "a", "fine")


def test_registries_are_independent() -> None:
    r1, r2 = CollectorRegistry(), CollectorRegistry()
    m1, _ = Metrics(r1), Metrics(r2)
    m1.promotion("orion", "a")
    assert r1.get_sample_value("canaryd_promotions_total", {"namespace": "orion", "canary": "a"}) == 1
    assert r2.get_sample_value("canaryd_promotions_total", {"namespace": "orion", "canary": "a"}) is None


def test_render_leaves_registry_intact(m: Metrics, registry: CollectorRegistry) -> None:
    exercise(m)
    render(registry)
    # The view copies families; the registry still has its _created samples for other consumers.
    names = {s.name for f in registry.collect() for s in f.samples}
    assert "canaryd_decisions_created" in names


# --- the scrape is the same as before the per-canary collector --------------------------------


def golden_scenario(m: Metrics) -> None:
    """Phase and weight changes, verdict changes, None/NaN values, a metric dropping out."""
    m.set_phase("orion", "auth-service", "progressing")
    m.set_weight("orion", "auth-service", 25)
    m.router_update("orion", "auth-service", "ok")
    m.router_update("orion", "auth-service", "conflict_retry")
    m.router_update("orion", "auth-service", "ok")
    m.observe_decision("orion", "auth-service", "hold", [
        MetricObservation("error_rate", "inconclusive", 0.3, 1.4),
        ("latency_p95", "pass", 0.9, 1.0),
        ("cpu", "warn", 0.04, 1.25),
    ])
    m.observe_decision("orion", "auth-service", "advance", [
        ("error_rate", "pass", 0.5, None),
        ("latency_p95", "warn", None, 1.5),
        ("memory", "skipped", None, float("nan")),
    ])
    m.observe_decision("orion", "auth-service", "rollback", [
        ("error_rate", "fail", 0.001, 3.5),
        ("latency_p95", "warn", None, 1.5),
        ("memory", "skipped", None, None),
    ])
    m.set_weight("orion", "auth-service", 0)
    m.rollback("orion", "auth-service", "analysis")
    m.set_phase("orion", "auth-service", "rolled_back")
    m.set_phase("billing", "api", "promoting")
    m.set_weight("billing", "api", 100)
    m.promotion("billing", "api")
    m.alert_received("CanaryHighErrorRate", "firing", "accepted")
    m.prometheus_error("timeout")
    m.set_leader(True)
    m.observe_analysis(0.2)


# The lines every scrape of `golden_scenario` starts with, in either detail: every family announced, the
# daemon-wide series.
_SCRAPE_HEAD = (
    '# HELP canaryd_alerts_received_total Alertmanager alerts received, by alertname, status and outcome.',
    '# HELP canaryd_analysis_duration_seconds Wall time of one analysis tick.',
    '# HELP canaryd_build_info Always 1; the version label names the build.',
    "# HELP canaryd_canary_phase 1 for the canary's current rollout phase (full metrics detail: also 0 for the others).",
    '# HELP canaryd_canary_weight Canary traffic share in percent (0-100).',
    '# HELP canaryd_config_reload_success 1 if the last config reload was applied, 0 if it was refused (the running config stays).',
    '# HELP canaryd_config_reloads_total Config reloads (SIGHUP or a changed file), by outcome.',
    '# HELP canaryd_decisions_total Analysis decisions made, by decision.',
    '# HELP canaryd_is_leader 1 if this replica is the leader and acts.',
    '# HELP canaryd_metric_p_value p-value of the latest test of each judged metric (full metrics detail only).',
    '# HELP canaryd_metric_ratio Canary/stable ratio of each judged metric at the latest decision (full metrics detail only).',
    '# HELP canaryd_metric_verdict 1 for the current verdict of each metric that fails or warns (full metrics detail: of each judged metric, and 0 for the other verdicts).',
    '# HELP canaryd_prometheus_errors_total Failed Prometheus queries, by kind.',
    '# HELP canaryd_promotions_total Promotions performed.',
    '# HELP canaryd_rollbacks_total Rollbacks performed, by trigger.',
    '# HELP canaryd_router_updates_total Traffic route writes, by outcome.',
    '# TYPE canaryd_alerts_received_total counter',
    '# TYPE canaryd_analysis_duration_seconds histogram',
    '# TYPE canaryd_build_info gauge',
    '# TYPE canaryd_canary_phase gauge',
    '# TYPE canaryd_canary_weight gauge',
    '# TYPE canaryd_config_reload_success gauge',
    '# TYPE canaryd_config_reloads_total counter',
    '# TYPE canaryd_decisions_total counter',
    '# TYPE canaryd_is_leader gauge',
    '# TYPE canaryd_metric_p_value gauge',
    '# TYPE canaryd_metric_ratio gauge',
    '# TYPE canaryd_metric_verdict gauge',
    '# TYPE canaryd_prometheus_errors_total counter',
    '# TYPE canaryd_promotions_total counter',
    '# TYPE canaryd_rollbacks_total counter',
    '# TYPE canaryd_router_updates_total counter',
    'canaryd_alerts_received_total{alertname="CanaryHighErrorRate",outcome="accepted",status="firing"} 1.0',
    'canaryd_analysis_duration_seconds_bucket{le="+Inf"} 1.0',
    'canaryd_analysis_duration_seconds_bucket{le="0.005"} 0.0',
    'canaryd_analysis_duration_seconds_bucket{le="0.01"} 0.0',
    'canaryd_analysis_duration_seconds_bucket{le="0.025"} 0.0',
    'canaryd_analysis_duration_seconds_bucket{le="0.05"} 0.0',
    'canaryd_analysis_duration_seconds_bucket{le="0.1"} 0.0',
    'canaryd_analysis_duration_seconds_bucket{le="0.25"} 1.0',
    'canaryd_analysis_duration_seconds_bucket{le="0.5"} 1.0',
    'canaryd_analysis_duration_seconds_bucket{le="1.0"} 1.0',
    'canaryd_analysis_duration_seconds_bucket{le="10.0"} 1.0',
    'canaryd_analysis_duration_seconds_bucket{le="2.5"} 1.0',
    'canaryd_analysis_duration_seconds_bucket{le="30.0"} 1.0',
    'canaryd_analysis_duration_seconds_bucket{le="5.0"} 1.0',
    'canaryd_analysis_duration_seconds_count 1.0',
    'canaryd_analysis_duration_seconds_sum 0.2',
    'canaryd_build_info{version="9.9.9"} 1.0',
)


# Sorted lines of `render` after `golden_scenario` in full detail: what the implementation with one
# prometheus_client Gauge/Counter per per-canary metric produced (before the custom collector).
GOLDEN_FULL_SCRAPE = (
    *_SCRAPE_HEAD,
    'canaryd_canary_phase{canary="api",namespace="billing",phase="idle"} 0.0',
    'canaryd_canary_phase{canary="api",namespace="billing",phase="paused"} 0.0',
    'canaryd_canary_phase{canary="api",namespace="billing",phase="progressing"} 0.0',
    'canaryd_canary_phase{canary="api",namespace="billing",phase="promoting"} 1.0',
    'canaryd_canary_phase{canary="api",namespace="billing",phase="rolled_back"} 0.0',
    'canaryd_canary_phase{canary="api",namespace="billing",phase="succeeded"} 0.0',
    'canaryd_canary_phase{canary="auth-service",namespace="orion",phase="idle"} 0.0',
    'canaryd_canary_phase{canary="auth-service",namespace="orion",phase="paused"} 0.0',
    'canaryd_canary_phase{canary="auth-service",namespace="orion",phase="progressing"} 0.0',
    'canaryd_canary_phase{canary="auth-service",namespace="orion",phase="promoting"} 0.0',
    'canaryd_canary_phase{canary="auth-service",namespace="orion",phase="rolled_back"} 1.0',
    'canaryd_canary_phase{canary="auth-service",namespace="orion",phase="succeeded"} 0.0',
    'canaryd_canary_weight{canary="api",namespace="billing"} 100.0',
    'canaryd_canary_weight{canary="auth-service",namespace="orion"} 0.0',
    'canaryd_config_reload_success 1.0',
    'canaryd_config_reloads_total{outcome="refused"} 0.0',
    'canaryd_config_reloads_total{outcome="success"} 0.0',
    'canaryd_decisions_total{canary="api",decision="advance",namespace="billing"} 0.0',
    'canaryd_decisions_total{canary="api",decision="hold",namespace="billing"} 0.0',
    'canaryd_decisions_total{canary="api",decision="rollback",namespace="billing"} 0.0',
    'canaryd_decisions_total{canary="auth-service",decision="advance",namespace="orion"} 1.0',
    'canaryd_decisions_total{canary="auth-service",decision="hold",namespace="orion"} 1.0',
    'canaryd_decisions_total{canary="auth-service",decision="rollback",namespace="orion"} 1.0',
    'canaryd_is_leader 1.0',
    'canaryd_metric_p_value{canary="auth-service",metric="error_rate",namespace="orion"} 0.001',
    'canaryd_metric_ratio{canary="auth-service",metric="error_rate",namespace="orion"} 3.5',
    'canaryd_metric_ratio{canary="auth-service",metric="latency_p95",namespace="orion"} 1.5',
    'canaryd_metric_verdict{canary="auth-service",metric="error_rate",namespace="orion",verdict="fail"} 1.0',
    'canaryd_metric_verdict{canary="auth-service",metric="error_rate",namespace="orion",verdict="inconclusive"} 0.0',
    'canaryd_metric_verdict{canary="auth-service",metric="error_rate",namespace="orion",verdict="pass"} 0.0',
    'canaryd_metric_verdict{canary="auth-service",metric="error_rate",namespace="orion",verdict="skipped"} 0.0',
    'canaryd_metric_verdict{canary="auth-service",metric="error_rate",namespace="orion",verdict="warn"} 0.0',
    'canaryd_metric_verdict{canary="auth-service",metric="latency_p95",namespace="orion",verdict="fail"} 0.0',
    'canaryd_metric_verdict{canary="auth-service",metric="latency_p95",namespace="orion",verdict="inconclusive"} 0.0',
    'canaryd_metric_verdict{canary="auth-service",metric="latency_p95",namespace="orion",verdict="pass"} 0.0',
    'canaryd_metric_verdict{canary="auth-service",metric="latency_p95",namespace="orion",verdict="skipped"} 0.0',
    'canaryd_metric_verdict{canary="auth-service",metric="latency_p95",namespace="orion",verdict="warn"} 1.0',
    'canaryd_metric_verdict{canary="auth-service",metric="memory",namespace="orion",verdict="fail"} 0.0',
    'canaryd_metric_verdict{canary="auth-service",metric="memory",namespace="orion",verdict="inconclusive"} 0.0',
    'canaryd_metric_verdict{canary="auth-service",metric="memory",namespace="orion",verdict="pass"} 0.0',
    'canaryd_metric_verdict{canary="auth-service",metric="memory",namespace="orion",verdict="skipped"} 1.0',
    'canaryd_metric_verdict{canary="auth-service",metric="memory",namespace="orion",verdict="warn"} 0.0',
    'canaryd_prometheus_errors_total{kind="api"} 0.0',
    'canaryd_prometheus_errors_total{kind="bad_response"} 0.0',
    'canaryd_prometheus_errors_total{kind="connection"} 0.0',
    'canaryd_prometheus_errors_total{kind="http"} 0.0',
    'canaryd_prometheus_errors_total{kind="other"} 0.0',
    'canaryd_prometheus_errors_total{kind="timeout"} 1.0',
    'canaryd_promotions_total{canary="api",namespace="billing"} 1.0',
    'canaryd_promotions_total{canary="auth-service",namespace="orion"} 0.0',
    'canaryd_rollbacks_total{canary="api",namespace="billing",trigger="alert"} 0.0',
    'canaryd_rollbacks_total{canary="api",namespace="billing",trigger="analysis"} 0.0',
    'canaryd_rollbacks_total{canary="api",namespace="billing",trigger="manual"} 0.0',
    'canaryd_rollbacks_total{canary="api",namespace="billing",trigger="timeout"} 0.0',
    'canaryd_rollbacks_total{canary="auth-service",namespace="orion",trigger="alert"} 0.0',
    'canaryd_rollbacks_total{canary="auth-service",namespace="orion",trigger="analysis"} 1.0',
    'canaryd_rollbacks_total{canary="auth-service",namespace="orion",trigger="manual"} 0.0',
    'canaryd_rollbacks_total{canary="auth-service",namespace="orion",trigger="timeout"} 0.0',
    'canaryd_router_updates_total{canary="api",namespace="billing",outcome="conflict_retry"} 0.0',
    'canaryd_router_updates_total{canary="api",namespace="billing",outcome="error"} 0.0',
    'canaryd_router_updates_total{canary="api",namespace="billing",outcome="ok"} 0.0',
    'canaryd_router_updates_total{canary="auth-service",namespace="orion",outcome="conflict_retry"} 1.0',
    'canaryd_router_updates_total{canary="auth-service",namespace="orion",outcome="error"} 0.0',
    'canaryd_router_updates_total{canary="auth-service",namespace="orion",outcome="ok"} 2.0',
)

# The same scenario in the default ("basic") detail: the current phase only, verdicts only for the
# metrics that fail or warn, no p-values nor ratios; every family still announced.
GOLDEN_BASIC_SCRAPE = (
    *_SCRAPE_HEAD,
    'canaryd_canary_phase{canary="api",namespace="billing",phase="promoting"} 1.0',
    'canaryd_canary_phase{canary="auth-service",namespace="orion",phase="rolled_back"} 1.0',
    'canaryd_canary_weight{canary="api",namespace="billing"} 100.0',
    'canaryd_canary_weight{canary="auth-service",namespace="orion"} 0.0',
    'canaryd_config_reload_success 1.0',
    'canaryd_config_reloads_total{outcome="refused"} 0.0',
    'canaryd_config_reloads_total{outcome="success"} 0.0',
    'canaryd_decisions_total{canary="api",decision="advance",namespace="billing"} 0.0',
    'canaryd_decisions_total{canary="api",decision="hold",namespace="billing"} 0.0',
    'canaryd_decisions_total{canary="api",decision="rollback",namespace="billing"} 0.0',
    'canaryd_decisions_total{canary="auth-service",decision="advance",namespace="orion"} 1.0',
    'canaryd_decisions_total{canary="auth-service",decision="hold",namespace="orion"} 1.0',
    'canaryd_decisions_total{canary="auth-service",decision="rollback",namespace="orion"} 1.0',
    'canaryd_is_leader 1.0',
    'canaryd_metric_verdict{canary="auth-service",metric="error_rate",namespace="orion",verdict="fail"} 1.0',
    'canaryd_metric_verdict{canary="auth-service",metric="latency_p95",namespace="orion",verdict="warn"} 1.0',
    'canaryd_prometheus_errors_total{kind="api"} 0.0',
    'canaryd_prometheus_errors_total{kind="bad_response"} 0.0',
    'canaryd_prometheus_errors_total{kind="connection"} 0.0',
    'canaryd_prometheus_errors_total{kind="http"} 0.0',
    'canaryd_prometheus_errors_total{kind="other"} 0.0',
    'canaryd_prometheus_errors_total{kind="timeout"} 1.0',
    'canaryd_promotions_total{canary="api",namespace="billing"} 1.0',
    'canaryd_promotions_total{canary="auth-service",namespace="orion"} 0.0',
    'canaryd_rollbacks_total{canary="api",namespace="billing",trigger="alert"} 0.0',
    'canaryd_rollbacks_total{canary="api",namespace="billing",trigger="analysis"} 0.0',
    'canaryd_rollbacks_total{canary="api",namespace="billing",trigger="manual"} 0.0',
    'canaryd_rollbacks_total{canary="api",namespace="billing",trigger="timeout"} 0.0',
    'canaryd_rollbacks_total{canary="auth-service",namespace="orion",trigger="alert"} 0.0',
    'canaryd_rollbacks_total{canary="auth-service",namespace="orion",trigger="analysis"} 1.0',
    'canaryd_rollbacks_total{canary="auth-service",namespace="orion",trigger="manual"} 0.0',
    'canaryd_rollbacks_total{canary="auth-service",namespace="orion",trigger="timeout"} 0.0',
    'canaryd_router_updates_total{canary="api",namespace="billing",outcome="conflict_retry"} 0.0',
    'canaryd_router_updates_total{canary="api",namespace="billing",outcome="error"} 0.0',
    'canaryd_router_updates_total{canary="api",namespace="billing",outcome="ok"} 0.0',
    'canaryd_router_updates_total{canary="auth-service",namespace="orion",outcome="conflict_retry"} 1.0',
    'canaryd_router_updates_total{canary="auth-service",namespace="orion",outcome="error"} 0.0',
    'canaryd_router_updates_total{canary="auth-service",namespace="orion",outcome="ok"} 2.0',
)


def scrape_lines(registry: CollectorRegistry) -> list[str]:
    return sorted(render(registry)[0].decode().splitlines())


@pytest.mark.parametrize(("detail", "golden"), [("full", GOLDEN_FULL_SCRAPE), ("basic", GOLDEN_BASIC_SCRAPE)])
def test_scrape_matches_golden(registry: CollectorRegistry, detail: str, golden: tuple[str, ...]) -> None:
    m = Metrics(registry, version="9.9.9", detail=detail)
    fresh = scrape_lines(registry)
    # Before any canary: every family is announced (HELP/TYPE) and no per-canary sample exists.
    assert [line for line in fresh if line.startswith("#")] == [
        line for line in golden if line.startswith("#")
    ]
    assert not [line for line in fresh if "namespace=" in line]
    golden_scenario(m)
    assert scrape_lines(registry) == list(golden)


def test_default_detail_is_basic(registry: CollectorRegistry) -> None:
    m = Metrics(registry, version="9.9.9")
    assert m.detail == "basic"
    golden_scenario(m)
    assert scrape_lines(registry) == list(GOLDEN_BASIC_SCRAPE)


def canary_samples(registry: CollectorRegistry) -> list[tuple[str, dict[str, str], float]]:
    """Every raw sample (including *_created) that belongs to some canary."""
    return [(s.name, s.labels, s.value) for f in registry.collect() for s in f.samples
            if "namespace" in s.labels or "canary" in s.labels]


def test_forget_removes_everything(m: Metrics, registry: CollectorRegistry) -> None:
    exercise(m)
    golden_scenario(m)
    assert canary_samples(registry)
    m.forget("orion", "auth-service")
    m.forget("billing", "api")
    m.forget("nowhere", "never-seen")  # unknown canary: nothing to do, no error
    assert canary_samples(registry) == []
    text = render(registry)[0].decode()
    assert "canary=" not in text and "namespace=" not in text
    # The families stay announced, as with an empty registry.
    assert "# TYPE canaryd_metric_verdict gauge" in text
    assert "# TYPE canaryd_decisions_total counter" in text


def test_counters_survive_verdict_changes_and_stay_monotonic(m: Metrics, registry: CollectorRegistry) -> None:
    lab = {"namespace": "orion", "canary": "auth-service"}
    steps = [
        ("hold", [("error_rate", "inconclusive", 0.3, 1.4), ("latency_p95", "pass", 0.9, 1.0)]),
        ("advance", [("error_rate", "pass", 0.6, 1.0)]),  # a verdict change; latency_p95 drops out
        ("hold", []),  # no judged metric at all
        ("rollback", [("error_rate", "fail", 0.001, 3.0), ("cpu", "warn", None, None)]),
        ("hold", [("error_rate", "pass", None, None)]),
    ]
    previous: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for i, (decision, observations) in enumerate(steps):
        m.observe_decision("orion", "auth-service", decision, observations)
        m.router_update("orion", "auth-service", "ok")
        if i == 2:
            m.rollback("orion", "auth-service", "alert")
            m.promotion("orion", "auth-service")
        now = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in registry.collect() if f.type == "counter"
               for s in f.samples if s.name.endswith("_total") and s.labels.get("canary") == "auth-service"}
        assert len(now) == len(DECISIONS) + len(ROLLBACK_TRIGGERS) + 1 + 3  # every series, every time
        for key, value in previous.items():
            assert now[key] >= value, key
        previous = now
    assert val(registry, "canaryd_decisions_total", **lab, decision="hold") == 3
    assert val(registry, "canaryd_decisions_total", **lab, decision="advance") == 1
    assert val(registry, "canaryd_decisions_total", **lab, decision="rollback") == 1
    assert val(registry, "canaryd_rollbacks_total", **lab, trigger="alert") == 1
    assert val(registry, "canaryd_promotions_total", **lab) == 1
    assert val(registry, "canaryd_router_updates_total", **lab, outcome="ok") == 5
    assert val(registry, "canaryd_metric_verdict", **lab, metric="error_rate", verdict="pass") == 1
    assert val(registry, "canaryd_metric_verdict", **lab, metric="cpu", verdict="warn") is None


def test_rejected_decision_changes_nothing(m: Metrics, registry: CollectorRegistry) -> None:
    lab = {"namespace": "orion", "canary": "a"}
    m.observe_decision("orion", "a", "hold", [("error_rate", "pass", 0.5, 1.0)])
    before = scrape_lines(registry)
    with pytest.raises(ValueError, match="verdict: 'ok'"):
        m.observe_decision("orion", "a", "advance", [("latency_p95", "pass", 0.5, 1.0), ("error_rate", "ok", None, None)])
    assert scrape_lines(registry) == before
    assert val(registry, "canaryd_decisions_total", **lab, decision="advance") == 0


def test_per_canary_state_is_small() -> None:
    # 1000 canaries x 8 judged metrics took ~50 MB as prometheus_client children; now ~2 MB.
    names = [(f"ns{i % 20}", f"canary-{i}") for i in range(1000)]
    observations = [MetricObservation(f"metric_{k}", VERDICTS[k % len(VERDICTS)], 0.5, 1.1) for k in range(8)]
    tracemalloc.start()
    try:
        m = Metrics(CollectorRegistry())
        for ns, name in names:
            m.set_phase(ns, name, "progressing")
            m.set_weight(ns, name, 5)
            m.observe_decision(ns, name, "hold", observations)
        traced, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert traced < 8_000_000, traced


def test_alert_names_without_a_rule_share_one_series(m: Metrics, registry: CollectorRegistry) -> None:
    for i in range(1000):
        m.alert_received(f"Junk{i}", "firing", "unknown_alertname")
    m.alert_received("\ud800", "firing", "accepted")  # cannot be encoded: never a label value
    m.alert_received("CanaryHighErrorRate", "weird-status", "weird-outcome")
    assert val(registry, "canaryd_alerts_received_total", alertname=OTHER_ALERTNAME, status="firing",
               outcome="unknown_alertname") == 1000
    assert val(registry, "canaryd_alerts_received_total", alertname=OTHER_ALERTNAME, status="firing",
               outcome="accepted") == 1
    assert val(registry, "canaryd_alerts_received_total", alertname="CanaryHighErrorRate", status="unknown",
               outcome="other") == 1
    body = render(registry)[0].decode()
    assert body.count("canaryd_alerts_received_total{") == 3


# --- basic detail (the default) -----------------------------------------------------------------


def busy_canary(m: Metrics, ns: str, name: str, verdicts: tuple[str, ...]) -> None:
    """A canary judged on every metric the judge knows, with the given verdicts in turn."""
    from canaryd.analysis.judge import METRICS

    m.set_phase(ns, name, "progressing")
    m.set_weight(ns, name, 25)
    m.observe_decision(ns, name, "hold", [MetricObservation(metric, verdicts[i % len(verdicts)], 0.3, 1.2)
                                          for i, metric in enumerate(METRICS)])
    m.router_update(ns, name, "ok")


def per_canary_series(registry: CollectorRegistry) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for family in text_string_to_metric_families(render(registry)[0].decode()):
        for s in family.samples:
            if "canary" in s.labels:
                key = (s.labels["namespace"], s.labels["canary"])
                counts[key] = counts.get(key, 0) + 1
    return counts


def test_basic_detail_keeps_at_most_15_series_per_canary(registry: CollectorRegistry) -> None:
    m = Metrics(registry)
    busy_canary(m, "orion", "healthy", ("pass", "inconclusive", "skipped"))
    busy_canary(m, "orion", "troubled", ("pass", "pass", "fail", "warn", "skipped", "pass", "inconclusive", "pass"))
    counts = per_canary_series(registry)
    assert counts[("orion", "healthy")] == 13  # weight, phase, 11 counters
    assert counts[("orion", "troubled")] == 15  # and the failing and the warning metric
    m.detail = "full"
    assert per_canary_series(registry)[("orion", "healthy")] > 50


def test_basic_detail_values_are_the_full_details_where_both_have_a_series() -> None:
    full, basic = CollectorRegistry(), CollectorRegistry()
    for registry, detail in ((full, "full"), (basic, "basic")):
        m = Metrics(registry, version="9.9.9", detail=detail)
        golden_scenario(m)
        busy_canary(m, "orion", "troubled", ("pass", "fail", "warn", "inconclusive", "skipped"))
    full_lines, basic_lines = set(scrape_lines(full)), set(scrape_lines(basic))
    samples = {line for line in basic_lines if not line.startswith("#")}
    assert samples <= full_lines
    dropped = {line.split("{")[0] for line in full_lines - basic_lines if not line.startswith("#")}
    assert dropped == {"canaryd_canary_phase", "canaryd_metric_verdict", "canaryd_metric_p_value",
                       "canaryd_metric_ratio"}
    # What basic leaves out of the one-hot gauges: the zeros, and the verdicts that neither fail nor warn.
    for line in full_lines - basic_lines:
        if line.startswith("canaryd_canary_phase"):
            assert line.endswith(" 0.0"), line
        elif line.startswith("canaryd_metric_verdict"):
            assert line.endswith(" 0.0") or not re.search(r'verdict="(fail|warn)"', line), line


def test_basic_phase_and_verdict_follow_the_current_value(m: Metrics, registry: CollectorRegistry) -> None:
    m.detail = "basic"
    m.set_phase("orion", "auth-service", "progressing")
    m.observe_decision("orion", "auth-service", "hold", [("error_rate", "fail", 0.01, 2.0)])
    assert val(registry, "canaryd_canary_phase", namespace="orion", canary="auth-service", phase="progressing") == 1
    assert val(registry, "canaryd_metric_verdict", namespace="orion", canary="auth-service", metric="error_rate",
               verdict="fail") == 1
    m.set_phase("orion", "auth-service", "paused")
    m.observe_decision("orion", "auth-service", "hold", [("error_rate", "pass", 0.5, 1.0)])
    assert val(registry, "canaryd_canary_phase", namespace="orion", canary="auth-service", phase="progressing") is None
    assert val(registry, "canaryd_canary_phase", namespace="orion", canary="auth-service", phase="paused") == 1
    assert val(registry, "canaryd_metric_verdict", namespace="orion", canary="auth-service", metric="error_rate",
               verdict="fail") is None
    assert val(registry, "canaryd_metric_p_value", namespace="orion", canary="auth-service",
               metric="error_rate") is None
    with pytest.raises(ValueError):
        m.detail = "everything"
    assert m.detail == "basic"


@pytest.mark.parametrize("detail", ["basic", "full"])
def test_text_and_openmetrics_carry_the_same_samples(registry: CollectorRegistry, detail: str) -> None:
    """The per-canary families are written by canaryd's own text encoder; OpenMetrics goes through the
    library: both must say the same (label values needing escapes included)."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

    m = Metrics(registry, detail=detail)
    golden_scenario(m)
    busy_canary(m, "odd", 'quote"back\\slash\nnewline', ("fail", "pass"))

    def samples(families: Iterable[Any]) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
        return {(s.name, tuple(sorted(s.labels.items())), s.value) for f in families for s in f.samples
                if not s.name.endswith("_created")}

    text = samples(text_string_to_metric_families(render(registry)[0].decode()))
    body, content_type = render(registry, "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert text == samples(parse_openmetrics(body.decode()))


def test_render_on_another_thread_while_canaries_change(registry: CollectorRegistry) -> None:
    """server.py renders off the event loop: a scrape meanwhile never fails nor shows half a decision."""
    m = Metrics(registry, detail="full")
    stop = threading.Event()
    errors: list[BaseException] = []

    def scrape() -> None:
        try:
            while not stop.is_set():
                for family in text_string_to_metric_families(render(registry)[0].decode()):
                    if family.name == "canaryd_metric_verdict":
                        per_metric: dict[tuple[str, str], float] = {}
                        for s in family.samples:
                            k = (s.labels["canary"], s.labels["metric"])
                            per_metric[k] = per_metric.get(k, 0) + s.value
                        assert all(v == 1 for v in per_metric.values()), per_metric
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    thread = threading.Thread(target=scrape)
    thread.start()
    try:
        for i in range(3000):
            name = f"c{i % 50}"
            busy_canary(m, "ns", name, (VERDICTS[i % len(VERDICTS)], "pass"))
            if i % 7 == 0:
                m.forget("ns", f"c{(i + 25) % 50}")
    finally:
        stop.set()
        thread.join()
    assert not errors, errors


@pytest.mark.parametrize("detail", ["basic", "full"])
def test_the_daemons_stepped_render_writes_what_render_writes(registry: CollectorRegistry, detail: str) -> None:
    """GET /metrics uses Metrics.render, which lets other tasks run while it works: same text, same type."""
    m = Metrics(registry, detail=detail)
    golden_scenario(m)
    for i in range(500):
        busy_canary(m, "ns", f"c{i}", (VERDICTS[i % len(VERDICTS)], "pass", "warn"))

    async def scrape() -> tuple[tuple[bytes, str], int]:
        turns = 0
        done = False

        async def other_task() -> None:
            nonlocal turns
            while not done:
                turns += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(other_task())
        result = await m.render()
        done = True
        await task
        return result, turns

    (body, content_type), turns = asyncio.run(scrape())
    assert (body, content_type) == render(registry)
    assert turns > 1  # the loop ran something else meanwhile
    openmetrics = "application/openmetrics-text; version=1.0.0"
    assert asyncio.run(m.render(openmetrics)) == render(registry, openmetrics)
