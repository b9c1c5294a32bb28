"""rules/: promtool checks the rule files and runs their unit tests; the conventions are checked here."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"
RULE_FILES = sorted(RULES.glob("*.yml"))
TEST_FILES = sorted((RULES / "tests").glob("*.yml"))
RUNBOOK_BASE = "https://github.com/canaryd/canaryd/blob/main/README.md#runbook-"
CANARY_ALERTS = {
    "CanaryHighErrorRate",
    "CanaryLatencyHigherThanStable",
    "CanaryErrorRateHigherThanStable",
    "CanaryPodCrashLooping",
}
CANARYD_ALERTS = {"CanarydDown", "CanarydNoLeader", "CanarydPrometheusErrors", "CanarydRouterErrors"}


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian package `prometheus`; CI installs it)")
    return path


def _rules() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            out.extend(group["rules"])
    return out


def _alerts() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for r in _rules() if "alert" in r}


def _alert_tests() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in TEST_FILES:
        for test in yaml.safe_load(path.read_text())["tests"]:
            out.extend(test.get("alert_rule_test", []))
    return out


def test_files_exist() -> None:
    assert RULE_FILES, "no rules/*.yml"
    assert TEST_FILES, "no rules/tests/*.yml"


def test_promtool_check_rules() -> None:
    promtool = _promtool()
    proc = subprocess.run(
        [promtool, "check", "rules", *map(str, RULE_FILES)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_test_rules() -> None:
    promtool = _promtool()
    # promtool resolves rule_files relative to the test file's directory
    proc = subprocess.run(
        [promtool, "test", "rules", *map(str, TEST_FILES)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAILED" not in proc.stdout


def test_every_alert_named_in_the_issue_exists() -> None:
    assert set(_alerts()) == CANARY_ALERTS | CANARYD_ALERTS


def test_every_alert_has_severity_annotations_and_runbook() -> None:
    for name, rule in _alerts().items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(annotations), name
        assert annotations["runbook_url"] == RUNBOOK_BASE + name.lower(), name


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for case in _alert_tests():
        (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    alerts = set(_alerts())
    assert alerts - firing == set(), "alerts never tested firing"
    assert alerts - silent == set(), "alerts never tested not firing"


def test_fired_alerts_carry_canary_and_namespace() -> None:
    """What canaryd matches on: `canary` and `namespace` on every canary alert, `namespace` on its own
    alerts (except CanarydDown's absent() branch, which cannot know it and carries job="canaryd")."""
    seen: set[str] = set()
    for case in _alert_tests():
        for alert in case.get("exp_alerts") or []:
            labels = alert["exp_labels"]
            name = case["alertname"]
            seen.add(name)
            if name in CANARY_ALERTS:
                assert {"canary", "namespace", "severity"} <= set(labels), (name, labels)
            elif name == "CanarydDown" and "namespace" not in labels:
                assert labels.get("job") == "canaryd", labels
            else:
                assert "namespace" in labels, (name, labels)
    assert seen == set(_alerts())


def test_recording_rules_cover_both_arms_alike() -> None:
    records = [r["record"] for r in _rules() if "record" in r]
    by_arm: dict[str, set[str]] = {"canary": set(), "stable": set()}
    for name in records:
        arm, _, rest = name.partition(":")
        assert arm in by_arm, name
        by_arm[arm].add(rest)
    assert by_arm["canary"] == by_arm["stable"]
    for rest in ("error_rate:5m", "success_rate:5m", "latency_p95_ms:5m", "latency_p99_ms:5m"):
        assert rest in by_arm["canary"], rest


def test_recording_rules_keep_only_namespace_and_canary() -> None:
    """Every aggregation in a recording rule is `by (namespace, canary[, le])`, so canary:X / stable:X
    matches one to one."""
    for rule in _rules():
        if "record" not in rule:
            continue
        for by in re.findall(r"by \(([^)]*)\)", rule["expr"]):
            labels = {s.strip() for s in by.split(",")}
            assert labels in ({"namespace", "canary"}, {"namespace", "canary", "le"}), (rule["record"], by)
