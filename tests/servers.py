"""Real Prometheus, Alertmanager and test exporters as plain loopback subprocesses (for tests and bench/).

The Prometheus and Alertmanager launchers live in the product (`canaryd.demo.servers`, which
`canaryd demo` uses); this module re-exports them under their old names and adds `ExporterProcess`,
which runs `tests/exporter.py`. Usable from pytest (see conftest.py) and from plain scripts:

    with PrometheusServer(["127.0.0.1:9101"], workdir=Path("/tmp/p")) as prom:
        prom.wait_for_targets_up()
        print(prom.query('up'))
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

try:
    import canaryd.demo.servers  # noqa: F401 - only probing whether the package is importable
except ImportError:  # a plain script run without the package installed: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemon"))

from canaryd.demo.servers import (  # noqa: E402
    ALERTMANAGER_BIN,
    HOST,
    PROMETHEUS_BIN,
    AlertmanagerServer,
    PrometheusServer,
    ServerError,
    ServerProcess,
    T,
    _terminate,
    free_port,
    http_json,
    missing_binaries,
    wait_until,
)

__all__ = [
    "ALERTMANAGER_BIN",
    "EXPORTER_SCRIPT",
    "HOST",
    "PROMETHEUS_BIN",
    "AlertmanagerServer",
    "ExporterProcess",
    "PrometheusServer",
    "ServerError",
    "ServerProcess",
    "T",
    "_terminate",
    "free_port",
    "http_json",
    "missing_binaries",
    "wait_until",
]

EXPORTER_SCRIPT = Path(__file__).resolve().parent / "exporter.py"


class ExporterProcess(ServerProcess):
    """A `tests/exporter.py` subprocess simulating one or more services (see that file)."""

    name = "exporter"
    ready_path = "/metrics"

    def __init__(
        self,
        jobs: Sequence[str] = ("service",),
        *,
        labels: Mapping[str, str] | None = None,
        rps: float = 100.0,
        error_rate: float = 0.0,
        client_error_rate: float = 0.0,
        latency_median: float = 0.05,
        latency_sigma: float = 0.5,
        cpu: float | None = None,
        memory: float | None = None,
        python: str = sys.executable,
        workdir: Path | None = None,
        port: int | None = None,
        start_timeout: float = 15.0,
    ):
        super().__init__(workdir=workdir, port=port, start_timeout=start_timeout)
        self.jobs = [jobs] if isinstance(jobs, str) else list(jobs)
        self.labels = dict(labels or {})
        self.settings: dict[str, float | None] = {
            "rps": rps,
            "error_rate": error_rate,
            "client_error_rate": client_error_rate,
            "latency_median": latency_median,
            "latency_sigma": latency_sigma,
            "cpu": cpu,
            "memory": memory,
        }
        self.python = python

    def command(self) -> list[str]:
        cmd = [self.python, str(EXPORTER_SCRIPT), "--host", HOST, "--port", str(self.port)]
        for job in self.jobs:
            cmd += ["--job", job]
        for k, v in self.labels.items():
            cmd += ["--label", f"{k}={v}"]
        for k, v in self.settings.items():
            if v is not None:
                cmd += [f"--{k.replace('_', '-')}", repr(float(v))]
        return cmd

    def control(self, job: str | None = None, **settings: float) -> dict[str, Any]:
        """Change rps, error_rate, client_error_rate, latency_median, latency_sigma, cpu, memory at runtime,
        for one job or (job=None) all of them. Later restarts keep the change only when job is None."""
        body: dict[str, Any] = dict(settings)
        if job is not None:
            body["job"] = job
        else:
            self.settings.update(settings)
        return dict(http_json("POST", f"{self.url}/control", body))

    def state(self) -> dict[str, Any]:
        """The exporter's exact counters per job (GET /state), to compare with what Prometheus read."""
        return dict(http_json("GET", f"{self.url}/state"))
