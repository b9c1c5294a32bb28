"""The resource types canaryd reads and writes, in plain JSON dicts (the API's camelCase)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

JSON = dict[str, Any]


@dataclass(frozen=True)
class CustomResource:
    """A custom resource type at one API version."""

    group: str
    version: str
    plural: str
    kind: str

    def at(self, version: str) -> CustomResource:
        return replace(self, version=version)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


VIRTUAL_SERVICE = CustomResource("networking.istio.io", "v1", "virtualservices", "VirtualService")
TRAFFIC_SPLIT = CustomResource("split.smi-spec.io", "v1alpha2", "trafficsplits", "TrafficSplit")
HTTP_ROUTE = CustomResource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")


@dataclass(frozen=True)
class WatchEvent:
    """One change seen by a watch. `type` is ADDED, MODIFIED or DELETED as the API server sends them,
    or SYNC for an object listed when the watch (re)starts: after a 410 Gone the watch re-lists, and
    the listing may hide changes, so consumers compare SYNC objects with what they knew."""

    type: str
    object: JSON

    @property
    def name(self) -> str:
        return str(self.object.get("metadata", {}).get("name", ""))
