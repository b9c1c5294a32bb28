"""Gateway API: the backendRefs of one HTTPRoute rule (gateway.networking.k8s.io v1, else v1beta1).

This is how Linkerd 2.13+ (and most meshes and gateways) split traffic now that SMI is archived.
The rule changed is the one whose `backendRefs` hold both the stable and the canary Service. Weights
are shares in 0..1,000,000; a missing weight is 1, as the spec says. A write keeps the rule's total
(weights in the thousands stay in the thousands). During a rollout canaryd's own header-match rules
(matches.py) come first in `spec.rules`; no other rule is changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from canaryd.kube import HTTP_ROUTE
from canaryd.routers.base import (
    JSON,
    KubeRouter,
    UnusableRoute,
    WeightPair,
    choose,
    describe_missing,
    pair_in,
)
from canaryd.routers.matches import MatchSpec, httproute_owned, httproute_rule, sync_ops

MAX_WEIGHT = 1_000_000


def _is_service(ref: Any, name: str, namespace: str) -> bool:
    return (
        isinstance(ref, dict)
        and ref.get("name") == name
        and ref.get("kind", "Service") == "Service"
        and ref.get("group", "") in ("", "core")
        and ref.get("namespace", namespace) == namespace
    )


def _weight(raw: Any, where: str) -> int:
    if raw is None:
        return 1  # the spec's default
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw <= MAX_WEIGHT:
        raise UnusableRoute(f"{where}.weight is {raw!r}, not an integer in 0..{MAX_WEIGHT}")
    return raw


def find_httproute_rule(route: Mapping[str, Any], stable: str, canary: str) -> WeightPair:
    """The stable and canary backendRefs of an HTTPRoute: pure, raises UnusableRoute."""
    namespace = str((route.get("metadata") or {}).get("namespace", ""))
    rules = (route.get("spec") or {}).get("rules")
    if not isinstance(rules, list) or not rules:
        raise UnusableRoute("has no spec.rules")
    found: dict[str, list[str]] = {"stable": [], "canary": []}
    candidates = _candidates(rules, stable, canary, namespace, found)
    if not candidates:
        raise UnusableRoute(describe_missing(found, {"stable": stable, "canary": canary},
                                             "rule in spec.rules", "backendRefs[].name of kind Service"))
    unconditional = [i for i in candidates if not rules[i].get("matches")]
    i = choose(list(candidates), unconditional, "rules", "rules")
    s_j, c_j = candidates[i]
    return pair_in(rules[i]["backendRefs"], s_j, c_j, pointer=f"/spec/rules/{i}/backendRefs",
                   where=f"spec.rules[{i}]", field="backendRefs", weight=_weight, max_weight=MAX_WEIGHT)


def _candidates(rules: list[Any], stable: str, canary: str, namespace: str,
                found: dict[str, list[str]]) -> dict[int, tuple[int, int]]:
    """rule index → (stable, canary) backendRef indexes, for rules holding each exactly once; adds to
    `found` every rule that holds either."""
    candidates: dict[int, tuple[int, int]] = {}
    for i, rule in enumerate(rules):
        refs = rule.get("backendRefs") if isinstance(rule, dict) else None
        if not isinstance(refs, list):
            continue
        s = [j for j, r in enumerate(refs) if _is_service(r, stable, namespace)]
        c = [j for j, r in enumerate(refs) if _is_service(r, canary, namespace)]
        for side, hits in (("stable", s), ("canary", c)):
            if hits:
                found[side].append(f"rules[{i}]")
        if len(s) == 1 and len(c) == 1:
            candidates[i] = (s[0], c[0])
    return candidates


class GatewayRouter(KubeRouter):
    KIND = "HTTPRoute"
    RESOURCE = HTTP_ROUTE
    VERSIONS = ("v1", "v1beta1")
    PRODUCT = "the Gateway API (its CRDs)"

    def locate(self, obj: Mapping[str, Any]) -> WeightPair:
        return find_httproute_rule(obj, self.stable_backend, self.canary_backend)

    def match_ops(self, obj: Mapping[str, Any], pair: WeightPair, matches: Sequence[MatchSpec]) -> list[JSON]:
        return sync_ops(obj, pair.canary_path, matches, httproute_rule, httproute_owned)
