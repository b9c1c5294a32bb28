"""Which callbacks hold the event loop: a diagnostic for the benches (the daemon does not use it).

`watch(threshold)` times every callback the running loops of this process run (asyncio's Handle._run)
and keeps those that took longer than `threshold` seconds, with what ran: for a task's step, its
coroutine and where it stopped (the innermost await), after where it started when that differs (a step
that ran from one await to a far later one: the awaits between did not yield); else the callback's repr. `summary` groups them.
A request that arrives while such a callback runs waits for it: these are the tails of the latencies.
With `sample=True` a thread also looks at the loop's stack every millisecond while a callback has run
for more than half the threshold, within the window, and the summary says where those callbacks spent
their time.
"""

from __future__ import annotations

import asyncio
import math
import sys
import threading
import time
from asyncio import events
from collections import Counter, defaultdict
from dataclasses import dataclass, field


@dataclass
class Slow:
    threshold: float
    seen: list[tuple[float, float, str]] = field(default_factory=list)  # (seconds, monotonic end, what)
    callbacks: int = 0
    window: tuple[float, float] | None = None  # (monotonic start, end): the summary counts only these
    samples: Counter[str] = field(default_factory=Counter)  # where long callbacks were seen (sample=True)
    running: float | None = None  # when the current callback started


def _where(coro: object) -> str:
    """The coroutine and the innermost frame of its await chain (where the step stopped)."""
    names, inner = [], coro
    while inner is not None:
        code = getattr(inner, "cr_code", None) or getattr(inner, "gi_code", None)
        if code is None:
            break
        names.append(code.co_qualname)
        frame = getattr(inner, "cr_frame", None) or getattr(inner, "gi_frame", None)
        nxt = getattr(inner, "cr_await", None) or getattr(inner, "gi_yieldfrom", None)
        if nxt is None and frame is not None:
            names[-1] += f":{frame.f_lineno}"
        inner = nxt
    return " > ".join(names)


def _task_step(handle: events.Handle) -> str | None:
    """Where the task whose step this is stands now, or None when the callback is no task's step."""
    owner = getattr(handle._callback, "__self__", None)  # type: ignore[attr-defined]
    return f"task {_where(owner.get_coro())}" if isinstance(owner, asyncio.Task) else None


def describe(handle: events.Handle) -> str:
    return _task_step(handle) or repr(handle._callback)[:160]  # type: ignore[attr-defined]


def watch(threshold: float, *, sample: bool = False) -> Slow:
    slow = Slow(threshold)
    run = events.Handle._run

    def timed(self: events.Handle) -> None:
        began = _task_step(self)  # where a task's step starts; other callbacks are described after they ran
        started = slow.running = time.perf_counter()
        run(self)
        slow.running = None
        took = time.perf_counter() - started
        slow.callbacks += 1
        if took > threshold:
            end = describe(self)
            slow.seen.append((took, time.monotonic(), end if began in (None, end) else f"{began}  ->  {end}"))

    events.Handle._run = timed  # type: ignore[method-assign]
    if sample:
        sys.setswitchinterval(0.0005)  # the sampler gets the GIL while the loop's thread runs Python
        threading.Thread(target=_sampler, args=(slow, threading.get_ident()), daemon=True).start()
    return slow


def _sampler(slow: Slow, loop_thread: int) -> None:
    while True:
        time.sleep(0.001)
        started = slow.running
        if started is None or time.perf_counter() - started < slow.threshold / 2:
            continue
        frame = sys._current_frames().get(loop_thread)
        names = []
        while frame is not None:
            code = frame.f_code
            if "canaryd" in code.co_filename or "site-packages" in code.co_filename:
                names.append(f"{code.co_qualname}:{frame.f_lineno}")
            frame = frame.f_back
        if slow.window is not None and slow.window[0] <= time.monotonic() <= slow.window[1]:
            slow.samples[" < ".join(names[:4])] += 1


def summary(slow: Slow, top: int = 12) -> str:
    groups: dict[str, list[float]] = defaultdict(list)
    lo, hi = slow.window or (-math.inf, math.inf)
    seen = [(took, end, what) for took, end, what in slow.seen if lo <= end <= hi]
    for took, _, what in seen:
        groups[what].append(took)
    during = "" if slow.window is None else f" during the timed {hi - lo:.0f} s"
    lines = [f"callbacks over {slow.threshold * 1000:g} ms{during}: {len(seen)} (of {slow.callbacks} in all)"]
    for what, times in sorted(groups.items(), key=lambda kv: -max(kv[1]))[:top]:
        lines.append(f"  {len(times):5d} x, max {max(times) * 1000:6.1f} ms, total {sum(times) * 1000:7.1f} ms: {what}")
    if slow.samples:
        lines.append("  where the long callbacks were (1 ms samples, innermost first):")
        lines += [f"  {n:5d}  {where}" for where, n in slow.samples.most_common(top * 2)]
    return "\n".join(lines)
