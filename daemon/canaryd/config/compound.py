"""Kinds of compound values, beside the scalar ones in `kinds`: HTTP header mappings, lists of choices,
and a choice whose set of values grew."""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .kinds import _FAIL, _anchored, _Choice, _Ctx, _Invalid, _join, _Kind, _show

_HEADER_NAME = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"  # an HTTP token (RFC 9110)
# Set by canaryd itself, or a secret that belongs in a file rather than in the config.
_RESERVED_HEADERS = ("authorization", "host", "content-type", "content-length", "connection",
                     "transfer-encoding", "proxy-authorization")


@dataclass(frozen=True)
class _Headers(_Kind):
    """HTTP headers sent with every request: a mapping in YAML, a tuple of (name, value) pairs in python."""

    def allowed(self) -> str:
        return "a mapping of HTTP header name to a string value, such as {X-Scope-OrgID: tenant-1}"

    def parse(self, value: object, ctx: _Ctx, path: str) -> Any:
        if value is None:
            return ()
        if not isinstance(value, Mapping):
            ctx.add(path, f"must be {self.allowed()}, got {_show(value)}")
            return _FAIL
        out, ok = [], True
        for name, text in value.items():
            where = _join(path, name)
            if not isinstance(name, str) or not re.fullmatch(_HEADER_NAME, name):
                ctx.add(where, "is not an HTTP header name (letters, digits and !#$%&'*+.^_`|~-)")
                ok = False
            elif name.lower() in _RESERVED_HEADERS:
                ctx.add(where, "is set by canaryd; give credentials with authorization or basic_auth, "
                               "which read them from a file")
                ok = False
            elif not isinstance(text, str) or "\n" in text or "\r" in text:
                ctx.add(where, f"must be a one-line string (quote numbers), got {_show(text)}")
                ok = False
            else:
                out.append((name, text))
        return tuple(out) if ok else _FAIL

    def dump(self, value: Any) -> Any:
        return types.MappingProxyType(dict(value))

    def json(self) -> dict[str, Any]:
        return {"type": ["object", "null"], "propertyNames": {"pattern": _anchored(_HEADER_NAME)},
                "additionalProperties": {"type": "string", "pattern": r"^[^\r\n]*$"}}


@dataclass(frozen=True)
class _GrownChoice(_Choice):
    """A choice that grew: its message names the first values as before (scripts match that text), then
    the values added since."""

    added: tuple[str, ...] = ()

    def allowed(self) -> str:
        return "one of " + ", ".join((*self.values, *self.added))

    def convert(self, value: Any) -> Any:
        if isinstance(value, str) and value in self.added:
            return value
        try:
            return _Choice(self.values, self.enum).convert(value)
        except _Invalid as e:
            raise _Invalid(f"{e}; or one of {', '.join(self.added)}") from None

    def json(self) -> dict[str, Any]:
        return {"type": "string", "enum": [*self.values, *self.added]}


@dataclass(frozen=True)
class _Choices(_Kind):
    """A non-empty list of distinct values from `values` (a tuple in python)."""

    values: tuple[str, ...]

    def allowed(self) -> str:
        return "a non-empty list of " + ", ".join(self.values)

    def parse(self, value: object, ctx: _Ctx, path: str) -> Any:
        if not isinstance(value, list | tuple) or not value:
            ctx.add(path, f"must be {self.allowed()}, got {_show(value)}")
            return _FAIL
        ok = True
        for i, item in enumerate(value):
            if _Choice(self.values).parse(item, ctx, f"{path}[{i}]") is _FAIL:
                ok = False
            elif item in value[:i]:
                ctx.add(f"{path}[{i}]", f"repeats {item!r}; name each value once")
                ok = False
        return tuple(value) if ok else _FAIL

    def dump(self, value: Any) -> Any:
        return list(value)

    def json(self) -> dict[str, Any]:
        return {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"type": "string", "enum": list(self.values)}}
