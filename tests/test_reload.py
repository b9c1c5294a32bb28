"""Config reloads in an in-process daemon (dry run): a changed file is picked up without a signal (as a
mounted ConfigMap changes), a refused reload is visible (metric, /readyz detail, an ERROR line), and a
canary removed mid-rollout is rolled back first."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryd.actuator import Actuator
from canaryd.config import CanaryConfig, load_config
from canaryd.daemon import Daemon
from canaryd.wiring import dry_run_actuators
from http_helpers import until
from servers import free_port


def canary(name: str) -> dict[str, Any]:
    return {"name": name, "namespace": "ns", "route": name,
            "stable": {"deployment": f"{name}-stable", "selector": f'job="{name}-stable"'},
            "canary": {"deployment": f"{name}-canary", "selector": f'job="{name}-canary"'}}


def config_data(*names: str) -> dict[str, Any]:
    return {"server": {"listen": f"127.0.0.1:{free_port()}"},
            "prometheus": {"url": f"http://127.0.0.1:{free_port()}", "timeout": "1s", "retries": 0},
            "kubernetes": {"enabled": False}, "defaults": {"interval": "1s"},
            "canaries": [canary(n) for n in names]}


def write(path: Path, data: dict[str, Any] | str) -> None:
    # As a ConfigMap volume does: the new content appears in one step (a rename), not written in place.
    tmp = path.with_suffix(".new")
    tmp.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    tmp.replace(path)



@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[Daemon, Path, dict[str, Actuator]]]:
    path = tmp_path / "canaryd.yaml"
    data = config_data("first")
    write(path, data)
    actuators: dict[str, Actuator] = {}
    dry = dry_run_actuators()

    def make(c: CanaryConfig) -> Actuator:
        actuators[c.key] = dry(c)
        return actuators[c.key]
    daemon = Daemon(load_config(str(path)), str(path), actuator_factory=make, config_poll=0.2)
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.ready.wait(), 10)
        yield daemon, path, actuators
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 10)


def gauge(daemon: Daemon, name: str, **labels: str) -> float | None:
    return daemon.registry.get_sample_value(name, labels)


async def test_a_changed_file_is_reloaded_without_a_signal(running: tuple[Daemon, Path, dict[str, Actuator]]) -> None:
    daemon, path, _ = running
    assert daemon.controller is not None
    write(path, config_data("first", "second"))
    await until(lambda: "ns/second" in daemon.controller.workers, what="the new canary, with no SIGHUP")
    assert gauge(daemon, "canaryd_config_reload_success") == 1.0
    assert gauge(daemon, "canaryd_config_reloads_total", outcome="success") == 1.0


async def test_a_refused_reload_shows_in_the_metric_the_health_detail_and_an_error_line(
        running: tuple[Daemon, Path, dict[str, Actuator]], caplog: pytest.LogCaptureFixture) -> None:
    daemon, path, _ = running
    assert daemon.controller is not None
    caplog.set_level(logging.INFO)
    write(path, "canaries:\n  - name: [unclosed\n")
    await until(lambda: gauge(daemon, "canaryd_config_reload_success") == 0.0, what="the refused reload")
    assert gauge(daemon, "canaryd_config_reloads_total", outcome="refused") == 1.0
    problems = daemon.controller.health.problems()
    assert any(p.startswith("config: reload refused") for p in problems), problems
    assert [r for r in caplog.records if r.levelno == logging.ERROR and "config reload refused" in r.getMessage()]
    assert list(daemon.controller.workers) == ["ns/first"]  # the running config stays

    write(path, config_data("first", "third"))  # fixed: applied, and the problem is gone
    await until(lambda: gauge(daemon, "canaryd_config_reload_success") == 1.0, what="the good reload")
    assert not [p for p in daemon.controller.health.problems() if p.startswith("config")]
    assert sorted(daemon.controller.workers) == ["ns/first", "ns/third"]


async def test_removing_a_progressing_canary_rolls_it_back_first(
        running: tuple[Daemon, Path, dict[str, Actuator]]) -> None:
    daemon, path, actuators = running
    assert daemon.controller is not None
    status = await daemon.controller.command("ns", "first", "start")
    assert status["weight"] == 5
    write(path, config_data("other"))
    await until(lambda: "ns/first" not in daemon.controller.workers, what="the canary to be removed")
    route = actuators["ns/first"]
    assert await route.read_weight() == 0
    state = await route.read_state()
    assert state is not None and state["phase"] == "rolled_back"
    assert "removed from the config" in state["last_decision"]["reasons"][0]
