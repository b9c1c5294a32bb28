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
    """HTTP header name → one-line string value: a mapping in YAML, a tuple of (name, value) pairs in python.

    Two uses: headers canaryd sends to Prometheus (optional; a few names are canaryd's own or secrets
    that belong in files) and the headers a request must carry to reach the canary (`match`: at least
    one, names lowercased since meshes match them so).
    """

    match: bool = False

    def allowed(self) -> str:
        if self.match:
            return 'a non-empty mapping of HTTP header name to an exact string value, such as {x-canary: "true"}'
        return "a mapping of HTTP header name to a string value, such as {X-Scope-OrgID: tenant-1}"

    def parse(self, value: object, ctx: _Ctx, path: str) -> Any:
        if value is None and not self.match:
            return ()
        if not isinstance(value, Mapping) or (self.match and not value):
            ctx.add(path, f"must be {self.allowed()}, got {_show(value)}")
            return _FAIL
        pairs = [self._pair(name, text, ctx, _join(path, name)) for name, text in value.items()]
        return _FAIL if any(p is None for p in pairs) else tuple(pairs)

    def _pair(self, name: object, text: object, ctx: _Ctx, where: str) -> tuple[str, str] | None:
        if not isinstance(name, str) or not re.fullmatch(_HEADER_NAME, name):
            ctx.add(where, "is not an HTTP header name (letters, digits and !#$%&'*+.^_`|~-)")
        elif not self.match and name.lower() in _RESERVED_HEADERS:
            ctx.add(where, "is set by canaryd; give credentials with authorization or basic_auth, "
                           "which read them from a file")
        elif not isinstance(text, str) or "\n" in text or "\r" in text:
            quote = "true and numbers" if self.match else "numbers"
            ctx.add(where, f"must be a one-line string (quote {quote}), got {_show(text)}")
        else:
            return (name.lower(), text) if self.match else (name, text)
        return None

    def dump(self, value: Any) -> Any:
        return types.MappingProxyType(dict(value))

    def json(self) -> dict[str, Any]:
        values = {"type": "string", "pattern": r"^[^\r\n]*$"}
        if self.match:
            return {"type": "object", "additionalProperties": values}
        return {"type": ["object", "null"], "propertyNames": {"pattern": _anchored(_HEADER_NAME)},
                "additionalProperties": values}


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
