"""Canary objects (canaries.canaryd.io) and events.k8s.io/v1 Events, in plain JSON.

`CanaryApi` lists and watches Canaries in one namespace or in every one (list, then watch from the
list's resourceVersion; after 410 Gone it lists again, with DELETED for what disappeared), writes their
status subresource, removes an applied action annotation, and creates and patches Events.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from typing import Any, TypeVar

from .client import KubeClient
from .errors import client_errors, map_error
from .lazy import kubernetes
from .patches import JSON_PATCH, MERGE_PATCH, has_test_op
from .resources import JSON, CustomResource, WatchEvent
from .watch import _WatchState, stream_events

log = logging.getLogger("canaryd.kube")

CANARY = CustomResource("canaryd.io", "v1alpha1", "canaries", "Canary")
T = TypeVar("T")


class CanaryApi:
    """Canary objects and Events through a KubeClient's connection."""

    def __init__(self, kube: KubeClient) -> None:
        api = kube._api  # noqa: SLF001 - the same package: one connection for every call
        self._custom = kubernetes().client.CustomObjectsApi(api)
        self._events = kubernetes().client.EventsV1Api(api)
        self._plain = api.sanitize_for_serialization

    async def _call(self, what: str, verb: str, coro: Awaitable[T], *, json_patch_test: bool = False) -> T:
        try:
            return await coro
        except client_errors() as e:
            raise map_error(e, what, verb, json_patch_test=json_patch_test) from e

    # ------------------------------------------------------------------------------ canaries
    def _list_func(self, namespace: str | None) -> tuple[Any, tuple[Any, ...]]:
        r = CANARY
        if namespace is None:
            return self._custom.list_cluster_custom_object, (r.group, r.version, r.plural)
        return self._custom.list_namespaced_custom_object, (r.group, r.version, namespace, r.plural)

    async def list(self, namespace: str | None) -> tuple[list[JSON], str]:
        """The Canaries of `namespace` (None: every namespace) and the list's resourceVersion."""
        func, args = self._list_func(namespace)
        listing = await self._call(f"Canary {namespace or '*'}/*", "list", func(*args))
        return list(listing.get("items") or []), str((listing.get("metadata") or {}).get("resourceVersion") or "")

    async def watch(self, namespace: str | None, *, timeout_seconds: int = 300) -> AsyncIterator[WatchEvent]:
        """SYNC for each listed Canary, then ADDED/MODIFIED/DELETED, forever (see kube/watch.py)."""
        state = _WatchState(f"Canary {namespace or '*'}/*", namespace or "")
        while True:
            if state.rv is None:
                items, rv = await self.list(namespace)
                for event in _relisted(state, items, rv):
                    yield event
            async with contextlib.aclosing(self._one_request(state, namespace, timeout_seconds)) as request:
                async for event in request:
                    yield event

    async def _one_request(self, state: _WatchState, namespace: str | None,
                           timeout_seconds: int) -> AsyncIterator[WatchEvent]:
        func, args = self._list_func(namespace)
        w = kubernetes().watch.Watch(return_type="object")
        stream = w.stream(func, *args, resource_version=state.rv, timeout_seconds=timeout_seconds)
        async for seen in stream_events(w, stream, state, lambda event: _seen(state, event)):
            yield seen

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> JSON:
        r = CANARY
        return await self._call(f"Canary {namespace}/{name}", "patch status",
                                self._custom.patch_namespaced_custom_object_status(
                                    r.group, r.version, namespace, r.plural, name, {"status": dict(status)},
                                    _content_type=MERGE_PATCH))

    async def patch(self, namespace: str, name: str, patch: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> JSON:
        """A list is a JSON patch (a failed `test` → KubeConflict), a dict a merge patch."""
        r = CANARY
        is_json_patch = not isinstance(patch, Mapping)
        body: Any = [dict(op) for op in patch] if is_json_patch else dict(patch)
        return await self._call(f"Canary {namespace}/{name}", "patch",
                                self._custom.patch_namespaced_custom_object(
                                    r.group, r.version, namespace, r.plural, name, body,
                                    _content_type=JSON_PATCH if is_json_patch else MERGE_PATCH),
                                json_patch_test=has_test_op(body))

    # -------------------------------------------------------------------------------- events
    async def create_event(self, namespace: str, body: Mapping[str, Any]) -> JSON:
        name = str(body.get("metadata", {}).get("name", ""))
        made = await self._call(f"Event {namespace}/{name}", "create",
                                self._events.create_namespaced_event(namespace, dict(body)))
        return self._plain(made)

    async def patch_event(self, namespace: str, name: str, patch: Mapping[str, Any]) -> JSON:
        made = await self._call(f"Event {namespace}/{name}", "patch",
                                self._events.patch_namespaced_event(name, namespace, dict(patch),
                                                                    _content_type=MERGE_PATCH))
        return self._plain(made)


def _key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def _relisted(state: _WatchState, items: list[JSON], rv: str) -> list[WatchEvent]:
    """As _WatchState.relisted, keyed by namespace/name (a watch may span namespaces)."""
    listed = {_key(i): i for i in items}
    events = []
    for gone in sorted(state.known - listed.keys()):
        namespace, _, name = gone.partition("/")
        events.append(WatchEvent("DELETED", {"metadata": {"name": name, "namespace": namespace}}))
    events += [WatchEvent("SYNC", obj) for obj in listed.values()]
    state.known, state.rv = set(listed), rv or None
    return events


def _seen(state: _WatchState, event: Mapping[str, Any]) -> WatchEvent | None:
    obj = event.get("raw_object") or event.get("object") or {}
    if not isinstance(obj, Mapping):
        return None
    state.rv = str((obj.get("metadata") or {}).get("resourceVersion") or state.rv)
    if event["type"] == "DELETED":
        state.known.discard(_key(obj))
    elif event["type"] in ("ADDED", "MODIFIED"):
        state.known.add(_key(obj))
    else:
        return None
    return WatchEvent(str(event["type"]), dict(obj))
