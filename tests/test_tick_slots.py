"""Slots: many progressing canaries are read a slot a tick, and every one of them once a round, even when
canaries start or stop during the round (which changes the number of slots the next round needs)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from prometheus_client import CollectorRegistry

from canaryd.config import parse_config
from canaryd.controller import Controller, balanced_slots, slot_of
from canaryd.metrics import Metrics
from canaryd.sources.prometheus import PrometheusClient
from canaryd.wiring import dry_run_actuators


def _config(n: int, interval: float = 30.0) -> Any:
    def canary(i: int) -> dict[str, Any]:
        return {"name": f"c{i}", "namespace": "ns", "route": f"c{i}",
                "stable": {"deployment": f"c{i}", "selector": f'job="c{i}"'},
                "canary": {"deployment": f"c{i}-canary", "selector": f'job="c{i}-canary"'}}

    return parse_config({"kubernetes": {"enabled": False}, "defaults": {"interval": f"{interval:g}s"},
                         "canaries": [canary(i) for i in range(n)]}, source="<test>")


async def _controller(n: int) -> Controller:
    controller = Controller(_config(n), metrics=Metrics(CollectorRegistry()), prometheus=None,  # type: ignore[arg-type]
                            actuator_factory=dry_run_actuators())
    await controller.start()
    return controller


async def _start(controller: Controller, name: str) -> None:
    await controller.command("ns", name, "start")


def test_a_canary_started_mid_round_moves_nobody_out_of_the_round() -> None:
    """1000 progressing canaries are 5 slots; a 1001st started during the round would make 6. Every canary
    progressing at the round's start is still read exactly once in it, and the newcomer from the next."""

    async def main() -> tuple[Counter[str], Counter[str], int]:
        controller = await _controller(1001)
        for i in range(1000):
            await controller.command("ns", f"c{i}", "start")
        await controller.primed()
        k = controller.slots()
        assert k == 5
        seen: Counter[str] = Counter()
        for t in range(k):
            if t == 2:
                await controller.command("ns", "c1000", "start")
            seen.update(w.key for w in (await controller._select((await controller._scan()).judged))[1])
        after: Counter[str] = Counter()
        for _ in range(controller.slots()):
            after.update(w.key for w in (await controller._select((await controller._scan()).judged))[1])
        await controller.stop()
        return seen, after, controller.slots()

    seen, after, k = asyncio.run(main())
    assert k == 6
    assert {key: n for key, n in seen.items() if n != 1} == {}
    assert {f"ns/c{i}" for i in range(1000)} <= set(seen)
    assert set(after) == {f"ns/c{i}" for i in range(1001)} and set(after.values()) == {1}


def test_slots_are_even() -> None:
    """A tick reads the same number of canaries (±1) whatever their names: the same queries, the same work."""
    for n, k in ((1000, 5), (10_000, 30), (1001, 6), (37, 4)):
        sizes = Counter(balanced_slots([f"ns/c{i}" for i in range(n)], k).values())
        assert set(sizes) == set(range(k)) and max(sizes.values()) - min(sizes.values()) <= 1


def test_a_canarys_slot_keeps_its_place_in_the_interval_when_the_slots_change() -> None:
    """A canary's slot is its place in the round: with 30 slots or 29 its read moves by one slot at most."""
    for i in range(2000):
        key = f"ns/c{i}"
        assert abs(slot_of(key, 30) / 30 - slot_of(key, 29) / 29) < 1 / 29
        assert 0 <= slot_of(key, 7) < 7


def test_a_rounds_slots_are_balanced_slots_of_the_canaries_whatever_was_kept_from_the_last_round() -> None:
    """The round's slots are made in the paced walk from places kept a round: the same slots as
    balanced_slots of the judged canaries' keys, in the first round and after canaries came and went."""

    async def main() -> list[tuple[dict[str, int], dict[str, int]]]:
        controller = await _controller(1200)
        for i in range(1100):
            await _start(controller, f"c{i}")
        await controller.primed()
        out = []
        for started in (range(1100, 1200), range(0)):
            judged = (await controller._scan()).judged
            k = controller.slots(len(judged))
            out.append((await controller._balanced(judged, k), balanced_slots([w.key for w in judged], k)))
            for i in started:
                await _start(controller, f"c{i}")
        await controller.stop()
        return out

    for made, expected in asyncio.run(main()):
        assert made == expected and len(made) in (1100, 1200)


def test_a_controllers_prometheus_answers_are_turns_of_its_pacer() -> None:
    """However the controller is built (the daemon's wiring or a bench's), its client decodes and splits
    Prometheus' answers as turns of the controller's pacer: otherwise a tick's answers run as one step."""

    async def main() -> tuple[int, int]:
        client = PrometheusClient(None, "http://127.0.0.1:9")  # type: ignore[arg-type] # never asked: only its turns
        controller = Controller(_config(1), metrics=Metrics(CollectorRegistry()), prometheus=client,
                                actuator_factory=dry_run_actuators())
        before = controller.pacer.turns
        async with client.turn():
            pass
        return before, controller.pacer.turns

    assert asyncio.run(main()) == (0, 1)
