"""The config reload's metrics (part of `metrics.Metrics`, kept apart to keep metrics.py small)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

RELOAD_OUTCOMES: tuple[str, ...] = ("success", "refused")  # canaryd_config_reloads_total


class ReloadMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.success = Gauge("canaryd_config_reload_success", "1 if the last config reload was applied, 0 if it "
                             "was refused (the running config stays).", registry=registry)
        self.total = Counter("canaryd_config_reloads_total", "Config reloads (SIGHUP or a changed file), by outcome.",
                             ("outcome",), registry=registry)
        self.success.set(1)
        for outcome in RELOAD_OUTCOMES:
            self.total.labels(outcome)

    def record(self, applied: bool) -> None:
        self.success.set(1 if applied else 0)
        self.total.labels("success" if applied else "refused").inc()
