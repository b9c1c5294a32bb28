"""Match routes canaryd manages: header routes to the canary, added while a rollout runs.

Each is a copy of the weighted route (its own matches, timeouts, rewrites...) whose matches also
require the configured headers, sending everything to the canary; canaryd puts them first in the
list (before the weighted route, and before any other route, so the header always reaches the canary).
They are canaryd's own by name: `canaryd-<name>` (an Istio http route's `name`, an HTTPRoute rule's
`name`); HTTPRoute rules also carry a RequestHeaderModifier setting `x-canaryd-route: <name>`, which
survives an API server that prunes the rule's `name` (Gateway API before v1.2). Every other route is
never touched: the patch removes and adds only canaryd's own entries, by index, after the weights.

SMI TrafficSplit has no match routes; its router has no `match_ops` and leaves them out.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

JSON = dict[str, Any]
PREFIX = "canaryd-"
MARKER_HEADER = "x-canaryd-route"


class MatchSpec(Protocol):
    """A match route as configured (config.model.MatchRoute): a name and (header, exact value) pairs."""

    @property
    def name(self) -> str: ...

    @property
    def headers(self) -> tuple[tuple[str, str], ...]: ...


def owned_name(name: object) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def _split(path: str) -> tuple[str, int, str, int]:
    """'/spec/http/3/route/1/weight' → ('/spec/http', 3, 'route', 1)."""
    parts = path.split("/")
    return "/".join(parts[:3]), int(parts[3]), parts[4], int(parts[5])


def sync_ops(obj: Mapping[str, Any], canary_path: str, matches: Sequence[MatchSpec],
             build: Callable[[Mapping[str, Any], Mapping[str, Any], MatchSpec], JSON],
             owned: Callable[[Any], bool]) -> list[JSON]:
    """The ops that make canaryd's own entries of the list holding the weighted route exactly `matches`,
    first in the list, in order. [] when they already are. Applied after the weight ops (whose indexes
    are those of `obj`): removals from the highest index down, then the additions at the front."""
    pointer, i, field, c = _split(canary_path)
    entries = _at(obj, pointer)
    weighted = entries[i]
    desired = [build(weighted, weighted[field][c], m) for m in matches]
    mine = [k for k, entry in enumerate(entries) if owned(entry)]
    if mine == list(range(len(desired))) and [entries[k] for k in mine] == desired:
        return []
    ops: list[JSON] = [{"op": "remove", "path": f"{pointer}/{k}"} for k in reversed(mine)]
    ops += [{"op": "add", "path": f"{pointer}/{k}", "value": d} for k, d in enumerate(desired)]
    return ops


def _at(obj: Mapping[str, Any], pointer: str) -> list[Any]:
    node: Any = obj
    for token in pointer.strip("/").split("/"):
        node = node[token]
    return node  # type: ignore[no-any-return]


def managed(obj: Mapping[str, Any], pointer: str, owned: Callable[[Any], bool], key: str) -> list[str]:
    """The names of canaryd's own entries in the list at `pointer` (for status and tests)."""
    try:
        entries = _at(obj, pointer)
    except (KeyError, TypeError):
        return []
    return [str(e.get(key, "")) for e in entries if owned(e)]


# ------------------------------------------------------------------------------------------- Istio
def istio_owned(route: Any) -> bool:
    return isinstance(route, dict) and owned_name(route.get("name"))


def istio_route(weighted: Mapping[str, Any], canary_dest: Mapping[str, Any], m: MatchSpec) -> JSON:
    headers = {h: {"exact": v} for h, v in m.headers}
    matches = weighted.get("match") or [{}]
    out: JSON = {"name": PREFIX + m.name,
                 "match": [{**copy.deepcopy(mm), "headers": {**copy.deepcopy(mm.get("headers") or {}), **headers}}
                           for mm in matches]}
    for k, v in weighted.items():
        if k not in ("name", "match", "route"):
            out[k] = copy.deepcopy(v)
    out["route"] = [{k: copy.deepcopy(v) for k, v in canary_dest.items() if k != "weight"}]
    return out


# ------------------------------------------------------------------------------------- Gateway API
def httproute_owned(rule: Any) -> bool:
    if not isinstance(rule, dict):
        return False
    if owned_name(rule.get("name")):
        return True
    for f in rule.get("filters") or ():
        mod = f.get("requestHeaderModifier") if isinstance(f, dict) else None
        if isinstance(mod, dict) and any(isinstance(h, dict) and h.get("name") == MARKER_HEADER
                                         for h in mod.get("set") or ()):
            return True
    return False


def httproute_rule(weighted: Mapping[str, Any], canary_ref: Mapping[str, Any], m: MatchSpec) -> JSON:
    headers = [{"type": "Exact", "name": h, "value": v} for h, v in m.headers]
    matches = weighted.get("matches") or [{"path": {"type": "PathPrefix", "value": "/"}}]
    out: JSON = {"name": PREFIX + m.name,
                 "matches": [{**copy.deepcopy(mm), "headers": [*copy.deepcopy(mm.get("headers") or []), *headers]}
                             for mm in matches]}
    for k, v in weighted.items():
        if k not in ("name", "matches", "backendRefs", "filters"):
            out[k] = copy.deepcopy(v)
    out["filters"] = _marked(weighted.get("filters") or [], m.name)
    out["backendRefs"] = [{**copy.deepcopy(dict(canary_ref)), "weight": 1}]
    return out


def _marked(filters: list[Any], name: str) -> list[Any]:
    """The weighted rule's filters with the ownership header set (in its RequestHeaderModifier if it has
    one: a rule may hold one filter of each type)."""
    out = copy.deepcopy(filters)
    marker = {"name": MARKER_HEADER, "value": name}
    for f in out:
        if isinstance(f, dict) and f.get("type") == "RequestHeaderModifier":
            mod = f.setdefault("requestHeaderModifier", {})
            mod["set"] = [*(mod.get("set") or []), marker]
            return out
    return [*out, {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [marker]}}]
