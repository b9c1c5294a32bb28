"""The demo's traffic: real HTTP requests at a bounded rate, split the way the mesh would split them.

It plays the platform strategy's VirtualService: a request with `x-canary: true` always goes to the canary (the
header route), the others go to the canary with the probability of canaryd's current weight, read
from canaryd's API. Once a rollout is over (promoted or rolled back) the canary is scaled to 0 in
the platform strategy's procedures, so the header route has nowhere to go and falls back to stable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

log = logging.getLogger("canaryd_demo.traffic")

ACTIVE_PHASES = ("progressing", "paused", "promoting")


@dataclass(frozen=True)
class Split:
    """Where traffic goes now: the canary's weight (0-100) and whether a canary is serving at all."""

    weight: int = 0
    canary_serving: bool = False


@dataclass
class TrafficStats:
    sent: int = 0
    to_canary: int = 0
    with_header: int = 0  # requests that carried x-canary: true
    header_to_canary: int = 0  # ... and went to the canary (the others came while no canary served)
    failed: int = 0  # 5xx answers
    errors: int = 0  # no answer at all (connection error, timeout)
    dropped: int = 0  # not sent because too many were in flight: the rate stays bounded


class TrafficGenerator:
    """Sends `rps` requests per second until stopped; at most `max_in_flight` at a time."""

    def __init__(self, session: aiohttp.ClientSession, *, stable_url: str, canary_url: str,
                 split: Callable[[], Split], rps: float, header_share: float, rng: random.Random,
                 max_in_flight: int = 100, timeout: float = 5.0) -> None:
        if not 0 < rps <= 1000:
            raise ValueError(f"rps must be in (0, 1000], got {rps}")
        if not 0 <= header_share <= 1:
            raise ValueError(f"header_share is a fraction 0..1, got {header_share}")
        self.session = session
        self.stable_url = stable_url
        self.canary_url = canary_url
        self.split = split
        self.rps = rps
        self.header_share = header_share
        self.rng = rng
        self.stats = TrafficStats()
        self._gate = asyncio.Semaphore(max_in_flight)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._tasks: set[asyncio.Task[None]] = set()

    def route(self) -> tuple[str, bool]:
        """(arm, has x-canary header) for the next request."""
        split = self.split()
        header = self.rng.random() < self.header_share
        if split.canary_serving and (header or self.rng.random() * 100 < split.weight):
            return "canary", header
        return "stable", header

    async def run(self) -> None:
        """Send until cancelled; in-flight requests are cancelled with it."""
        period = 1.0 / self.rps
        next_at = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                if next_at > now:
                    await asyncio.sleep(next_at - now)
                # Catch up after a stall, but never with a burst of more than a second's worth.
                next_at = max(next_at + period, time.monotonic() - 1.0)
                if self._gate.locked():
                    self.stats.dropped += 1
                    continue
                arm, header = self.route()
                task = asyncio.create_task(self._send(arm, header))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _send(self, arm: str, header: bool) -> None:
        async with self._gate:
            url = (self.canary_url if arm == "canary" else self.stable_url) + "/auth/login"
            headers = {"x-canary": "true"} if header else {}
            self.stats.sent += 1
            self.stats.to_canary += arm == "canary"
            self.stats.with_header += header
            self.stats.header_to_canary += header and arm == "canary"
            try:
                async with self.session.get(url, headers=headers, timeout=self._timeout) as resp:
                    await resp.read()
                    if resp.status >= 500:
                        self.stats.failed += 1
            except (aiohttp.ClientError, TimeoutError) as e:
                self.stats.errors += 1
                log.debug("request failed", extra={"url": url, "error": str(e)})
