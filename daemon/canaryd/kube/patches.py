"""Optimistic writes: JSON patches guarded by `test` ops, and the read-modify-write loop around them.

`read_modify_write` re-reads and retries when a write hits a conflict (409, or a JSON-patch `test`
that no longer holds, which the API server answers with 422).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from .errors import KubeConflict, KubeError
from .resources import JSON

log = logging.getLogger("canaryd.kube")

T = TypeVar("T")
P = TypeVar("P")
R = TypeVar("R")

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"


def has_test_op(patch: object) -> bool:
    return isinstance(patch, list) and any(isinstance(op, dict) and op.get("op") == "test" for op in patch)


async def read_modify_write(
    read: Callable[[], Awaitable[T]],
    compute_patch: Callable[[T], P],
    write: Callable[[P], Awaitable[R]],
    *,
    attempts: int = 5,
    backoff: float = 0.02,
) -> R:
    """Read, compute a change, write it; on KubeConflict re-read and try again, `attempts` times in all.

    `compute_patch` may raise to give up (e.g. the route no longer holds both destinations). The last
    KubeConflict is raised, with the attempt count in its message, when every attempt conflicted.
    """
    last: KubeConflict | None = None
    for attempt in range(attempts):
        current = await read()
        patch = compute_patch(current)
        try:
            return await write(patch)
        except KubeConflict as e:
            last = e
            log.info("conflict on attempt %d/%d, re-reading: %s", attempt + 1, attempts, e)
            await asyncio.sleep(backoff * attempt)  # the first retry is immediate
    assert last is not None, "attempts must be >= 1"
    raise KubeConflict(f"{last} (gave up after {attempts} attempts)", status=last.status, reason=last.reason)


def _containers(deployment: Mapping[str, Any]) -> list[Any]:
    return deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []


def container_images(deployment: Mapping[str, Any]) -> dict[str, str]:
    """Container name → image of a deployment's pod template (init containers excluded)."""
    containers = _containers(deployment)
    return {c["name"]: c.get("image", "") for c in containers if isinstance(c, dict) and "name" in c}


def image_patch(deployment: Mapping[str, Any], images: Mapping[str, str]) -> list[JSON]:
    """A JSON patch setting container images by name, each guarded by a `test` on the container's
    name at its index (so a reordered container list is a conflict, not a wrong image)."""
    containers = _containers(deployment)
    index = {c.get("name"): i for i, c in enumerate(containers) if isinstance(c, dict)}
    missing = [n for n in images if n not in index]
    if missing:
        known = ", ".join(str(n) for n in index) or "none"
        raise KubeError(f"Deployment {ns_name(deployment)} has no container named {', '.join(missing)} "
                        f"(containers: {known})", reason="Invalid")
    ops: list[JSON] = [{"op": "test", "path": "/metadata/resourceVersion",
                        "value": deployment["metadata"]["resourceVersion"]}]
    for name, image in images.items():
        base = f"/spec/template/spec/containers/{index[name]}"
        ops.append({"op": "test", "path": f"{base}/name", "value": name})
        ops.append({"op": "replace" if "image" in containers[index[name]] else "add",
                    "path": f"{base}/image", "value": image})
    return ops


def ns_name(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata", {})
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"
