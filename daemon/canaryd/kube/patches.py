"""Optimistic writes: JSON patches guarded by `test` ops, and the read-modify-write loop around them.

`read_modify_write` re-reads and retries when a write hits a conflict (409, or a JSON-patch `test`
that no longer holds, which the API server answers with 422).
"""

from __future__ import annotations

import asyncio
import copy
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
    on_conflict: Callable[[], None] | None = None,
) -> R:
    """Read, compute a change, write it; on KubeConflict re-read and try again, `attempts` times in all.

    `compute_patch` may raise to give up (e.g. the route no longer holds both destinations). The last
    KubeConflict is raised, with the attempt count in its message, when every attempt conflicted.
    `on_conflict` is called once per conflict (another writer changed the object between read and write).
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
            if on_conflict is not None:
                on_conflict()
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


def _template(deployment: Mapping[str, Any]) -> JSON:
    template = deployment.get("spec", {}).get("template")
    return template if isinstance(template, dict) else {}


def promoted_template(stable: Mapping[str, Any], canary: Mapping[str, Any]) -> JSON:
    """Stable's pod template after a promotion: the canary's whole template (containers, env, resources,
    volumes, annotations, ...), except that stable keeps every pod label it has. Those carry its
    Deployment's selector and what routes to it (an Istio subset's `version: stable`, say); a label
    only the canary has is added."""
    template = copy.deepcopy(_template(canary))
    stable_labels = (_template(stable).get("metadata") or {}).get("labels") or {}
    meta = template.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), **stable_labels}
    return template


def template_patch(stable: Mapping[str, Any], canary: Mapping[str, Any]) -> list[JSON]:
    """A JSON patch giving stable the canary's pod template (see `promoted_template`): one op per value
    that differs (an image is `replace .../containers/0/image`), guarded by stable's resourceVersion."""
    ops: list[JSON] = [{"op": "test", "path": "/metadata/resourceVersion",
                        "value": stable["metadata"]["resourceVersion"]}]
    if not isinstance((stable.get("spec") or {}).get("template"), dict):
        return [*ops, {"op": "add", "path": "/spec/template", "value": promoted_template(stable, canary)}]
    _diff("/spec/template", _template(stable), promoted_template(stable, canary), ops)
    return ops


def _diff(path: str, old: Any, new: Any, ops: list[JSON]) -> None:
    """RFC 6902 ops turning `old` into `new`: dicts key by key, equal-length lists item by item."""
    if isinstance(old, dict) and isinstance(new, dict):
        ops.extend({"op": "remove", "path": f"{path}/{_escape(k)}"} for k in old if k not in new)
        for k, v in new.items():
            if k not in old:
                ops.append({"op": "add", "path": f"{path}/{_escape(k)}", "value": v})
            elif old[k] != v:
                _diff(f"{path}/{_escape(k)}", old[k], v, ops)
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            if a != b:
                _diff(f"{path}/{i}", a, b, ops)
    else:
        ops.append({"op": "replace", "path": path, "value": new})


def _escape(key: str) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


def ns_name(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata", {})
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"
