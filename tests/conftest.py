"""Shared fixtures: free ports, real Prometheus / Alertmanager / exporter processes on loopback, and the
fake Kubernetes API server with a client of it.

Factories start a server when called and stop every server they started at teardown, whether the
test passed or not. The Prometheus and Alertmanager factories skip the test when the Debian binaries
are missing (CI installs them, so there they run).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from canaryd.kube import KubeClient
from daemon_process import DaemonProcess
from fake_kube import FakeKube
from servers import (
    AlertmanagerServer,
    ExporterProcess,
    PrometheusServer,
    ServerProcess,
    missing_binaries,
)
from servers import free_port as _free_port


@pytest.fixture
def free_port() -> int:
    """One TCP port free on 127.0.0.1. For more, call `servers.free_port()`."""
    return _free_port()


def _require_binaries() -> None:
    missing = missing_binaries()
    if missing:
        pytest.skip(
            f"{', '.join(missing)} not installed; run: apt-get install -y prometheus prometheus-alertmanager"
        )


def _factory(
    tmp_path: Path, kind: str, make: Callable[..., ServerProcess]
) -> Iterator[Callable[..., Any]]:
    started: list[ServerProcess] = []

    def start(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("workdir", tmp_path / f"{kind}-{len(started)}")
        server = make(*args, **kwargs)
        started.append(server)  # before start(), so a half-started server is still stopped
        server.start()
        return server

    try:
        yield start
    finally:
        for server in reversed(started):
            server.stop()


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Callable[..., PrometheusServer]]:
    """`prometheus_factory(scrape_targets, rule_files=(), scrape_interval="1s", ...)` → a started PrometheusServer."""
    _require_binaries()
    yield from _factory(tmp_path, "prometheus", PrometheusServer)


@pytest.fixture
def alertmanager_factory(tmp_path: Path) -> Iterator[Callable[..., AlertmanagerServer]]:
    """`alertmanager_factory(webhook_url, bearer_token=None, ...)` → a started AlertmanagerServer."""
    _require_binaries()
    yield from _factory(tmp_path, "alertmanager", AlertmanagerServer)


@pytest.fixture
def exporter_factory(tmp_path: Path) -> Iterator[Callable[..., ExporterProcess]]:
    """`exporter_factory(jobs="svc-canary", labels={"namespace": "orion"}, rps=100, error_rate=0.0, ...)`
    → a started ExporterProcess (`.address` is its host:port for Prometheus)."""
    yield from _factory(tmp_path, "exporter", ExporterProcess)


# --- the fake Kubernetes API server and a client of it -------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeKube]:
    async with FakeKube() as f:
        yield f


@pytest.fixture
async def kube(fake: FakeKube, tmp_path: Path) -> AsyncIterator[KubeClient]:
    async with await KubeClient.from_kubeconfig(str(fake.kubeconfig(tmp_path, "canaryd-0"))) as k:
        yield k


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    """Daemon processes a test starts; each is stopped at teardown, whatever happened."""
    started: list[DaemonProcess] = []
    try:
        yield started
    finally:
        for d in started:
            d.stop()
