"""metrics.py: the canaryd_* contract, one-hot gauges, series lifecycle and promtool-clean output."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from canaryd import __version__
from canaryd.metrics import (
    DECISIONS,
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
]


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def m(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry)


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
