"""Shares the event loop between the canaries' judgements and the requests that must answer fast.

A tick posts hundreds of judgements at once. Run back to back they would hold the loop for as long as
they take together (200 canaries at ~2 ms each: 0.4 s), and a webhook arriving meanwhile would wait for
all of them. So each judgement takes a turn (`async with pacer.turn():`). Turns run back to back for
at most `budget` seconds; the others wait for a later pass of the loop, after it has polled its
sockets. While a command is in flight (`with pacer.urgent(key):`, an alert's rollback, say) no new turn
starts but that of the command's own canary (its command waits behind its tick), for MAX_DEFER seconds
at most, so the command's few passes of the loop each wait for one judgement at most. A scrape of
/metrics, done in steps, takes each step as a turn (`step()` between steps); a tick's reads call
`pause()` between parts, which waits while a command is in flight. Otherwise first come, first served;
a judgement is never cut, only started later.

Only the event loop's thread uses a Pacer (no locks).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterator

__all__ = ["BUDGET", "MAX_DEFER", "Pacer"]

# Seconds of turns in one pass of the loop (at least one turn). A judgement takes ~1 ms, so this is one
# turn a pass, but for small ones (an answer decoded, a part's answers split): a request arriving meanwhile
# waits for one turn a pass; the loop's own cost per pass (~20 us) leaves the judgements' throughput as it was.
BUDGET = 0.0002
MAX_DEFER = 0.05  # seconds a command in flight may hold the turns back (then they go on regardless)
_RETRY = 0.0005  # seconds between looks while a command holds the turns back


class Pacer:
    def __init__(self, budget: float = BUDGET, max_defer: float = MAX_DEFER) -> None:
        self.budget = budget
        self.max_defer = max_defer
        self._slice_start = -math.inf  # when the current run of turns began
        self._last_end = -math.inf  # when the last turn ended
        self._cost = 0.0  # running mean of a turn's duration: how many turns one pass may start
        self._waiting: deque[tuple[str, asyncio.Future[None]]] = deque()  # (canary key, woken when its turn comes)
        self._release_pending = False
        self._passed = True  # the loop has gone round (polled its sockets) since the last turn ended
        self._marking = False
        self._urgent: Counter[str] = Counter()  # canary key -> commands in flight
        self._calm: asyncio.Event | None = None  # set while no command is in flight (see pause)
        self._deferred_since: float | None = None
        self.turns = 0  # turns taken (for benchmarks and tests)
        self.deferred = 0  # of which waited for a later pass of the loop

    @property
    def waiting(self) -> int:
        """Turns waiting for a later pass of the loop."""
        return len(self._waiting)

    @contextlib.asynccontextmanager
    async def turn(self, key: str = "") -> AsyncIterator[None]:
        """Wait for a turn, then run the block (canary `key`'s judgement) as the turn."""
        if not self._may_start(key, time.perf_counter()):
            await self._wait(key)
        started = time.perf_counter()
        try:
            yield
        finally:
            self._last_end = end = time.perf_counter()
            self._ended()
            self.turns += 1
            took = end - started
            self._cost = took if self._cost == 0.0 else 0.8 * self._cost + 0.2 * took

    async def pause(self) -> None:
        """A point where other long work (a scrape, a tick's reads) lets the loop go round, and waits
        while a command is in flight (max_defer at most)."""
        await asyncio.sleep(0)
        if self._urgent:
            if self._calm is None:
                self._calm = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._calm.wait(), self.max_defer)

    async def step(self, key: str = "") -> None:
        """Long work done in steps (a scrape of /metrics) calls this between two steps: the step just run
        counts as a turn, and the next one starts when a turn would (after the turns already waiting, at a
        later pass, and not while a command is in flight: max_defer at most)."""
        self._last_end = time.perf_counter()
        self._ended()
        self.turns += 1
        await asyncio.sleep(0)
        if not self._may_start(key, time.perf_counter()):
            await self._wait(key)

    @contextlib.contextmanager
    def urgent(self, key: str = "") -> Iterator[None]:
        """While the block runs (a command to canary `key` being applied), no other canary's turn starts
        (for max_defer at most)."""
        self._urgent[key] += 1
        if self._calm is not None:
            self._calm.clear()
        if self._waiting:
            self._schedule()  # this canary's turn may be waiting: the next pass starts it
        try:
            yield
        finally:
            self._urgent[key] -= 1
            if not self._urgent[key]:
                del self._urgent[key]
            if not self._urgent and self._calm is not None:
                self._calm.set()
            if self._waiting:
                self._schedule()

    def _may_start(self, key: str, now: float) -> bool:
        if key in self._urgent:
            return True  # a command waits behind this judgement
        if self._waiting or self._release_pending or self._urgent:
            return False
        if now - self._slice_start < self.budget:
            return True  # this run of turns has time left
        if now - self._last_end >= self.budget and self._passed:
            # Free of turns for a while, and the loop has gone round since: a new run. Work done between two
            # turns without an await (a part's answer split, say) is no pause: the next run waits for a pass.
            self._slice_start = now
            return True
        return False

    def _ended(self) -> None:
        """A turn (or a step) ended: the next run of turns waits until the loop has gone round."""
        self._passed = False
        if not self._marking:
            self._marking = True
            asyncio.get_running_loop().call_soon(self._mark_pass)

    def _mark_pass(self) -> None:
        self._marking = False
        self._passed = True

    async def _wait(self, key: str) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((key, waiter))
        self._schedule()
        self.deferred += 1
        try:
            await waiter
        except asyncio.CancelledError:
            with contextlib.suppress(ValueError):
                self._waiting.remove((key, waiter))
            raise

    def _schedule(self, delay: float = 0.0) -> None:
        if self._release_pending:
            return
        self._release_pending = True
        loop = asyncio.get_running_loop()
        if delay:
            loop.call_later(delay, self._release)
        else:
            loop.call_soon(self._release)  # the next pass of the loop, after it has polled its sockets

    def _release(self) -> None:
        """Start a new run of turns: wake as many waiters as fit in the budget (one at least)."""
        self._release_pending = False
        now = time.perf_counter()
        if self._urgent:
            if self._deferred_since is None:
                self._deferred_since = now
            if now - self._deferred_since < self.max_defer:
                self._wake_urgent()
                self._schedule(_RETRY)
                return
        self._deferred_since = None
        self._slice_start = now
        n = max(1, int(self.budget / self._cost)) if self._cost > 0 else 1
        while n and self._waiting:
            _, waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                n -= 1
        if self._waiting:
            self._schedule()

    def _wake_urgent(self) -> None:
        """The turns of canaries with a command in flight: the command waits behind them."""
        for item in [w for w in self._waiting if w[0] in self._urgent]:
            self._waiting.remove(item)
            if not item[1].done():
                item[1].set_result(None)
