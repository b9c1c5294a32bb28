"""The tick path under load: judgements take turns on the event loop (pacing.py), a command goes first,
slots keep every canary judged once per interval, and repeated holds are not logged at INFO."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from canaryd.config import parse_config
from canaryd.controller import Controller
from canaryd.logs import DecisionLog
from canaryd.pacing import Pacer


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def _judge_all(pacer: Pacer, n: int, cost: float, order: list[int]) -> None:
    async def one(i: int) -> None:
        async with pacer.turn(f"ns/c{i}"):
            order.append(i)
            busy(cost)

    await asyncio.gather(*(one(i) for i in range(n)))


def test_turns_leave_the_loop_free_between_runs_and_keep_their_order() -> None:
    pacer = Pacer(budget=0.002)
    order: list[int] = []
    gaps: list[float] = []

    async def main() -> None:
        done = False

        async def probe() -> None:  # another task: how long it waits for the loop
            last = time.perf_counter()
            while not done:
                await asyncio.sleep(0)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        task = asyncio.create_task(probe())
        await _judge_all(pacer, 60, 0.001, order)
        done = True
        await task

    asyncio.run(main())
    assert order == list(range(60))
    assert pacer.turns == 60 and pacer.deferred > 0
    # 60 ms of judging, never more than a run of turns (2 ms, plus the turn that crosses it) at once
    assert len(gaps) > 15
    assert sorted(gaps)[-3] < 0.015, sorted(gaps)[-5:]


def test_a_command_goes_first_but_its_own_canary_may_finish_its_turn() -> None:
    pacer = Pacer(budget=0.001, max_defer=10.0)
    started: list[str] = []

    async def turn(key: str) -> None:
        async with pacer.turn(key):
            started.append(key)
            busy(0.002)

    async def main() -> None:
        first = asyncio.create_task(turn("ns/first"))
        await asyncio.sleep(0)  # runs; the next ones must wait for a later pass
        others = [asyncio.create_task(turn(f"ns/c{i}")) for i in range(5)]
        target = asyncio.create_task(turn("ns/target"))
        await asyncio.sleep(0)
        with pacer.urgent("ns/target"):
            await asyncio.wait_for(target, 1.0)  # not held back by the urgency it serves
            for _ in range(20):
                await asyncio.sleep(0)
            assert started == ["ns/first", "ns/target"]  # no other turn while the command is in flight
        await asyncio.wait_for(asyncio.gather(first, *others), 2.0)

    asyncio.run(main())
    assert started[2:] == [f"ns/c{i}" for i in range(5)]


def test_a_command_holds_the_turns_back_for_max_defer_at_most() -> None:
    pacer = Pacer(budget=0.001, max_defer=0.05)

    async def main() -> float:
        async with pacer.turn("ns/a"):
            busy(0.002)
        waiting = asyncio.create_task(_judge_all(pacer, 3, 0.0, []))
        started = time.perf_counter()
        with pacer.urgent("ns/elsewhere"):
            await asyncio.wait_for(waiting, 2.0)
            return time.perf_counter() - started

    assert 0.04 <= asyncio.run(main()) < 1.0


def test_a_cancelled_wait_does_not_stall_the_others() -> None:
    pacer = Pacer(budget=0.001)
    done: list[int] = []

    async def turn(i: int) -> None:
        async with pacer.turn(f"ns/c{i}"):
            busy(0.002)
            done.append(i)

    async def main() -> None:
        tasks = [asyncio.create_task(turn(i)) for i in range(6)]
        await asyncio.sleep(0)
        tasks[3].cancel()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 2.0)

    asyncio.run(main())
    assert done == [0, 1, 2, 4, 5]


@pytest.mark.parametrize(("canaries", "interval", "slots"), [
    (10, 5, 1), (1000, 5, 5), (10_000, 30, 30), (10_000, 5, 5), (1000, 60, 5), (100_000, 0.5, 1),
])
def test_slots_judge_every_canary_once_per_interval(canaries: int, interval: float, slots: int) -> None:
    """One slot a tick, ticks at least a second apart (MIN_SLOT_TICK): a round of slots fits the interval,
    so a canary is read, and judged, once per interval however many there are."""
    cfg = parse_config({"kubernetes": {"enabled": False}, "defaults": {"interval": f"{interval}s"},
                        "canaries": [{"name": "a", "namespace": "ns", "route": "a",
                                      "stable": {"deployment": "a", "selector": 'job="a"'},
                                      "canary": {"deployment": "a-canary", "selector": 'job="a-canary"'}}]},
                       source="<test>")
    controller = Controller(cfg, metrics=None, prometheus=None, actuator_factory=None)  # type: ignore[arg-type]
    assert controller.slots(canaries) == slots
    assert slots == 1 or interval / slots >= 1.0


def test_repeated_holds_are_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = DecisionLog(logging.getLogger("canaryd.worker"), "ns/a", repeat_every=300, clock=lambda: now[0])
    caplog.set_level(logging.DEBUG, logger="canaryd.worker")
    for t, decision, step in ((0, "hold", 0), (5, "hold", 0), (10, "hold", 0), (15, "advance", 0), (20, "hold", 1),
                              (25, "hold", 1), (400, "hold", 1)):
        now[0] = t
        log.log(decision, "progressing", 5, step, ["why"])
    levels = [(r.levelname, r.decision, r.step) for r in caplog.records]  # type: ignore[attr-defined]
    assert levels == [("INFO", "hold", 0), ("DEBUG", "hold", 0), ("DEBUG", "hold", 0), ("INFO", "advance", 0),
                      ("INFO", "hold", 1), ("DEBUG", "hold", 1), ("INFO", "hold", 1)]
    assert all(r.canary == "ns/a" and r.reasons == ["why"] for r in caplog.records)  # type: ignore[attr-defined]


def test_pause_waits_while_a_command_is_in_flight() -> None:
    pacer = Pacer(max_defer=5.0)
    events: list[str] = []

    async def long_work() -> None:
        for i in range(3):
            await pacer.pause()
            events.append(f"step {i}")

    async def main() -> None:
        with pacer.urgent("ns/a"):
            task = asyncio.create_task(long_work())
            for _ in range(10):
                await asyncio.sleep(0)
            events.append("command done")
        await asyncio.wait_for(task, 1.0)

    asyncio.run(main())
    assert events == ["command done", "step 0", "step 1", "step 2"]
