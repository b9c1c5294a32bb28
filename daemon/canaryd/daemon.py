"""`canaryd run`: the daemon's parts (built by wiring.py) running together until a signal stops them.

Signals: SIGTERM/SIGINT stop it within 5 s (writes in progress finish first); SIGHUP reloads the
config, and so does a change of the config file's content, looked at every CONFIG_POLL seconds (a
mounted ConfigMap changes by a symlink swap, with no signal). A bad new config is refused while the
old one keeps running: an ERROR log line, canaryd_config_reload_success 0 and a "config" problem in
/readyz's detail say so until a reload succeeds. A canary removed while its rollout is active is
rolled back first; if that rollback cannot be written, the reload is refused (and tried again at the
next look at the file), so no route is left with traffic on a canary nobody watches.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from .actuator import ActuationError
from .config import Config, ConfigError, load_config
from .controller import Controller, NotLeader
from .rollout import ACTIVE, TransitionError, Trigger
from .server import serve
from .wiring import ActuatorFactory, Parts, assemble

if TYPE_CHECKING:
    from .canary_resources import CanaryResources

log = logging.getLogger("canaryd")

SHUTDOWN_GRACE = 3.5  # seconds for in-flight writes; the whole shutdown stays within 5 s
CONFIG_POLL = 3.0  # seconds between looks at the config file's content
GC_YOUNG = 1000  # allocations between two collections of the young generation (see tune_gc)
GC_FREEZE_EVERY = 1.0  # seconds: what survived that long joins the heap the collector no longer scans
GC_FULL_EVERY = 3600.0  # seconds between full collections (cycles among older objects; a pause of ~1 s)


def file_digest(path: str) -> str | None:
    """The content's hash (through symlinks, as a mounted ConfigMap is); None when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


@dataclass
class Daemon:
    """The running daemon; tests build one with their own config and actuators."""

    config: Config
    config_path: str | None = None
    actuator_factory: ActuatorFactory | None = None
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    controller: Controller | None = None
    canary_resources: CanaryResources | None = None  # with a cluster: the file's canaries merge with Canary objects
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    config_poll: float = CONFIG_POLL
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _parts: Parts | None = None
    _digest: str | None = None  # of the file content last tried (applied, or refused as invalid)
    _reloading: asyncio.Lock = field(default_factory=asyncio.Lock)

    def stop(self) -> None:
        self._stop.set()

    async def reload(self) -> bool:
        """Re-read the config file; on any problem keep the running config. A content already tried
        (applied, or refused as invalid) is not tried again: a SIGHUP and the file's poll may both
        see one change."""
        if self.config_path is None or self.controller is None:
            return False
        async with self._reloading:
            digest = file_digest(self.config_path)
            if digest is not None and digest == self._digest:
                log.info("config file unchanged since the last reload; nothing to do")
                return False
            return await self._reload(digest)

    async def _reload(self, digest: str | None) -> bool:
        assert self.config_path is not None and self.controller is not None
        try:
            new = load_config(self.config_path)
        except ConfigError as e:
            self._digest = digest  # the same invalid content is not retried; a fixed file is
            return self.refused("; ".join(e.problems), problems=e.problems)
        failed = await self._roll_back_removed(new)
        if failed:
            return self.refused(failed)  # the digest stays: the next look at the file tries again
        self._digest = digest
        if self.canary_resources is not None:
            await self.canary_resources.file_reloaded(new)
        else:
            await self.controller.reload(new)
        # Only canaries, their settings and the alert rules are reloaded; say so rather than pretend.
        fixed = [k for k in ("server", "prometheus", "kubernetes", "notifications")
                 if getattr(new, k) != getattr(self.config, k)]
        if fixed:
            log.warning("changed config sections apply only after a restart; their running values stay",
                        extra={"sections": fixed})
        self.config = new
        log.info("config reloaded", extra={"canaries": len(new.canaries)})
        if self._parts is not None:
            self._parts.metrics.config_reload.record(True)
            self._parts.health.clear("config")
        return True

    def refused(self, why: str, *, problems: list[str] | None = None) -> bool:
        """A reload that did not apply: an ERROR line, the metric and /readyz's detail say so."""
        log.error("config reload refused; the running config stays", extra={"problems": problems or [why]})
        if self._parts is not None:
            self._parts.metrics.config_reload.record(False)
            self._parts.health.set_problem("config", f"reload refused, the running config stays: {why}")
        return False

    async def _roll_back_removed(self, new: Config) -> str | None:
        """Roll back each canary the new config drops while its rollout is active; the first failure."""
        assert self.controller is not None
        keep = {c.key for c in new.canaries}
        if self.canary_resources is not None:  # canaries from Canary objects stay
            keep |= {k for k, e in self.canary_resources.entries.items() if e.config is not None}
        for key, worker in list(self.controller.workers.items()):
            if key in keep or worker.rollout.phase not in ACTIVE:
                continue
            ns, name = key.split("/", 1)
            try:
                await self.controller.command(ns, name, "rollback", trigger=Trigger.MANUAL,
                                              reason="removed from the config by a reload: rolled back first")
            except (TransitionError, NotLeader):
                continue  # already stopped; or a follower, whose leader rolls it back on the same reload
            except (ActuationError, TimeoutError) as e:
                return (f"canary {key} is {worker.rollout.phase.value} and removed from the config, but its "
                        f"rollback failed: {e or type(e).__name__}")
            log.warning("canary removed from the config during a rollout: rolled back", extra={"canary": key})
        return None

    async def watch_config_file(self) -> None:
        """Reload when the config file's content changes; runs until cancelled."""
        if self.config_path is None:
            return
        while True:
            await asyncio.sleep(self.config_poll)
            digest = file_digest(self.config_path)
            if digest is not None and digest != self._digest:
                await _guarded_reload(self)

    async def run(self) -> None:
        """Run until `stop`; the parts' lifetimes nest (wiring.assemble, then a task group), so each
        is stopped by the structure that started it, whatever ends the run."""
        try:
            async with assemble(self.config, registry=self.registry, actuator_factory=self.actuator_factory,
                                with_app=True) as parts:
                self.controller = parts.controller
                self._parts = parts
                if self.config_path is not None:
                    self._digest = file_digest(self.config_path)
                self.canary_resources = parts.canary_resources
                tune_gc()
                await self._serve(parts)
        except BaseExceptionGroup as group:  # a task of the group failed: raise what failed, not a group
            raise _first_error(group) from None

    async def _serve(self, parts: Parts) -> None:
        assert parts.app is not None
        server = parts.config.server
        async with asyncio.TaskGroup() as tasks:
            serving = tasks.create_task(serve(parts.app, server.host, server.port, ready=self.ready),
                                        name="http server")
            loops = [tasks.create_task(loop(), name=name) for name, loop in parts.loops().items()]
            loops.append(tasks.create_task(self.watch_config_file(), name="config file"))
            loops.append(tasks.create_task(tend_gc(), name="gc"))
            await self._stop.wait()
            log.info("shutting down")
            for t in loops:
                t.cancel()
            # Let queued commands and writes finish while the API still answers, then stop listening.
            await parts.controller.drain(SHUTDOWN_GRACE)
            serving.cancel()


def tune_gc() -> None:
    """The collector's pauses stay short. What start-up built is never scanned again (freeze). A young
    collection scans what was allocated since the last one and still lives, and under load nearly all of
    it does (the canaries' new state); its cost grows with that, ~1 us an object on a large heap: at
    50,000 objects a pause was 20-230 ms (bench/alert_latency.py --load), at GC_YOUNG ~1-3 ms. The older
    generations are not collected on their own: tend_gc freezes the survivors every GC_FREEZE_EVERY
    seconds, so no collection rescans them, and collects everything once every GC_FULL_EVERY seconds."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG, 1_000_000, 1_000_000)


async def tend_gc(freeze_every: float = GC_FREEZE_EVERY, full_every: float = GC_FULL_EVERY) -> None:
    """Runs until cancelled (see tune_gc). The daemon makes almost no cyclic garbage (a young collection
    under load finds none): what survived a young collection joins the frozen heap, where only the full
    collection looks for cycles."""
    since_full = 0.0
    while True:
        await asyncio.sleep(freeze_every)
        since_full += freeze_every
        if since_full >= full_every:
            since_full = 0.0
            gc.unfreeze()
            started = time.perf_counter()
            found = gc.collect()
            log.info("full garbage collection", extra={"collected": found,
                                                       "seconds": round(time.perf_counter() - started, 3)})
        gc.freeze()


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """The first failure in a (nested) group; the others are logged."""
    first, *others = group.exceptions
    for e in others:
        log.error("also failed while stopping", exc_info=e)
    return _first_error(first) if isinstance(first, BaseExceptionGroup) else first


async def _guarded_reload(daemon: Daemon) -> bool:
    try:
        return await daemon.reload()
    except Exception as e:
        log.exception("config reload failed; the running config stays")
        return daemon.refused(f"{type(e).__name__}: {e}")


async def run_daemon(daemon: Daemon) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.stop)
    reloads: set[asyncio.Task[bool]] = set()

    def reload() -> None:
        # Kept until done, and guarded: a reload's failure is logged, never lost.
        task = asyncio.create_task(_guarded_reload(daemon), name="config reload")
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload)
    try:
        await daemon.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
