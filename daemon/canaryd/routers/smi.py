"""Linkerd (SMI): the stable and canary backends of a TrafficSplit (split.smi-spec.io v1alpha1..v1alpha4).

Weights are shares, not percent: 950/50 is 95 %/5 %. v1alpha1 writes them as quantities ("950m",
"1", "500m"). A write keeps the scale and the form the object already uses: a total of 1000 gets
750/250 at 25 %, a total of 100 gets 75/25, and quantity strings stay quantity strings.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from canaryd.kube import TRAFFIC_SPLIT
from canaryd.routers.base import KubeRouter, UnusableRoute, WeightPair

# the decimal SI suffixes a weight can sensibly carry; binary ones (Ki) make no sense as a share
_QUANTITY = re.compile(r"^\+?([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(m|k|M|G)?$")
_MILLI = {"m": Decimal(1), "": Decimal(1000), "k": Decimal(10**6), "M": Decimal(10**9), "G": Decimal(10**12)}


def quantity_milli(raw: Any, where: str) -> int:
    """A weight in thousandths: "950m" → 950, "1" → 1000, 2 → 2000, "0.5" → 500."""
    if isinstance(raw, bool):
        raise UnusableRoute(f"{where} is {raw!r}, not a number or quantity")
    if isinstance(raw, int):
        return raw * 1000
    if isinstance(raw, str):
        m = _QUANTITY.match(raw.strip())
        if m:
            try:
                return int((Decimal(m.group(1)) * _MILLI[m.group(2) or ""]).to_integral_value())
            except InvalidOperation:
                pass
    raise UnusableRoute(f"{where} is {raw!r}, not a number or quantity such as 950 or \"950m\"")


def format_quantity(milli: int, *, milli_form: bool) -> str:
    """Thousandths as a quantity string: "750m", or "1" when whole and the object used whole numbers."""
    if not milli_form and milli % 1000 == 0:
        return str(milli // 1000)
    return f"{milli}m"


def _codec(raws: tuple[Any, Any], wheres: tuple[str, str]) -> tuple[tuple[int, int], Callable[[int], Any]]:
    """The pair in the object's own units, and how to write units back in the same form."""
    if all(isinstance(r, int) and not isinstance(r, bool) for r in raws):
        return (raws[0], raws[1]), int
    if any(not isinstance(r, str | int) or isinstance(r, bool) for r in raws):
        bad = next(i for i, r in enumerate(raws) if not isinstance(r, str | int) or isinstance(r, bool))
        raise UnusableRoute(f"{wheres[bad]} is {raws[bad]!r}, not a number or quantity")
    units = (quantity_milli(raws[0], wheres[0]), quantity_milli(raws[1], wheres[1]))
    strings = [r for r in raws if isinstance(r, str)]
    milli_form = all(s.strip().endswith("m") for s in strings)
    return units, lambda milli: format_quantity(milli, milli_form=milli_form)


def find_smi_backends(ts: Mapping[str, Any], stable: str, canary: str) -> WeightPair:
    """The stable and canary backends of a TrafficSplit: pure, raises UnusableRoute."""
    backends = (ts.get("spec") or {}).get("backends")
    if not isinstance(backends, list) or not backends:
        raise UnusableRoute("has no spec.backends")
    services = [b.get("service") if isinstance(b, dict) else None for b in backends]
    index: dict[str, int] = {}
    for role, service in (("stable", stable), ("canary", canary)):
        hits = [i for i, s in enumerate(services) if s == service]
        if not hits:
            listed = ", ".join(repr(s) for s in services)
            raise UnusableRoute(f"spec.backends has no {role} backend with service {service!r} (services: {listed})")
        if len(hits) > 1:
            raise UnusableRoute(f"spec.backends lists the {role} service {service!r} {len(hits)} times")
        index[role] = hits[0]
    s, c = index["stable"], index["canary"]
    raws = (backends[s].get("weight"), backends[c].get("weight"))
    wheres = (f"spec.backends[{s}].weight", f"spec.backends[{c}].weight")
    if raws[0] is None or raws[1] is None:
        raise UnusableRoute(f"{wheres[0] if raws[0] is None else wheres[1]} is missing (SMI requires a weight)")
    (s_units, c_units), encode = _codec(raws, wheres)
    return WeightPair(
        where="spec.backends",
        stable_path=f"/spec/backends/{s}/weight",
        canary_path=f"/spec/backends/{c}/weight",
        stable_raw=raws[0],
        canary_raw=raws[1],
        stable=s_units,
        canary=c_units,
        encode=encode,
    )


class SmiRouter(KubeRouter):
    KIND = "TrafficSplit"
    RESOURCE = TRAFFIC_SPLIT
    VERSIONS = ("v1alpha4", "v1alpha3", "v1alpha2", "v1alpha1")
    PRODUCT = "the Linkerd SMI extension"

    def locate(self, obj: Mapping[str, Any]) -> WeightPair:
        return find_smi_backends(obj, self.stable_backend, self.canary_backend)
