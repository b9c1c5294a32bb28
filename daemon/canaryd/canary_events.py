"""Kubernetes Events (events.k8s.io/v1) for Canary objects and their canary Deployments.

Rate-limited the way kubelet's recorder is: an Event identical to one sent for the same object (same
reason and note) within `SPAM_WINDOW` is not sent again, only counted; once the window has passed it
is sent as a patch of the first Event's `series` (count, lastObservedTime), or created anew when that
Event is gone. Failures are logged and never stop a rollout.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from .canary_status import Transition
from .kube import KubeError, KubeNotFound

log = logging.getLogger("canaryd.events")

SPAM_WINDOW = 60.0  # seconds: at most one identical event per object per window
CACHE_SIZE = 4096  # remembered (object, reason, note) keys, least recently used first out, as kubelet's
CONTROLLER = "canaryd.io/canaryd"


class EventsApi(Protocol):
    def create_event(self, namespace: str, body: Mapping[str, Any]) -> Awaitable[Any]: ...
    def patch_event(self, namespace: str, name: str, patch: Mapping[str, Any]) -> Awaitable[Any]: ...


@dataclass(frozen=True)
class ObjectRef:
    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str | None = None

    def json(self) -> dict[str, Any]:
        out = {"apiVersion": self.api_version, "kind": self.kind, "namespace": self.namespace, "name": self.name}
        return out | ({"uid": self.uid} if self.uid else {})


@dataclass
class _Sent:
    name: str | None  # the Event's name; None until a create succeeded
    count: int = 1
    last_sent: float = 0.0
    unsent: int = 0  # occurrences within the window, folded into the next write


def _micro_time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def instance_name() -> str:
    """This replica, as reportingInstance: the pod's name (its hostname) in a cluster."""
    return os.environ.get("POD_NAME") or socket.gethostname() or "canaryd"


@dataclass
class EventRecorder:
    api: EventsApi
    clock: Callable[[], float] = time.time
    instance: str = field(default_factory=instance_name)
    _sent: OrderedDict[tuple[Any, ...], _Sent] = field(default_factory=OrderedDict)

    async def record(self, regarding: ObjectRef, event: Transition, related: ObjectRef | None = None) -> bool:
        """Send one Event, or count it when an identical one went out within the window. True if sent."""
        key = (regarding.kind, regarding.namespace, regarding.name, event.reason, event.type, event.note)
        now = self.clock()
        sent = self._sent.get(key)
        if sent is not None:
            self._sent.move_to_end(key)
            if now - sent.last_sent < SPAM_WINDOW:
                sent.unsent += 1
                return False
        try:
            if sent is not None and sent.name is not None:
                try:
                    await self._again(regarding, sent, now)
                    return True
                except KubeNotFound:
                    pass  # the Event expired (after an hour, by default): a new one
            name = await self._create(regarding, event, related, now)
            self._remember(key, _Sent(name, last_sent=now))
        except KubeError as e:
            log.warning("event not recorded", extra={"regarding": f"{regarding.kind} {regarding.namespace}/"
                                                                  f"{regarding.name}", "reason": event.reason,
                                                     "error": str(e)})
            return False
        return True

    def _remember(self, key: tuple[Any, ...], sent: _Sent) -> None:
        self._sent[key] = sent
        self._sent.move_to_end(key)
        while len(self._sent) > CACHE_SIZE:
            self._sent.popitem(last=False)

    async def _again(self, regarding: ObjectRef, sent: _Sent, now: float) -> None:
        assert sent.name is not None
        sent.count += 1 + sent.unsent
        sent.unsent, sent.last_sent = 0, now
        patch = {"series": {"count": sent.count, "lastObservedTime": _micro_time(now)}}
        await self.api.patch_event(regarding.namespace, sent.name, patch)

    async def _create(self, regarding: ObjectRef, event: Transition, related: ObjectRef | None, now: float) -> str:
        name = f"{regarding.name}.{time.time_ns():x}"[:253]
        body: dict[str, Any] = {
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": name, "namespace": regarding.namespace},
            "eventTime": _micro_time(now), "reportingController": CONTROLLER,
            "reportingInstance": self.instance[:128], "action": event.action, "reason": event.reason,
            "type": event.type, "note": event.note, "regarding": regarding.json(),
        }
        if related is not None:
            body["related"] = related.json()
        await self.api.create_event(regarding.namespace, body)
        return name
