"""Kubernetes access: custom objects, deployments, leases. The one package that imports kubernetes_asyncio,
and only on first use (`lazy.py`): it costs ~0.6 s and ~30 MB, and a dry-run daemon never needs it.

Everything here speaks plain JSON dicts (the API's camelCase), never the client's model classes, and
raises only our own errors: `KubeNotFound`, `KubeConflict`, `KubeError`. Each names the object and the
verb, e.g. ``VirtualService orion/auth-service patch failed: 404 NotFound: ...``; no ApiException or
aiohttp error leaks out of this package.

Writes are optimistic. `read_modify_write` re-reads and retries when a write hits a conflict (409, or
a JSON-patch `test` that no longer holds, which the API server answers with 422).

Modules: `client` (KubeClient), `errors`, `resources` (resource types, WatchEvent), `patches`
(read-modify-write, image patches), `rollout` (a Deployment's rollout status), `watch`,
`leader_election`, `lazy` (the deferred import).
"""

from .client import KubeClient
from .errors import KubeConflict, KubeError, KubeNotFound, RolloutFailed, RolloutTimeout, map_error
from .patches import JSON_PATCH, MERGE_PATCH, container_images, image_patch, read_modify_write
from .resources import HTTP_ROUTE, JSON, TRAFFIC_SPLIT, VIRTUAL_SERVICE, CustomResource, WatchEvent
from .rollout import rollout_status

__all__ = [
    "HTTP_ROUTE",
    "JSON",
    "JSON_PATCH",
    "MERGE_PATCH",
    "TRAFFIC_SPLIT",
    "VIRTUAL_SERVICE",
    "CustomResource",
    "KubeClient",
    "KubeConflict",
    "KubeError",
    "KubeNotFound",
    "RolloutFailed",
    "RolloutTimeout",
    "WatchEvent",
    "container_images",
    "image_patch",
    "map_error",
    "read_modify_write",
    "rollout_status",
]
