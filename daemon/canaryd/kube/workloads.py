"""Jobs (gates run as Jobs) and pods (the canary's restarts), beside KubeClient's deployments.

Functions of a KubeClient rather than methods, so that client.py keeps to deployments, custom objects
and leases; they speak plain JSON and raise only canaryd.kube.errors, like the client.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .client import KubeClient
from .lazy import kubernetes
from .resources import JSON


async def create_job(kube: KubeClient, namespace: str, body: Mapping[str, Any]) -> JSON:
    name = str((body.get("metadata") or {}).get("name") or (body.get("metadata") or {}).get("generateName", ""))
    api = kubernetes().client.BatchV1Api(kube._api)
    model = await kube._call(f"Job {namespace}/{name}", "create", api.create_namespaced_job(namespace, dict(body)))
    return kube._plain(model)


async def get_job(kube: KubeClient, namespace: str, name: str) -> JSON:
    api = kubernetes().client.BatchV1Api(kube._api)
    return kube._plain(await kube._call(f"Job {namespace}/{name}", "get", api.read_namespaced_job(name, namespace)))


async def list_pods(kube: KubeClient, namespace: str, selector: str) -> list[JSON]:
    """The pods matching a label selector (`app=x,track=canary`)."""
    api = kubernetes().client.CoreV1Api(kube._api)
    listing = await kube._call(f"Pod {namespace}/*", "list",
                               api.list_namespaced_pod(namespace, label_selector=selector))
    return list(kube._plain(listing).get("items") or [])


def selector_of(deployment: Mapping[str, Any]) -> str | None:
    """A Deployment's spec.selector.matchLabels as a label selector; None when it has none."""
    labels = (((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {})
    if not labels:
        return None
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
