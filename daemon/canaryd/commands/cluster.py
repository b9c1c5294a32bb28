"""What the cluster-facing commands share: naming the canary's objects the platform strategy's way, and a client.

`SERVICE` alone is enough on a platform that follows the platform strategy: Deployments `<service>-stable` and
`<service>-canary`, a VirtualService or HTTPRoute named `<service>` (a TrafficSplit `<service>-split`),
Istio subsets `stable`/`canary`, SMI and Gateway API services `<service>-stable`/`<service>-canary`.
Every name can be overridden, or taken from a config file's canary with `--config`.

No cluster to talk to (no kubeconfig, or no answer from the API server) is one line and exit 2, as a
usage or config error: the command changed nothing, and pointing it at the right cluster fixes it.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from ..config import ArmConfig, CanaryConfig, Config, Mesh, load_config, parse_config
from ..kube import KubeClient, KubeError
from ..kube.client import KUBECONFIG_HINT

MESHES = tuple(m.value for m in Mesh)


def add_cluster_args(p: argparse.ArgumentParser, *, mesh: bool = True) -> None:
    p.add_argument("service", help="the service (canary) name, e.g. auth-service")
    p.add_argument("--namespace", "-n", default="orion", help="Kubernetes namespace (default orion)")
    if mesh:
        p.add_argument("--mesh", choices=MESHES, default=None, help="istio (default), linkerd or gateway-api")
    p.add_argument("--route", help="the VirtualService / TrafficSplit / HTTPRoute name "
                                   "(default: SERVICE, or SERVICE-split for linkerd)")
    p.add_argument("--stable-deployment", help="default SERVICE-stable")
    p.add_argument("--canary-deployment", help="default SERVICE-canary")
    p.add_argument("--config", "-c", metavar="FILE", help="take the canary's definition from this config")
    p.add_argument("--kubeconfig", help="kubeconfig path (default: in-cluster, else $KUBECONFIG, else ~/.kube/config)")


# KubeError reasons that mean there is no cluster to talk to, rather than a request that failed.
_NO_CLUSTER = frozenset({"Config", "Unreachable", "Timeout"})


async def connect_cluster(config: Config) -> KubeClient:
    """The cluster's client: `kubernetes.kubeconfig` (--kubeconfig), else in-cluster, else the default.
    Raises KubeError (reason "Config") with one line naming what is missing."""
    return await KubeClient.connect(config.kubernetes.kubeconfig)


def no_cluster(e: BaseException) -> str | None:
    """The line to print when `e` says canaryd has no cluster to talk to; None for any other error."""
    if not isinstance(e, KubeError) or e.reason not in _NO_CLUSTER:
        return None
    if e.reason == "Config":
        return str(e)  # already names what is missing and how to point canaryd at a kubeconfig
    return f"cannot reach the cluster: {e}; check that it is up, or {KUBECONFIG_HINT}"


def canary_from_args(args: argparse.Namespace, base: dict | None = None) -> tuple[Config, CanaryConfig]:
    """The canary the command acts on, and a config around it (for the daemon's machinery)."""
    if getattr(args, "config", None):
        config = load_config(args.config)
        canary = config.canary(args.namespace, args.service)
        if canary is None:
            known = ", ".join(c.key for c in config.canaries) or "none"
            raise ValueError(f"{args.config}: no canary {args.namespace}/{args.service}; configured: {known}")
    else:
        mesh = getattr(args, "mesh", None) or "istio"
        service = args.service
        route = args.route or (f"{service}-split" if mesh == "linkerd" else service)
        data = {
            "kubernetes": {"enabled": True},
            "defaults": {"mesh": mesh, **(base or {})},
            "canaries": [{
                "name": service, "namespace": args.namespace, "route": route,
                "stable": {"deployment": args.stable_deployment or f"{service}-stable",
                           "selector": f'job="{service}-stable"'},
                "canary": {"deployment": args.canary_deployment or f"{service}-canary",
                           "selector": f'job="{service}-canary"'},
            }],
        }
        config = parse_config(data, "command line")
        canary = config.canaries[0]
    if args.kubeconfig:
        config = replace(config, kubernetes=replace(config.kubernetes, kubeconfig=args.kubeconfig))
    if getattr(args, "mesh", None) and args.config:
        settings = replace(canary.settings, mesh=Mesh(args.mesh))
        canary = replace(canary, settings=settings, stable=ArmConfig(canary.stable.deployment, canary.stable.selector),
                         canary=ArmConfig(canary.canary.deployment, canary.canary.selector))
    return config, canary
