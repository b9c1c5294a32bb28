"""The Router interface, the weight arithmetic shared by every mesh, and the Kubernetes-backed base.

A router reads and writes one route object: the canary's share of traffic, in percent, and canaryd's
state annotation (`canaryd.io/state`, JSON). `write` sets both in ONE request, so a daemon killed
between two writes never leaves weights and state out of step.

The pure parts are functions, testable without HTTP:
- each mesh's module finds the two weights (`WeightPair`) in its object;
- `to_percent` / `split_total` convert between percent and the object's own scale (SMI's 950/50,
  HTTPRoute's thousands), keeping the scale the object already uses;
- `weight_patch` builds the JSON patch: `test` ops on resourceVersion and on the old weights, the two
  new weights, and the annotation. Nothing else in the object is touched.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from canaryd.kube import CustomResource, KubeClient, KubeConflict, KubeNotFound, read_modify_write
from canaryd.routers.matches import MatchSpec

log = logging.getLogger(__name__)

JSON = dict[str, Any]
STATE_ANNOTATION = "canaryd.io/state"
WRITE_ATTEMPTS = 5
StateGuard = Callable[[Mapping[str, Any] | None], None]


class RouterError(Exception):
    """The route object cannot be used: missing, without both destinations, ambiguous, or every write
    attempt conflicted. The message names the object (`obj`) and what is missing."""

    def __init__(self, message: str, *, obj: str = "") -> None:
        super().__init__(message)
        self.obj = obj


@dataclass(frozen=True)
class RouteState:
    """What a route says now. Weights are percent (0-100, summing to 100) of the stable+canary pair."""

    canary_weight: int
    stable_weight: int
    state: Mapping[str, Any] | None  # the decoded canaryd.io/state annotation
    resource_version: str


class Router(Protocol):
    async def read(self) -> RouteState: ...

    async def write(self, canary_percent: int, state: Mapping[str, Any] | None = None, *,
                    guard: StateGuard | None = None, matches: Sequence[MatchSpec] | None = None) -> RouteState:
        """Set the canary's percent (stable gets the rest) and, unless None, the state annotation,
        in one request. Returns what the object says after the write. `guard`, if given, sees the
        state annotation the write is computed from and may raise to refuse the write. `matches`,
        unless None, are the match routes canaryd's own routes become (routers/matches.py) in the
        same request; routers without match routes (SMI) ignore them."""
        ...


@dataclass(frozen=True)
class WeightPair:
    """Where the stable and canary weights sit in a route object, and what they hold."""

    where: str  # for messages: "spec.http[1]"
    stable_path: str  # JSON pointer to the weight field
    canary_path: str
    stable_raw: Any  # the JSON value there now; None when the field is absent
    canary_raw: Any
    stable: int  # the weights in the object's own units
    canary: int
    encode: Callable[[int], Any] = int  # units → the JSON value to write
    max_weight: int | None = None  # the API's bound on one weight


def pair_in(entries: Sequence[Mapping[str, Any]], s_j: int, c_j: int, *, pointer: str, where: str, field: str,
            weight: Callable[[Any, str], int], max_weight: int | None = None) -> WeightPair:
    """The stable (`entries[s_j]`) and canary (`entries[c_j]`) weights of one route: `pointer` is the JSON
    pointer of the list, `where` names the route and `field` the list in messages."""
    s_raw, c_raw = entries[s_j].get("weight"), entries[c_j].get("weight")
    return WeightPair(
        where=where,
        stable_path=f"{pointer}/{s_j}/weight",
        canary_path=f"{pointer}/{c_j}/weight",
        stable_raw=s_raw,
        canary_raw=c_raw,
        stable=weight(s_raw, f"{where}.{field}[{s_j}]"),
        canary=weight(c_raw, f"{where}.{field}[{c_j}]"),
        max_weight=max_weight,
    )


class UnusableRoute(ValueError):
    """Raised by the pure finders; routers turn it into RouterError with the object's name."""


# -------------------------------------------------------------------------------------- arithmetic
def _round_div(n: int, d: int) -> int:
    """n / d rounded half up, in integers (no float drift at 950/50)."""
    return (2 * n + d) // (2 * d)


def to_percent(stable: int, canary: int) -> tuple[int, int]:
    """(canary %, stable %) of a pair of shares. No traffic to either reads as 0 % canary."""
    total = stable + canary
    if total <= 0:
        return 0, 100
    pct = _round_div(100 * canary, total)
    return pct, 100 - pct


def split_total(stable: int, canary: int, canary_percent: int, *, max_weight: int | None = None) -> tuple[int, int]:
    """New (stable, canary) shares for `canary_percent`, keeping the pair's current total.

    A total too small to express the percent (HTTPRoute's default 1/1) becomes 100; a total above the
    API's per-weight bound is capped so that 100 % still fits.
    """
    total = stable + canary
    if total <= 0 or (total < 100 and (total * canary_percent) % 100):
        total = 100
    if max_weight is not None and total > max_weight:
        total = max_weight
    new_canary = _round_div(total * canary_percent, 100)
    return total - new_canary, new_canary


def check_percent(canary_percent: object, what: str) -> int:
    if isinstance(canary_percent, bool) or not isinstance(canary_percent, int) or not 0 <= canary_percent <= 100:
        raise RouterError(f"{what}: canary weight must be an integer percent 0..100, got {canary_percent!r}", obj=what)
    return canary_percent


# -------------------------------------------------------------------------------------------- state
def decode_state(obj: Mapping[str, Any], what: str) -> Mapping[str, Any] | None:
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(STATE_ANNOTATION)
    if raw is None:
        return None
    try:
        state = json.loads(raw)
    except (TypeError, ValueError) as e:
        raise RouterError(f"{what}: annotation {STATE_ANNOTATION} is not valid JSON: {e}", obj=what) from e
    if not isinstance(state, dict):
        raise RouterError(f"{what}: annotation {STATE_ANNOTATION} must be a JSON object, got {raw[:80]!r}", obj=what)
    return state


def encode_state(state: Mapping[str, Any], what: str) -> str:
    try:
        return json.dumps(dict(state), separators=(",", ":"), sort_keys=True)
    except (TypeError, ValueError) as e:
        raise RouterError(f"{what}: the canary state cannot be stored as JSON: {e}", obj=what) from e


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def route_state(obj: Mapping[str, Any], pair: WeightPair, what: str, *, strict_state: bool = True) -> RouteState:
    canary, stable = to_percent(pair.stable, pair.canary)
    try:
        state = decode_state(obj, what)
    except RouterError:
        if strict_state:
            raise
        state = None  # a write may overwrite a damaged annotation
    rv = str((obj.get("metadata") or {}).get("resourceVersion", ""))
    return RouteState(canary_weight=canary, stable_weight=stable, state=state, resource_version=rv)


def weight_patch(
    obj: Mapping[str, Any], pair: WeightPair, canary_percent: int, state: Mapping[str, Any] | None, what: str = ""
) -> list[JSON]:
    """The JSON patch that sets the pair to `canary_percent` and stores `state` (None: left as is).

    Guarded by `test` ops on metadata.resourceVersion and on the old weights, so it applies only to
    the object it was computed from. Empty when it would change nothing.
    """
    new_stable, new_canary = split_total(pair.stable, pair.canary, canary_percent, max_weight=pair.max_weight)
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations")
    ops: list[JSON] = []
    for path, raw, units in ((pair.stable_path, pair.stable_raw, new_stable),
                             (pair.canary_path, pair.canary_raw, new_canary)):
        value = pair.encode(units)
        if raw is None or raw != value or type(raw) is not type(value):
            ops.append({"op": "add" if raw is None else "replace", "path": path, "value": value})
    if state is not None:
        encoded = encode_state(state, what)
        if not isinstance(annotations, dict):
            ops.append({"op": "add", "path": "/metadata/annotations", "value": {STATE_ANNOTATION: encoded}})
        elif annotations.get(STATE_ANNOTATION) != encoded:
            ops.append({"op": "add", "path": f"/metadata/annotations/{_escape(STATE_ANNOTATION)}", "value": encoded})
    if not ops:
        return []
    guards: list[JSON] = []
    if meta.get("resourceVersion"):
        guards.append({"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]})
    for path, raw in ((pair.stable_path, pair.stable_raw), (pair.canary_path, pair.canary_raw)):
        if raw is not None:
            guards.append({"op": "test", "path": path, "value": raw})
    return guards + ops


def choose(candidates: Sequence[int], unconditional: Sequence[int], label: str, noun: str) -> int:
    """The one candidate route/rule to change: the only one, or the only one without a match."""
    if len(candidates) == 1:
        return candidates[0]
    plain = [i for i in candidates if i in unconditional]
    if len(plain) == 1:
        return plain[0]
    listed = ", ".join(f"{label}[{i}]" for i in candidates)
    raise UnusableRoute(
        f"{len(candidates)} {noun} hold both destinations ({listed}); canaryd changes exactly one, "
        "the one without a match, so give the others a match or merge them"
    )


def describe_missing(
    role_found: Mapping[str, Sequence[str]], backends: Mapping[str, str], label: str, how: str
) -> str:
    """'no http route in spec.http holds both ...: stable 'stable' is in none; canary ... (matched by ...)'."""
    parts = []
    for role in ("stable", "canary"):
        where = ", ".join(role_found[role]) or "none"
        parts.append(f"{role} {backends[role]!r} is in {where}")
    return f"no {label} holds both the stable and the canary destination: {'; '.join(parts)} (matched by {how})"


# ------------------------------------------------------------------------------- Kubernetes-backed
class KubeRouter:
    """A router on one custom object, read and patched through KubeClient.

    Subclasses set KIND, RESOURCE and VERSIONS (tried in order until one is served) and implement
    `locate`, a pure function of the object.
    """

    KIND: ClassVar[str]
    RESOURCE: ClassVar[CustomResource]
    VERSIONS: ClassVar[tuple[str, ...]]
    PRODUCT: ClassVar[str]  # for "is ... installed?"

    def __init__(
        self,
        *,
        kube: KubeClient | None,
        namespace: str,
        route: str,
        stable_backend: str,
        canary_backend: str,
        api_versions: Sequence[str] | None = None,
        attempts: int = WRITE_ATTEMPTS,
        on_conflict: Callable[[], None] | None = None,  # counts writes that met another writer's change
    ) -> None:
        self.what = f"{self.KIND} {namespace}/{route}"
        if kube is None:
            raise RouterError(f"{self.what}: a Kubernetes client is required (with kubernetes.enabled: false "
                              "use the dry-run router)", obj=self.what)
        if stable_backend == canary_backend:
            raise RouterError(f"{self.what}: stable and canary backends are both {stable_backend!r}", obj=self.what)
        self._kube = kube
        self.namespace = namespace
        self.route = route
        self.stable_backend = stable_backend
        self.canary_backend = canary_backend
        self._versions = tuple(api_versions) if api_versions else self.VERSIONS
        self._attempts = attempts
        self._on_conflict = on_conflict
        self._served: str | None = None  # the first version found served; asked first from then on

    def locate(self, obj: Mapping[str, Any]) -> WeightPair:
        raise NotImplementedError

    def match_ops(self, obj: Mapping[str, Any], pair: WeightPair, matches: Sequence[MatchSpec]) -> list[JSON]:
        """The ops that make canaryd's match routes `matches` (after the weight ops); none by default."""
        return []

    def _patch(self, obj: Mapping[str, Any], canary_percent: int, state: Mapping[str, Any] | None,
               matches: Sequence[MatchSpec] | None) -> list[JSON]:
        pair = self._pair(obj)
        ops = weight_patch(obj, pair, canary_percent, state, self.what)
        extra = self.match_ops(obj, pair, matches) if matches is not None else []
        if not extra:
            return ops
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        guard = [{"op": "test", "path": "/metadata/resourceVersion", "value": rv}] if rv else []
        return (ops or guard) + extra

    def _pair(self, obj: Mapping[str, Any]) -> WeightPair:
        try:
            return self.locate(obj)
        except UnusableRoute as e:
            raise RouterError(f"{self.what}: {e}", obj=self.what) from e

    async def _fetch(self) -> JSON:
        versions = (self._served,) if self._served else self._versions
        for version in versions:
            try:
                obj = await self._kube.get_custom(self.RESOURCE.at(version), self.namespace, self.route)
            except KubeNotFound as e:
                if e.api_missing:
                    continue
                raise RouterError(f"{self.what} not found ({self.RESOURCE.group}/{version})", obj=self.what) from e
            self._served = version
            return obj
        raise RouterError(
            f"{self.what}: the API {self.RESOURCE.group} ({', '.join(versions)}) is not served by this cluster; "
            f"is {self.PRODUCT} installed?",
            obj=self.what,
        )

    async def read(self) -> RouteState:
        obj = await self._fetch()
        return route_state(obj, self._pair(obj), self.what)

    async def plan(self, canary_percent: int, state: Mapping[str, Any] | None = None, *,
                   matches: Sequence[MatchSpec] | None = None) -> list[JSON]:
        """The JSON patch `write` would send now, without sending it (for --dry-run against a cluster)."""
        check_percent(canary_percent, self.what)
        obj = await self._fetch()
        return self._patch(obj, canary_percent, state, matches)

    async def write(self, canary_percent: int, state: Mapping[str, Any] | None = None, *,
                    guard: StateGuard | None = None, matches: Sequence[MatchSpec] | None = None) -> RouteState:
        check_percent(canary_percent, self.what)

        def compute(obj: JSON) -> tuple[JSON, list[JSON]]:
            if guard is not None:  # the patch's resourceVersion test makes this check and the write one step
                guard(route_state(obj, self._pair(obj), self.what, strict_state=False).state)
            return obj, self._patch(obj, canary_percent, state, matches)

        async def send(planned: tuple[JSON, list[JSON]]) -> JSON:
            obj, ops = planned
            if not ops:
                return obj  # already so: no request, no resourceVersion bump
            assert self._served is not None
            return await self._kube.patch_custom(self.RESOURCE.at(self._served), self.namespace, self.route, ops)

        try:
            result = await read_modify_write(self._fetch, compute, send, attempts=self._attempts,
                                             on_conflict=self._on_conflict)
        except KubeConflict as e:
            raise RouterError(f"{self.what}: every write conflicted with another writer; {e}", obj=self.what) from e
        except KubeNotFound as e:
            raise RouterError(f"{self.what} not found (deleted while being written): {e}", obj=self.what) from e
        after = route_state(result, self._pair(result), self.what, strict_state=False)
        log.info("%s: canary %d%%, stable %d%% (resourceVersion %s)", self.what, after.canary_weight,
                 after.stable_weight, after.resource_version)
        return after
