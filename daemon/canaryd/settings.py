"""Config → the judge's settings: the one place where config.py meets analysis/."""

from __future__ import annotations

from .analysis.judge import JudgeSettings
from .config import AnalysisSettings, HoldPolicy


def judge_settings(a: AnalysisSettings) -> JudgeSettings:
    t = a.thresholds
    return JudgeSettings(
        alpha=a.alpha,
        min_requests=a.min_requests,
        step_duration=a.step_duration,
        max_step_duration=a.max_step_duration,
        timeout_rollback=a.on_max_step_duration is HoldPolicy.ROLLBACK,
        tolerance_pp=a.tolerance_pp,
        error_rate=t.error_rate,
        success_rate=t.success_rate,
        latency_p95_ms=t.latency_p95_ms,
        latency_p99_ms=t.latency_p99_ms,
        error_ratio=t.error_ratio,
        latency_ratio=t.latency_ratio,
        cpu=t.cpu,
        memory=t.memory,
    )
