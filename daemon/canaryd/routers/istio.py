"""Istio: the weights of one http route of a VirtualService (networking.istio.io v1, else v1beta1).

The route changed is the one whose `route[]` holds both the stable and the canary destination,
matched by `destination.subset` (the platform strategy's subsets "stable"/"canary") or, when no route matches by
subset, by `destination.host` (short name or FQDN). Header-match, user and region routes that send
everything to one side stay exactly as they were, wherever they sit in `spec.http`, except canaryd's
own match routes (named canaryd-*, see matches.py), which it adds first in `spec.http` during a rollout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from canaryd.kube import VIRTUAL_SERVICE
from canaryd.routers.base import (
    JSON,
    KubeRouter,
    UnusableRoute,
    WeightPair,
    choose,
    describe_missing,
    pair_in,
)
from canaryd.routers.matches import MatchSpec, istio_owned, istio_route, sync_ops


def _matches(dest: Any, backend: str, by: str) -> bool:
    d = dest.get("destination") if isinstance(dest, dict) else None
    if not isinstance(d, dict):
        return False
    if by == "subset":
        return d.get("subset") == backend
    host = str(d.get("host", ""))
    return host == backend or host.startswith(backend + ".")


def _weight(raw: Any, where: str) -> int:
    if raw is None:
        return 0  # Istio: a destination without weight among several gets none
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise UnusableRoute(f"{where}.weight is {raw!r}, not a non-negative integer")
    return raw


def find_istio_route(vs: Mapping[str, Any], stable: str, canary: str) -> WeightPair:
    """The weights to change in a VirtualService: pure, raises UnusableRoute saying what is missing."""
    http = (vs.get("spec") or {}).get("http")
    if not isinstance(http, list) or not http:
        raise UnusableRoute("has no spec.http routes")
    found: dict[str, list[str]] = {"stable": [], "canary": []}
    for by in ("subset", "host"):
        candidates = _candidates(http, stable, canary, by, found)
        if candidates:
            return _pick(http, candidates)
    return _missing(found, {"stable": stable, "canary": canary})


def _candidates(http: list[Any], stable: str, canary: str, by: str,
                found: dict[str, list[str]]) -> dict[int, tuple[int, int]]:
    """http route index → (stable, canary) destination indexes, for routes holding each exactly once;
    adds to `found` every route that holds either."""
    candidates: dict[int, tuple[int, int]] = {}
    for i, route in enumerate(http):
        dests = route.get("route") if isinstance(route, dict) else None
        if not isinstance(dests, list):
            continue
        s = [j for j, d in enumerate(dests) if _matches(d, stable, by)]
        c = [j for j, d in enumerate(dests) if _matches(d, canary, by)]
        for side, hits in (("stable", s), ("canary", c)):
            if hits and f"http[{i}]" not in found[side]:  # found by subset already
                found[side].append(f"http[{i}]")
        if len(s) == 1 and len(c) == 1 and s != c:
            candidates[i] = (s[0], c[0])
    return candidates


def _pick(http: list[Any], candidates: Mapping[int, tuple[int, int]]) -> WeightPair:
    unconditional = [i for i in candidates if not http[i].get("match")]
    i = choose(list(candidates), unconditional, "http", "http routes")
    s_j, c_j = candidates[i]
    return pair_in(http[i]["route"], s_j, c_j, pointer=f"/spec/http/{i}/route", where=f"spec.http[{i}]",
                   field="route", weight=_weight)


def _missing(found: Mapping[str, list[str]], backends: Mapping[str, str]) -> WeightPair:
    raise UnusableRoute(
        describe_missing(found, backends, "http route in spec.http", "destination.subset, else destination.host")
    )


class IstioRouter(KubeRouter):
    KIND = "VirtualService"
    RESOURCE = VIRTUAL_SERVICE
    VERSIONS = ("v1", "v1beta1")
    PRODUCT = "Istio"

    def locate(self, obj: Mapping[str, Any]) -> WeightPair:
        return find_istio_route(obj, self.stable_backend, self.canary_backend)

    def match_ops(self, obj: Mapping[str, Any], pair: WeightPair, matches: Sequence[MatchSpec]) -> list[JSON]:
        return sync_ops(obj, pair.canary_path, matches, istio_route, istio_owned)
