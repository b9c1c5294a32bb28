"""Watching deployments: list, then watch from the list's resourceVersion, re-listing after 410 Gone."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import map_error
from .lazy import kubernetes
from .resources import JSON, WatchEvent

log = logging.getLogger("canaryd.kube")

ListDeployments = Callable[..., Awaitable[tuple[list[JSON], str]]]


@dataclass
class _WatchState:
    """What the watch knows between requests: the names that exist and where to resume."""

    what: str  # "Deployment orion/*", for errors and logs
    namespace: str
    known: set[str] = field(default_factory=set)
    rv: str | None = None  # None: (re-)list before watching

    def relisted(self, items: list[JSON], rv: str) -> list[WatchEvent]:
        """DELETED for what disappeared since the last listing, then SYNC for every listed object."""
        listed = {str(i["metadata"]["name"]): i for i in items}
        events = [WatchEvent("DELETED", {"metadata": {"name": gone, "namespace": self.namespace}})
                  for gone in sorted(self.known - listed.keys())]
        events += [WatchEvent("SYNC", obj) for obj in listed.values()]
        self.known, self.rv = set(listed), rv
        return events

    def seen(self, event: Mapping[str, Any]) -> WatchEvent | None:
        """Record a streamed event; None for one consumers do not see (BOOKMARK)."""
        obj = event.get("raw_object") or {}
        self.rv = str(obj.get("metadata", {}).get("resourceVersion") or self.rv)
        if event["type"] == "DELETED":
            self.known.discard(str(obj.get("metadata", {}).get("name")))
        elif event["type"] in ("ADDED", "MODIFIED"):
            self.known.add(str(obj.get("metadata", {}).get("name")))
        else:
            return None
        return WatchEvent(str(event["type"]), obj)


async def watch_deployments(
    list_deployments: ListDeployments,
    list_func: Callable[..., Any],
    namespace: str,
    *,
    name: str | None = None,
    timeout_seconds: int = 300,
) -> AsyncIterator[WatchEvent]:
    """See `KubeClient.watch_deployments`. `list_deployments(namespace, name=...)` lists (items, rv);
    `list_func` is the client's list call that kubernetes_asyncio's Watch streams."""
    state = _WatchState(f"Deployment {namespace}/{name or '*'}", namespace)
    kwargs: dict[str, Any] = {"timeout_seconds": timeout_seconds}
    if name:
        kwargs["field_selector"] = f"metadata.name={name}"
    while True:
        if state.rv is None:
            for event in state.relisted(*await list_deployments(namespace, name=name)):
                yield event
        # aclosing: closing this generator closes the request's watch now, not when garbage-collected
        async with contextlib.aclosing(_one_request(state, list_func, namespace, kwargs)) as request:
            async for event in request:
                yield event


async def _one_request(state: _WatchState, list_func: Callable[..., Any], namespace: str,
                       kwargs: dict[str, Any]) -> AsyncIterator[WatchEvent]:
    """The events of one watch request, from `state.rv` until the server ends it or answers 410 Gone."""
    w = kubernetes().watch.Watch()
    stream = w.stream(list_func, namespace, resource_version=state.rv, **kwargs)
    async for seen in stream_events(w, stream, state, state.seen):
        yield seen


async def stream_events(w: Any, stream: Any, state: _WatchState,
                        seen: Callable[[Mapping[str, Any]], WatchEvent | None]) -> AsyncIterator[WatchEvent]:
    """Every event `seen` keeps from one watch request's `stream`; closes the watch `w` at the end."""
    started, events = asyncio.get_running_loop().time(), 0
    try:
        while True:
            event = await _next_event(stream, state)
            if event is None:
                # the server ended this watch request: resume from rv, not in a tight loop
                # (after 410 Gone rv is None and the re-list starts at once)
                if state.rv is not None and not events and asyncio.get_running_loop().time() - started < 1.0:
                    await asyncio.sleep(0.5)
                return
            events += 1
            kept = seen(event)
            if kept is not None:
                yield kept
    finally:
        await w.close()


async def _next_event(stream: Any, state: _WatchState) -> Mapping[str, Any] | None:
    """The next streamed event; None when the request has ended (on 410 Gone, with `state.rv` cleared)."""
    try:
        event: Mapping[str, Any] = await stream.__anext__()
    except StopAsyncIteration:
        return None
    except kubernetes().ApiException as e:
        if e.status == 410:
            log.info("%s watch: resourceVersion %s expired, re-listing", state.what, state.rv)
            state.rv = None
            return None
        raise map_error(e, state.what, "watch") from e
    except Exception as e:  # noqa: BLE001 - includes the client's "malformed JSON" Exception
        raise map_error(e, state.what, "watch") from e
    return event
