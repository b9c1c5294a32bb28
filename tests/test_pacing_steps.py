"""Pacer.step: the steps of long work (a scrape of /metrics) take turns with the judgements, first come
first served, and wait while a command is in flight."""

from __future__ import annotations

import asyncio
import time

from canaryd.pacing import Pacer


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def test_a_step_waits_behind_the_judgements_already_waiting() -> None:
    pacer = Pacer(budget=0.0002)
    order: list[str] = []

    async def judge(i: int) -> None:
        async with pacer.turn(f"ns/c{i}"):
            _busy(0.001)
            order.append("judge")

    async def scrape() -> None:
        for _ in range(4):
            _busy(0.001)
            order.append("step")
            await pacer.step("metrics scrape")

    judges = [asyncio.create_task(judge(i)) for i in range(4)]
    await asyncio.sleep(0)  # the first judgement runs; the others wait for their turns
    await asyncio.gather(scrape(), *judges)
    # The first judgement runs, the first step (not asked for) too; the next step waits behind the three
    # judgements queued before it, each a turn of its own; then nothing else waits.
    assert order == ["judge", "step", "judge", "judge", "judge", "step", "step", "step"]
    assert pacer.turns == 8


async def test_a_step_waits_while_a_command_is_in_flight() -> None:
    pacer = Pacer(budget=0.0002, max_defer=10.0)
    stepped = asyncio.Event()

    async def scrape() -> None:
        _busy(0.001)
        await pacer.step("metrics scrape")
        stepped.set()

    with pacer.urgent("ns/target"):
        task = asyncio.create_task(scrape())
        for _ in range(20):
            await asyncio.sleep(0.001)
        assert not stepped.is_set()
    await asyncio.wait_for(task, 5)
    assert stepped.is_set()


async def test_work_between_two_turns_is_no_pause_for_the_loop() -> None:
    """A run of turns starts at once only after the loop has gone round: long work done between two turns
    without an await (a part's answer split between its turns, say) does not count as the loop being free."""
    pacer = Pacer(budget=0.0002)
    order: list[str] = []

    async def reader() -> None:
        async with pacer.turn("prometheus answer"):
            asyncio.get_running_loop().call_soon(order.append, "request")  # arrives during the turn
            _busy(0.001)
            order.append("turn")
        _busy(0.001)  # no await: the loop has not polled its sockets since the turn ended
        async with pacer.turn("prometheus answer"):
            order.append("turn")

    await reader()
    assert order == ["turn", "request", "turn"]
