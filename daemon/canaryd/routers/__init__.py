"""Traffic routers behind one small interface (`Router`: read, write), one module per mesh.

`ROUTERS` maps a mesh name to its class; `make_router` builds one. An unknown mesh is an error,
never a fallback.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from canaryd.kube import KubeClient
from canaryd.routers.base import Router, RouterError, RouteState
from canaryd.routers.dryrun import DryRunRouter
from canaryd.routers.gateway import GatewayRouter
from canaryd.routers.istio import IstioRouter
from canaryd.routers.smi import SmiRouter

ROUTERS: Mapping[str, type[Router]] = MappingProxyType(
    {
        "istio": IstioRouter,
        "linkerd": SmiRouter,
        "gateway-api": GatewayRouter,
        "dry-run": DryRunRouter,
    }
)


def make_router(
    mesh: str,
    *,
    kube: KubeClient | None,
    namespace: str,
    route: str,
    stable_backend: str,
    canary_backend: str,
    **options: Any,
) -> Router:
    """The router for `mesh` ("istio", "linkerd", "gateway-api" or "dry-run"; a Mesh enum works too)."""
    key = getattr(mesh, "value", mesh)
    cls = ROUTERS.get(key)
    if cls is None:
        raise RouterError(f"unknown mesh {mesh!r}; expected one of: {', '.join(ROUTERS)}")
    return cls(  # type: ignore[call-arg]
        kube=kube, namespace=namespace, route=route, stable_backend=stable_backend,
        canary_backend=canary_backend, **options,
    )


__all__ = [
    "ROUTERS",
    "DryRunRouter",
    "GatewayRouter",
    "IstioRouter",
    "RouteState",
    "Router",
    "RouterError",
    "SmiRouter",
    "make_router",
]
