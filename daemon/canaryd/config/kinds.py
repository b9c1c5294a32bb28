"""Kinds: each converts one YAML value, says what it allows, writes a python default back as YAML and
describes itself as JSON Schema. Problems are collected in a `_Ctx`, never raised one by one."""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import re
import types
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import yaml

from ..analysis.durations import DURATION_FORM, DurationError, format_duration, parse_duration


class _Invalid(Exception):
    """A value is wrong; the message reads '<what is wrong>; <what is allowed>' (or 'must be …, got …')."""


class _Fail:
    """Marks a value that was invalid; its problem has already been recorded."""

    def __repr__(self) -> str:
        return "<invalid>"


_FAIL = _Fail()


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_EMPTY: Mapping[str, Any] = types.MappingProxyType({})  # schema defaults are immutable, like all module state
_REQUIRED = _Marker("<required>")
_ABSENT = _Marker("<absent>")  # no default: a missing key stays missing (per-canary overrides)


@dataclass
class _Ctx:
    """Per-parse state: where problems are collected (never module-level)."""

    source: str
    problems: list[str] = field(default_factory=list)

    def add(self, path: str, message: str) -> None:
        self.problems.append(f"{self.source}: {path or '(top level)'}: {message}")


def _show(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "a list" if value else "an empty list"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, int) and abs(value) >= 10**60:  # repr() of a huge int is slow, then refused
        return f"an integer of about {len(format(value, 'x')) * 1.2:.0f} digits"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _join(path: str, key: object) -> str:
    """`path.key`, or `path["key"]` escaped when the key is not a plain name (a line break or a dot in it
    would make the problem two lines or name another place); a key that is not a string as its repr."""
    text = str(key)  # YAML's 1: or 2020-01-01: keys read as they were written
    if _PLAIN_KEY.fullmatch(text):
        return f"{path}.{text}" if path else text
    shown = json.dumps(key) if isinstance(key, str) else repr(key)
    return f"{path}[{shown if len(shown) <= 60 else shown[:57] + '...'}]"


# What str.splitlines() breaks at: none of it may stay raw in a one-line problem.
_LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def one_line(text: str) -> str:
    """`text` with every line break escaped, as repr() would write it."""
    return _LINE_BREAKS.sub(lambda m: repr(m.group())[1:-1], text)


def _anchored(pattern: str) -> str:
    """A Python fullmatch pattern as a JSON Schema pattern (which matches anywhere unless anchored)."""
    return f"^(?:{pattern})$"


class _Kind:
    def allowed(self) -> str:
        raise NotImplementedError

    def convert(self, value: Any) -> Any:
        raise NotImplementedError

    def dump(self, value: Any) -> Any:
        """A python value (a dataclass default) as a user writes it in YAML."""
        return value

    def json(self) -> dict[str, Any]:
        raise NotImplementedError

    def must(self, value: object) -> _Invalid:
        return _Invalid(f"must be {self.allowed()}, got {_show(value)}")

    def parse(self, value: object, ctx: _Ctx, path: str) -> Any:
        try:
            return self.convert(value)
        except _Invalid as e:
            ctx.add(path, str(e))
            return _FAIL


@dataclass(frozen=True)
class _Str(_Kind):
    what: str = "a non-empty string"
    pattern: str | None = None
    max_len: int | None = None

    def allowed(self) -> str:
        return self.what

    def convert(self, value: Any) -> Any:
        if not isinstance(value, str) or not value.strip():
            raise self.must(value)
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise self.must(value)
        if self.max_len is not None and len(value) > self.max_len:
            raise self.must(value)
        return value

    def json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "string", "pattern": _anchored(self.pattern) if self.pattern else r"\S"}
        if self.max_len is not None:
            out["maxLength"] = self.max_len
        return out


_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_K8S_LABEL = _Str("a Kubernetes name (DNS-1123 label: lowercase letters, digits and '-', at most 63)",
                  _DNS_LABEL, 63)
_K8S_NAME = _Str("a Kubernetes name (DNS-1123 subdomain: lowercase letters, digits, '-' and '.', at most 253)",
                 rf"{_DNS_LABEL}(\.{_DNS_LABEL})*", 253)
_PATH = _Str("a file path")

_PROM_STRING = r"""("([^"\\]|\\.)*"|'([^'\\]|\\.)*'|`[^`]*`)"""
_MATCHER = rf"\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=~|!~|!=|=)\s*{_PROM_STRING}\s*"
_SELECTOR = _Str('PromQL label matchers without braces, such as job="auth-service-canary"',
                 rf"{_MATCHER}(,{_MATCHER})*,?\s*")


@dataclass(frozen=True)
class _Bool(_Kind):
    def allowed(self) -> str:
        return "true or false"

    def convert(self, value: Any) -> Any:
        if not isinstance(value, bool):
            raise self.must(value)
        return value

    def json(self) -> dict[str, Any]:
        return {"type": "boolean"}


@dataclass(frozen=True)
class _Int(_Kind):
    lo: int
    hi: int
    what: str | None = None

    def allowed(self) -> str:
        return self.what or f"a whole number between {self.lo} and {self.hi}"

    def convert(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or not self.lo <= value <= self.hi:
            raise self.must(value)
        return value

    def json(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.lo, "maximum": self.hi}


@dataclass(frozen=True)
class _Number(_Kind):
    what: str
    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False

    def allowed(self) -> str:
        return self.what

    def convert(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.must(value)
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an int beyond any float, such as 10**400
            finite = False
        if not finite:
            raise self.must(value)
        above = value > self.lo if self.lo_open else value >= self.lo
        if not (above and value <= self.hi):
            raise self.must(value)
        return float(value)

    def dump(self, value: Any) -> Any:
        return int(value) if float(value).is_integer() else value  # 5, not 5.0, as a user writes it

    def json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "number"}
        if math.isfinite(self.lo):
            out["exclusiveMinimum" if self.lo_open else "minimum"] = self.lo
        if math.isfinite(self.hi):
            out["maximum"] = self.hi
        return out


_PERCENT = _Number("a number between 0 and 100", 0, 100)
_POSITIVE = _Number("a number greater than 0", 0, lo_open=True)
_RATIO = _Number("a number of at least 1 (canary / stable)", 1)

# Durations as JSON Schema: a number of seconds, a bare number as a string, or units largest first (the
# order and once-each rules are left to the loader).
_DURATION_PATTERN = r"^\s*(\+?(\d+(\.\d*)?|\.\d+)|((\d+(\.\d+)?|\.\d+)(ms|d|h|m|s))+)\s*$"


# Far beyond any real interval or timeout, and far below where a timer or format_duration overflows (1e305 s).
_MAX_DURATION = 366 * 86400.0


@dataclass(frozen=True)
class _Duration(_Kind):
    positive: bool = True

    def allowed(self) -> str:
        return DURATION_FORM + (", greater than 0" if self.positive else "")

    def convert(self, value: Any) -> Any:
        try:
            seconds = parse_duration(value)
        except DurationError as e:
            if e.negative:
                raise _Invalid(f"must not be negative, got {_show(value)}; use {DURATION_FORM}") from None
            raise self.must(value) from None
        except OverflowError:  # an int beyond any float, such as 10**400
            raise self.must(value) from None
        if self.positive and seconds <= 0:
            raise _Invalid(f"must be greater than 0, got {_show(value)}; use {DURATION_FORM}")
        if seconds > _MAX_DURATION:
            raise _Invalid(f"must be at most 366d, got {_show(value)}; use {DURATION_FORM}")
        return seconds

    def dump(self, value: Any) -> Any:
        return format_duration(value)

    def json(self) -> dict[str, Any]:
        number = {"type": "number", ("exclusiveMinimum" if self.positive else "minimum"): 0}
        return {"anyOf": [number, {"type": "string", "pattern": _DURATION_PATTERN}]}


@dataclass(frozen=True)
class _Choice(_Kind):
    values: tuple[str, ...]
    enum: type[Enum] | None = None

    def allowed(self) -> str:
        return "one of " + ", ".join(self.values)

    def convert(self, value: Any) -> Any:
        if not isinstance(value, str) or value not in self.values:
            hint = ""
            if isinstance(value, str):
                close = difflib.get_close_matches(value, self.values, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
            raise _Invalid(f"must be {self.allowed()}, got {_show(value)}{hint}")
        return self.enum(value) if self.enum is not None else value

    def dump(self, value: Any) -> Any:
        return value.value if isinstance(value, Enum) else value

    def json(self) -> dict[str, Any]:
        return {"type": "string", "enum": list(self.values)}


def _choice(enum: type[Enum]) -> _Choice:
    return _Choice(tuple(m.value for m in enum), enum)


@dataclass(frozen=True)
class _Optional(_Kind):
    """null is allowed (it disables or unsets). Error messages stay those of the inner kind."""

    inner: _Kind

    def allowed(self) -> str:
        return f"{self.inner.allowed()}, or null"

    def parse(self, value: object, ctx: _Ctx, path: str) -> Any:
        return None if value is None else self.inner.parse(value, ctx, path)

    def dump(self, value: Any) -> Any:
        return None if value is None else self.inner.dump(value)

    def json(self) -> dict[str, Any]:
        return {"anyOf": [self.inner.json(), {"type": "null"}]}


_HOSTNAME = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*"


@dataclass(frozen=True)
class _Listen(_Kind):
    """host:port in YAML; (host, port) in python."""

    def allowed(self) -> str:
        return "host:port such as 127.0.0.1:8080, 0.0.0.0:8080 or [::1]:8080 (port 0-65535)"

    def convert(self, value: Any) -> Any:
        if not isinstance(value, str):
            raise self.must(value)
        text = value.strip()
        m = re.fullmatch(r"\[([^\]]+)\]:(\d+)", text)
        if m:
            host, port = m[1], m[2]
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise self.must(value) from None
        else:
            host, sep, port = text.rpartition(":")
            if not sep or not re.fullmatch(_HOSTNAME, host):
                raise self.must(value)
        if not port.isdigit() or int(port) > 65535:
            raise self.must(value)
        return host, int(port)

    def dump(self, value: Any) -> Any:
        host, port = value
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def json(self) -> dict[str, Any]:
        return {"type": "string", "pattern": rf"^\s*(\[[0-9A-Fa-f:.]+\]|{_HOSTNAME}):\d{{1,5}}\s*$"}


@dataclass(frozen=True)
class _Url(_Kind):
    example: str

    def allowed(self) -> str:
        return f"an http:// or https:// URL such as {self.example}"

    def convert(self, value: Any) -> Any:
        if not isinstance(value, str):
            raise self.must(value)
        try:
            parts = urllib.parse.urlsplit(value.strip())
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise self.must(value) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self.must(value)
        return value.strip().rstrip("/")

    def json(self) -> dict[str, Any]:
        return {"type": "string", "pattern": r"^\s*https?://[^/?#\s]"}


@dataclass(frozen=True)
class _Steps(_Kind):
    def allowed(self) -> str:
        return "a non-empty list of whole percentages 1-100, strictly increasing, such as [5, 25, 50, 100]"

    def parse(self, value: object, ctx: _Ctx, path: str) -> Any:
        if not isinstance(value, list | tuple) or not value:
            ctx.add(path, f"must be {self.allowed()}, got {_show(value)}")
            return _FAIL
        steps, ok, previous = [], True, None
        for i, step in enumerate(value):
            where = f"{path}[{i}]"
            if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step <= 100:
                ctx.add(where, f"must be a whole percentage between 1 and 100, got {_show(step)}")
                ok = False
                continue
            if previous is not None and step <= previous:
                ctx.add(where, f"must be greater than the previous step {previous}, got {step}; "
                               "steps are strictly increasing percentages 1-100")
                ok = False
            previous = step
            steps.append(step)
        return tuple(steps) if ok else _FAIL

    def dump(self, value: Any) -> Any:
        return list(value)

    def json(self) -> dict[str, Any]:
        return {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 1, "maximum": 100}}


@dataclass(frozen=True)
class _Names(_Kind):
    """A list of names (or other one-line texts), each checked by `item`; a tuple in python, [] in YAML for none."""

    item: _Kind
    what: str | None = None  # how the reference says it; default: "a list, each item <item>"

    def allowed(self) -> str:
        return self.what or f"a list, each item {self.item.allowed()}"

    def parse(self, value: object, ctx: _Ctx, path: str) -> Any:
        if value is None:
            return ()
        if not isinstance(value, list | tuple):
            ctx.add(path, f"must be {self.allowed()}, got {_show(value)}")
            return _FAIL
        out = tuple(self.item.parse(v, ctx, f"{path}[{i}]") for i, v in enumerate(value))
        return _FAIL if any(v is _FAIL for v in out) else out

    def dump(self, value: Any) -> Any:
        return list(value)

    def json(self) -> dict[str, Any]:
        return {"type": ["array", "null"], "items": self.item.json()}


# The kinds the analysis settings name in their metadata (analysis/ cannot import config).
NAMED: Mapping[str, _Kind] = types.MappingProxyType({
    "percent": _PERCENT,
    "positive": _POSITIVE,
    "ratio": _RATIO,
    "duration": _Duration(),
    "steps": _Steps(),
    "count": _Int(0, 10**12, "a whole number >= 0"),
    "bool": _Bool(),
    "alpha": _Number("a number greater than 0 and at most 0.5", 0, 0.5, lo_open=True),
    "points": _Number("a number of percentage points between 0 and 100", 0, 100),
})


def read_setting(kind: str, text: str) -> Any:
    """A command-line value checked by the same validator as the config key of that kind.

    The text is read as a YAML scalar, as the same value in a file would be. Raises ValueError with
    "must be <allowed>, got <value>".
    """
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    if isinstance(value, list | dict) or value is None:
        value = text  # a flag value is one scalar; "[1]" or "" is shown back as written
    try:
        return NAMED[kind].convert(value)
    except _Invalid as e:
        raise ValueError(str(e)) from None
