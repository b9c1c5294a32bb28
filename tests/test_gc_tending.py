"""daemon.tend_gc: survivors are frozen (no collection rescans them), and the full collection still finds a
cycle that became garbage after it was frozen."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from canaryd.daemon import GC_YOUNG, tend_gc, tune_gc


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture
def gc_restored() -> Iterator[None]:
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


async def _until(condition: object, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.005)


async def test_survivors_are_frozen_and_the_full_collection_finds_old_cycles(gc_restored: None) -> None:
    tune_gc()
    assert gc.get_threshold()[0] == GC_YOUNG
    a, b = _Node(), _Node()
    a.other, b.other = b, a  # a cycle: only the collector frees it
    gone = weakref.ref(a)
    frozen_before = gc.get_freeze_count()
    task = asyncio.create_task(tend_gc(freeze_every=0.01, full_every=3600.0))
    try:
        await _until(lambda: gc.get_freeze_count() > frozen_before)  # the cycle is among the frozen
        del a, b
        gc.collect()
        assert gone() is not None  # a frozen cycle is not looked at by a collection
    finally:
        task.cancel()
    task = asyncio.create_task(tend_gc(freeze_every=0.01, full_every=0.02))
    try:
        await _until(lambda: gone() is None)  # the full collection unfreezes first and frees it
    finally:
        task.cancel()
