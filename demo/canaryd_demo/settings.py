"""What the demo runs: its settings, the rules it loads into Prometheus, and canaryd's config."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from canaryd.config import parse_duration

from .servers import HOST
from .service import Behaviour

NAMESPACE = "orion"
SERVICE = "auth-service"
RACE_ALERT = "CanaryHighErrorRate"
TERMINAL = ("succeeded", "rolled_back", "paused")
EXPECTED = {"good": "succeeded", "bad": "rolled_back"}
SCENARIOS = ("good", "bad")


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
    # demo/canaryd_demo/settings.py in canaryd's repository: rules/ is beside demo/.
    candidates += [Path(__file__).resolve().parents[2] / "rules", Path.cwd() / "rules"]
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
