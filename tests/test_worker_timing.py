"""A canary's task (worker.py) on a controlled clock, with a recording actuator: what a new canary
version and a Prometheus outage do to a rollout's steps and timers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from canaryd.analysis import judge
from canaryd.analysis.snapshot import ArmSnapshot
from canaryd.config import parse_config
from canaryd.metrics import Metrics
from canaryd.worker import CanaryWorker, Command, SourceDown, Tick

BOUNDS = (0.05, 0.1, 0.25, 0.5, 1.0, float("inf"))
FAST = (0.5, 0.9, 1.0, 1.0, 1.0, 1.0)


def arm(n: float) -> ArmSnapshot:
    return ArmSnapshot(requests=n, errors=0.0, successes=n, buckets=tuple((le, n * f) for le, f in zip(BOUNDS, FAST, strict=True)))


class Recorder:
    """An actuator that keeps the route in memory and records every write; `ready` is the canary's pods."""

    def __init__(self) -> None:
        self.state: Mapping[str, Any] | None = None
        self.weight = 0
        self.writes: list[tuple[str, int]] = []  # (what, weight)
        self.ready = True

    async def read_state(self) -> Mapping[str, Any] | None:
        return self.state

    async def read_weight(self) -> int:
        return self.weight

    async def set_weight(self, weight: int, state: Mapping[str, Any]) -> None:
        self.weight, self.state = weight, dict(state)
        self.writes.append(("weight", weight))

    async def promote(self, state: Mapping[str, Any]) -> None:
        self.writes.append(("promote", self.weight))
        await self.set_weight(0, {**state, "weight": 0})

    async def rollback(self, state: Mapping[str, Any], *, emergency: bool = False) -> None:
        self.writes.append(("rollback", self.weight))
        await self.set_weight(0, state)

    async def prepare_canary(self) -> tuple[bool, str, str | None]:
        return self.ready, "available" if self.ready else "0 of 2 updated replicas are available", "v1"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def setup(request: pytest.FixtureRequest) -> AsyncIterator[tuple[CanaryWorker, Recorder, Clock]]:
    settings = getattr(request, "param", {})
    config = parse_config({"kubernetes": {"enabled": False}, "canaries": [{
        "name": "app", "namespace": "ns", "route": "app",
        "stable": {"deployment": "app-stable", "selector": 'job="s"'},
        "canary": {"deployment": "app-canary", "selector": 'job="c"'},
        "traffic_steps": [5, 25, 50, 100], "step_duration": "10s", "interval": "1s", "min_requests": 100,
        "auto_promote": True, **settings}]}, "test")
    actuator, clock = Recorder(), Clock()
    worker = CanaryWorker(config.canaries[0], actuator, metrics=Metrics(CollectorRegistry()), notifier=None,
                          clock=clock, dry_run=False)
    task = asyncio.create_task(worker.run())
    try:
        yield worker, actuator, clock
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def step(worker: CanaryWorker, clock: Clock, *, data: bool = True, n: float = 500) -> None:
    clock.now += 1.0
    worker.post(Tick(clock.now, arm(n), arm(n)) if data else SourceDown(clock.now, "connection refused"))
    await worker.barrier()


async def test_a_new_version_at_50_percent_is_judged_again_from_the_first_step(
        setup: tuple[CanaryWorker, Recorder, Clock]) -> None:
    worker, actuator, clock = setup
    await worker.submit(Command("start"))
    while worker.rollout.weight != 50:
        await step(worker, clock)
        assert clock.now < 1200, worker.status()
    writes_before = len(actuator.writes)

    actuator.ready = False  # the new pods are rolling out
    await worker.new_version("v2", "canary Deployment ns/app-canary changed during the rollout")
    assert actuator.writes[writes_before] == ("weight", 0)  # the next route write: nothing to the canary
    status = worker.status()
    assert (status["phase"], status["step"], status["weight"]) == ("progressing", 0, 0)
    for _ in range(15):  # no data counts, no step is taken while the new pods are not there
        await step(worker, clock)
    assert actuator.writes[writes_before:] == [("weight", 0)]

    actuator.ready = True
    await until_weight(worker, actuator, 5)
    seen = []
    while not any(w[0] == "promote" for w in actuator.writes):
        started = clock.now
        await step(worker, clock)
        if worker.rollout.weight not in seen:
            seen.append(worker.rollout.weight)
        assert clock.now - started < 200
    assert seen[:4] == [5, 25, 50, 100], seen
    weights = [w for what, w in actuator.writes[writes_before:] if what == "weight"]
    assert weights[:5] == [0, 5, 25, 50, 100], weights


async def until_weight(worker: CanaryWorker, actuator: Recorder, weight: int) -> None:
    for _ in range(100):
        if worker.rollout.weight == weight and actuator.weight == weight:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"weight {weight} never written: {worker.status()}")


@pytest.mark.parametrize("setup", [{"max_step_duration": "30s", "on_max_step_duration": "rollback"}],
                         indirect=True)
async def test_an_outage_does_not_count_toward_the_steps_timer(setup: tuple[CanaryWorker, Recorder, Clock]) -> None:
    """The issue's case: Prometheus down 35 s at a 10 s step with on_max_step_duration: rollback."""
    worker, actuator, clock = setup
    await worker.submit(Command("start"))
    for _ in range(4):  # too few requests yet (min_requests 100) to pass the step
        await step(worker, clock, n=20)
    assert worker.rollout.weight == 5
    for _ in range(35):  # Prometheus down: no step, no rollback
        await step(worker, clock, data=False)
    assert (worker.rollout.phase.value, worker.rollout.weight) == ("progressing", 5)
    for _ in range(2):  # back, but the first readings after an outage have no increments yet: a hold
        await step(worker, clock, n=0)
    assert (worker.rollout.phase.value, worker.rollout.weight) == ("progressing", 5), worker.status()
    for _ in range(15):  # data again: the step completes, nothing is rolled back
        await step(worker, clock)
        if worker.rollout.weight == 25:
            break
    assert worker.rollout.weight == 25, worker.status()
    assert not [w for w in actuator.writes if w[0] == "rollback"]
    assert [w for what, w in actuator.writes if what == "weight"] == [5, 25]


async def test_new_limits_restart_the_anytime_tests_with_them(setup: tuple[CanaryWorker, Recorder, Clock]) -> None:
    worker, actuator, clock = setup
    await worker.submit(Command("start"))
    for _ in range(3):
        await step(worker, clock)
    config = worker.config
    stricter = replace(config, settings=replace(config.settings, thresholds=replace(
        config.settings.thresholds, error_rate=1.0, success_rate=99.0)))
    worker.reconfigure(stricter)
    await worker.barrier()
    analysis = worker.rollout.analysis
    assert analysis is not None
    fresh = judge.start(stricter.settings.judge_settings(), clock.now).sequentials
    assert (analysis.sequentials.error_rate, analysis.sequentials.success_rate) == (
        fresh.error_rate, fresh.success_rate)
    assert worker.rollout.settings.error_rate == 1.0
    assert "new limits" in worker.status()["history"][-1]["reasons"][0]
    assert worker.rollout.weight == 5 and worker.rollout.step == 0  # the position is kept
