"""Canary objects (canaries.canaryd.io) as canaries, beside the config file's.

Each Canary's spec is validated exactly as a `canaries:` entry of the file is (`config.parse_config`,
with the file's `defaults:`), its name and namespace taken from its metadata. The valid ones are
added to the file's canaries and handed to the controller as a reload does; a Canary that is invalid,
or whose namespace/name the file already holds, gets `Ready=False` with the reason and is not run.
Nothing a Canary says stops the daemon.

The leader writes each Canary's status subresource (canary_status.py) when it differs from the one
the object shows, in one pass per analysis tick at most, and records Events for each transition on
the Canary and on its canary Deployment (canary_events.py). It also applies the manual verb of a
`canaryd.io/action` annotation (rollback, promote, pause, resume, start) through the controller, as
the HTTP API would, and then removes the annotation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from .actuator import ActuationError
from .canary_events import EventRecorder, ObjectRef
from .canary_status import canary_status, comparable, invalid_status, transitions
from .config import AnalysisSettings, CanaryConfig, Config, ConfigError, parse_config
from .config.model import CanaryResourcesConfig
from .config.schema import section_of
from .controller import CommandQueued, Controller, NotLeader, UnknownCanary
from .crd import API_VERSION, KIND
from .kube import JSON, KubeConflict, KubeError, KubeNotFound, WatchEvent
from .kube.canaries import CanaryApi
from .leadership import Leadership
from .rollout import ACTIVE, TransitionError, Trigger

log = logging.getLogger("canaryd.canaries")

ACTION_ANNOTATION = "canaryd.io/action"
ACTIONS = ("rollback", "promote", "pause", "resume", "start")
RETRY = (2.0, 60.0)  # seconds before a failed watch starts again, doubling up to the second
WRITE_CONCURRENCY = 16  # status writes in flight at once


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def defaults_as_written(settings: AnalysisSettings) -> dict[str, Any]:
    """The file's defaults as YAML, for a Canary's spec to be read over; a max_step_duration that is the
    implied 3 × step_duration stays implied, so a Canary's own step_duration still moves it."""
    out = dict(section_of(AnalysisSettings).dump(settings))
    if settings.max_step_duration == 3 * settings.step_duration:
        out.pop("max_step_duration", None)
    return out


def canary_config(obj: Mapping[str, Any], defaults: Mapping[str, Any]) -> CanaryConfig:
    """The canary a Canary object declares, validated as the config file's entries are. Raises ConfigError
    whose problems name the object and the spec's keys (`spec.step_duration: ...`)."""
    meta = _meta(obj)
    source = f"Canary {meta.get('namespace')}/{meta.get('name')}"
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        raise ConfigError([f"{source}: spec: must be a mapping of the keys of a canaries: entry"])
    entry = {**spec, "name": meta.get("name"), "namespace": meta.get("namespace")}
    try:
        config = parse_config({"defaults": dict(defaults), "canaries": [entry]}, source)
    except ConfigError as e:
        raise ConfigError([_spec_path(p) for p in e.problems]) from None
    return config.canaries[0]


def _spec_path(problem: str) -> str:
    for own in ("name", "namespace"):
        problem = problem.replace(f"canaries[0].{own}:", f"metadata.{own}:")
    return problem.replace("canaries[0].", "spec.").replace("canaries[0]:", "spec:")


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """`new` as a merge patch over `old`: a key `new` no longer has is written null, which removes it."""
    out: dict[str, Any] = {k: None for k in old if k not in new}
    for k, v in new.items():
        before = old.get(k)
        out[k] = merge_patch(before, v) if isinstance(v, Mapping) and isinstance(before, Mapping) else v
    return out


@dataclass
class _Entry:
    obj: JSON
    config: CanaryConfig | None
    problem: str | None  # why it is not run (invalid spec); None when valid

    @property
    def generation(self) -> int | None:
        g = _meta(self.obj).get("generation")
        return g if isinstance(g, int) else None

    @property
    def same_spec(self) -> tuple[Any, ...]:
        meta = _meta(self.obj)
        return meta.get("uid"), meta.get("generation"), repr(self.obj.get("spec"))


class CanaryResources:
    """Watches Canary objects, runs the valid ones, and (when leading) shows their status and Events."""

    def __init__(self, controller: Controller, api: CanaryApi, config: Config, *, leadership: Leadership,
                 clock: Callable[[], float] = time.time, recorder: EventRecorder | None = None) -> None:
        self.controller = controller
        self.api = api
        self.file = config
        self.settings: CanaryResourcesConfig = config.kubernetes.canary_resources
        self.leadership = leadership
        self.clock = clock
        self.recorder = recorder or EventRecorder(api, clock)
        self.entries: dict[str, _Entry] = {}
        self._defaults = defaults_as_written(config.defaults)
        self._conflicts: set[str] = set()
        self._changed = asyncio.Event()
        self._written: dict[str, dict[str, Any]] = {}  # the last status written per Canary
        self._seen: dict[str, dict[str, Any]] = {}  # the last canary status seen per Canary, for Events
        self._acted: dict[str, tuple[str, str]] = {}  # (resourceVersion, verb) of the last action applied
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------------------------ loops
    async def run(self) -> None:
        """Watch every configured namespace (or all) and make one pass per change or tick; until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            for namespace in self.settings.namespaces or (None,):
                tasks.create_task(self._watch(namespace), name=f"Canary watch {namespace or '*'}")
            tasks.create_task(self._passes(), name="Canary status")

    async def _watch(self, namespace: str | None) -> None:
        delay = RETRY[0]
        while True:
            try:
                async for event in self.api.watch(namespace):
                    self._on_event(event)
                    delay = RETRY[0]
            except KubeNotFound as e:
                log.warning("Canary objects cannot be listed; is the CRD installed (deploy/crd)?",
                            extra={"namespace": namespace or "*", "error": str(e)})
            except KubeError as e:
                hint = ("; a namespaced Role reaches only its namespace: list them in "
                        "kubernetes.canary_resources.namespaces" if namespace is None and "403" in str(e) else "")
                log.warning("Canary watch failed; retrying" + hint,
                            extra={"namespace": namespace or "*", "error": str(e)})
            await asyncio.sleep(delay)
            delay = min(RETRY[1], delay * 2)

    async def _passes(self) -> None:
        last_publish = -float("inf")
        while True:
            interval = self.controller.tick_interval()
            timeout = max(0.0, last_publish + interval - time.monotonic())
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except TimeoutError:
                pass
            self._changed.clear()
            try:
                await self.apply()
                if time.monotonic() - last_publish >= interval:  # status and Events: once per tick at most
                    last_publish = time.monotonic()
                    await self.publish()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Canary pass failed")

    # ------------------------------------------------------------------------------ the specs
    def _on_event(self, event: WatchEvent) -> None:
        meta = _meta(event.object)
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        if event.type == "DELETED":
            self.entries.pop(key, None)
            self._written.pop(key, None)
            self._seen.pop(key, None)
        else:
            self.entries[key] = self._entry(event.object, self.entries.get(key))
        self._changed.set()

    def _entry(self, obj: JSON, before: _Entry | None) -> _Entry:
        entry = _Entry(obj, None, None)
        if before is not None and before.same_spec == entry.same_spec:
            entry.config, entry.problem = before.config, before.problem  # an annotation or status change
            return entry
        try:
            entry.config = canary_config(obj, self._defaults)
        except ConfigError as e:
            entry.problem = "\n".join(e.problems)
        return entry

    async def file_reloaded(self, config: Config) -> None:
        """The config file changed (SIGHUP): its canaries and defaults, then every Canary read again."""
        self.file = config
        self._defaults = defaults_as_written(config.defaults)
        self.entries = {k: self._entry(e.obj, None) for k, e in self.entries.items()}
        await self.apply()

    def merged(self) -> Config:
        """The file's config with the valid Canaries added; the file wins a namespace/name both hold."""
        file_keys = {c.key for c in self.file.canaries}
        self._conflicts = {k for k, e in self.entries.items() if e.config is not None and k in file_keys}
        extra = tuple(e.config for k, e in sorted(self.entries.items())
                      if e.config is not None and k not in file_keys)
        return replace(self.file, canaries=self.file.canaries + extra)

    async def apply(self) -> None:
        async with self._lock:
            merged = self.merged()
            kept = await self._roll_back_gone(merged)
            if kept:  # their rollback failed: they stay canaries until it is written
                merged = replace(merged, canaries=merged.canaries + kept)
            if merged != self.controller.config:
                await self.controller.reload(merged)
                log.info("canaries reloaded", extra={"canaries": len(merged.canaries),
                                                     "from_objects": len(merged.canaries) - len(self.file.canaries)})

    async def _roll_back_gone(self, merged: Config) -> tuple[CanaryConfig, ...]:
        """Roll back each canary whose Canary object is gone while its rollout is active, before it stops
        being watched (no route is left with traffic on a canary nobody judges); those whose rollback
        failed."""
        keep = {c.key for c in merged.canaries}
        failed: list[CanaryConfig] = []
        for status in self.controller.canaries():
            namespace, name = status["namespace"], status["name"]
            config = self.controller.config.canary(namespace, name)
            if f"{namespace}/{name}" in keep or status.get("phase") not in ACTIVE or config is None:
                continue
            try:
                await self.controller.command(namespace, name, "rollback", trigger=Trigger.MANUAL,
                                              reason="its Canary object was deleted: rolled back first")
                log.warning("Canary deleted during a rollout: rolled back", extra={"canary": config.key})
            except (TransitionError, NotLeader):
                continue  # already stopped; or a follower, whose leader rolls it back
            except (ActuationError, CommandQueued) as e:
                log.warning("Canary deleted during a rollout, its rollback failed; kept until it is written",
                            extra={"canary": config.key, "error": str(e)})
                failed.append(config)
        return tuple(failed)

    # ------------------------------------------------------------------------------ the leader
    async def publish(self) -> None:
        """Apply pending actions, write the statuses that changed, record the Events of transitions."""
        if not self.leadership.is_leader:
            self._seen.clear()  # a new leader compares with what it sees then, never replays the past
            return
        await self._actions()
        statuses = {f"{s['namespace']}/{s['name']}": s for s in self.controller.canaries()}
        writes = []
        for key, entry in list(self.entries.items()):
            status = self._status(key, entry, statuses.get(key))
            if status is None:
                continue
            shown = self._written.get(key) or entry.obj.get("status") or {}
            if comparable(status) != comparable(shown):
                writes.append((key, status, merge_patch(shown, status)))
            if key in statuses and entry.problem is None and key not in self._conflicts:
                await self._events(key, entry, statuses[key])
        await self._write(writes)

    def _status(self, key: str, entry: _Entry, running: Mapping[str, Any] | None) -> dict[str, Any] | None:
        now = self.clock()
        shown = self._written.get(key) or entry.obj.get("status")
        if entry.problem is not None:
            return invalid_status(entry.problem, generation=entry.generation, now=now, previous=shown)
        if key in self._conflicts:
            return invalid_status("the config file holds a canary of this namespace and name; it is run from there",
                                  generation=entry.generation, now=now, reason="Conflict", previous=shown)
        if running is None:
            return None  # not running yet: the next pass
        return canary_status(running, generation=entry.generation, now=now, previous=shown)

    async def _write(self, writes: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> None:
        gate = asyncio.Semaphore(WRITE_CONCURRENCY)

        async def one(key: str, status: dict[str, Any], patch: dict[str, Any]) -> None:
            namespace, _, name = key.partition("/")
            async with gate:
                try:
                    await self.api.patch_status(namespace, name, patch)
                    self._written[key] = status
                except KubeError as e:
                    log.warning("Canary status not written", extra={"canary": key, "error": str(e)})

        await asyncio.gather(*(one(*w) for w in writes))

    async def _events(self, key: str, entry: _Entry, status: Mapping[str, Any]) -> None:
        before, self._seen[key] = self._seen.get(key), dict(status)
        if before is None and not entry.obj.get("status"):
            before = {"phase": "idle"}  # a new Canary: its first rollout is a transition too
        found = transitions(before, status)
        if not found:
            return
        meta = _meta(entry.obj)
        canary = ObjectRef(API_VERSION, KIND, str(meta.get("namespace")), str(meta.get("name")), meta.get("uid"))
        assert entry.config is not None
        deployment = ObjectRef("apps/v1", "Deployment", canary.namespace, entry.config.canary.deployment)
        for t in found:
            await self.recorder.record(canary, t)
            await self.recorder.record(deployment, t, related=canary)

    # ----------------------------------------------------------------------------- the verbs
    async def _actions(self) -> None:
        for key, entry in list(self.entries.items()):
            verb = (_meta(entry.obj).get("annotations") or {}).get(ACTION_ANNOTATION)
            if verb is None or entry.config is None or key in self._conflicts:
                continue
            rv = str(_meta(entry.obj).get("resourceVersion"))
            if self._acted.get(key) != (rv, verb) and await self._act(key, str(verb)):
                self._acted[key] = (rv, verb)
                await self._unannotate(key, str(verb))

    async def _act(self, key: str, verb: str) -> bool:
        """Apply one verb; True when it is done (or can never be): the annotation is then removed."""
        namespace, _, name = key.partition("/")
        if verb not in ACTIONS:
            log.warning("unknown canaryd.io/action; removed", extra={"canary": key, "action": verb,
                                                                     "allowed": ", ".join(ACTIONS)})
            return True
        try:
            await self.controller.command(namespace, name, verb, trigger=Trigger.MANUAL,
                                          reason=f"kubectl: {ACTION_ANNOTATION}={verb}")
        except (TransitionError, CommandQueued) as e:  # not possible now, already done, or queued
            log.info("canaryd.io/action taken", extra={"canary": key, "action": verb, "outcome": str(e)})
        except (ActuationError, NotLeader, UnknownCanary) as e:
            log.warning("canaryd.io/action not applied yet", extra={"canary": key, "action": verb, "error": str(e)})
            return False
        return True

    async def _unannotate(self, key: str, verb: str) -> None:
        namespace, _, name = key.partition("/")
        path = "/metadata/annotations/" + ACTION_ANNOTATION.replace("~", "~0").replace("/", "~1")
        try:  # only the verb applied: one written meanwhile stays, for the next pass
            await self.api.patch(namespace, name, [{"op": "test", "path": path, "value": verb},
                                                   {"op": "remove", "path": path}])
        except KubeConflict:
            pass
        except KubeError as e:
            log.warning("canaryd.io/action not removed", extra={"canary": key, "error": str(e)})
