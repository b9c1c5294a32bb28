"""Kinds of the delivery keys of a canary: rollout windows, a list of strings (match headers: compound)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..windows import FORM, parse_window
from .kinds import _FAIL, _Ctx, _Invalid, _Kind, _show


@dataclass(frozen=True)
class _Strings(_Kind):
    """A list of one-line strings (a command and its arguments); a tuple in python."""

    what: str = "a list of strings"

    def allowed(self) -> str:
        return self.what

    def parse(self, value: object, ctx: _Ctx, path: str) -> Any:
        if value is None:
            return ()
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            ctx.add(path, f"must be {self.allowed()}, got {_show(value)}")
            return _FAIL
        return tuple(value)

    def dump(self, value: Any) -> Any:
        return list(value)

    def json(self) -> dict[str, Any]:
        return {"type": ["array", "null"], "items": {"type": "string"}}


@dataclass(frozen=True)
class _Window(_Kind):
    """One rollout window (windows.py), kept as its text; a list of them is `_Names(_Window())`."""

    def allowed(self) -> str:
        return FORM

    def convert(self, value: Any) -> Any:
        try:
            parse_window(value)
        except ValueError as e:
            raise _Invalid(str(e)) from None
        return value.strip()

    def json(self) -> dict[str, Any]:
        return {"type": "string", "minLength": 1}


def check_delivery(ctx: _Ctx, c: Mapping[str, Any], path: str, mesh: object) -> None:
    """match_stages name match_routes, each once; SMI TrafficSplit (mesh linkerd) has no match routes."""
    routes = c.get("match_routes")
    names = [r.get("name") for r in routes if isinstance(r, Mapping)] if isinstance(routes, tuple) else None
    for i, name in enumerate(names or ()):
        if isinstance(name, str) and name in names[:i]:  # type: ignore[index]
            ctx.add(f"{path}.match_routes[{i}].name", f"repeats {name!r}; name each match route once")
    stages = c.get("match_stages")
    if not isinstance(stages, tuple) or not stages:
        return
    if getattr(mesh, "value", mesh) == "linkerd":
        ctx.add(f"{path}.match_stages", "an SMI TrafficSplit (mesh linkerd) has no match routes, so no "
                                        "match-only stages; use mesh gateway-api (an HTTPRoute) for them")
    elif names is not None:
        _check_stages(ctx, stages, names, path)


def _check_stages(ctx: _Ctx, stages: tuple[Any, ...], names: list[Any], path: str) -> None:
    for i, stage in enumerate(stages):
        if stage not in names:
            ctx.add(f"{path}.match_stages[{i}]", f"names no match route; match_routes are: "
                                                f"{', '.join(str(n) for n in names) or 'none'}")
        elif stage in stages[:i]:
            ctx.add(f"{path}.match_stages[{i}]", f"repeats {stage!r}; each stage adds one match route")
