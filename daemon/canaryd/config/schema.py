"""The schema, derived from the model's dataclass fields: sections of keys, each with a kind, a default
(the python default written as YAML) and a doc line. It validates files, builds the typed config back
from validated values, and describes the config as JSON Schema."""

from __future__ import annotations

import dataclasses
import difflib
import types
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, replace
from typing import Any

from ..analysis.settings import threshold_doc
from .kinds import _ABSENT, _EMPTY, _FAIL, _REQUIRED, NAMED, _Ctx, _Int, _join, _Kind, _Optional, _show
from .model import AnalysisSettings, Config, field_default

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


@dataclass(frozen=True)
class _Field:
    key: str
    kind: _Kind
    default: object  # as written in YAML; _REQUIRED, _ABSENT or _EMPTY for none
    doc: str
    inherits: str | None = None  # per-canary override of this defaults key
    attrs: tuple[str, ...] = ()  # the dataclass fields this key fills (more than one: a joined key)

    def description(self) -> str:
        return f"Overrides {self.inherits} for this canary" if self.inherits else self.doc


@dataclass(frozen=True)
class _Section(_Kind):
    fields: tuple[_Field, ...]

    def keys(self) -> tuple[str, ...]:
        return tuple(f.key for f in self.fields)

    def allowed(self) -> str:
        return "a mapping with the keys " + ", ".join(self.keys())

    def parse(self, value: object, ctx: _Ctx, path: str) -> Any:
        if value is None:  # "server:" with every key commented out
            value = {}
        if not isinstance(value, Mapping):
            ctx.add(path, f"must be {self.allowed()}, got {_show(value)}")
            return _FAIL
        known = self.keys()
        for key in value:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else "allowed keys are " + ", ".join(known)
                ctx.add(_join(path, key), f"unknown key; {hint}")
        out: dict[str, Any] = {}
        for f in self.fields:
            where = _join(path, f.key)
            if f.key in value:
                out[f.key] = f.kind.parse(value[f.key], ctx, where)
            elif f.default is _REQUIRED:
                ctx.add(where, f"missing required key; must be {f.kind.allowed()}")
                out[f.key] = _FAIL
            elif f.default is not _ABSENT:
                out[f.key] = f.kind.parse(f.default, ctx, where)
        return out

    def dump(self, value: Any) -> Any:
        out = {}
        for f in self.fields:
            if f.attrs:
                attrs = tuple(getattr(value, a) for a in f.attrs)
                out[f.key] = f.kind.dump(attrs if len(attrs) > 1 else attrs[0])
        return types.MappingProxyType(out)

    def json(self, *, nullable: bool = True) -> dict[str, Any]:
        props = {}
        for f in self.fields:
            prop = {"description": f.description(), **f.kind.json()}
            if f.default not in (_REQUIRED, _ABSENT, _EMPTY):
                prop["default"] = _plain(f.default)
            props[f.key] = prop
        out: dict[str, Any] = {"type": ["object", "null"] if nullable else "object", "properties": props,
                               "additionalProperties": False}
        required = [f.key for f in self.fields if f.default is _REQUIRED]
        return {**out, "required": required} if required else out


@dataclass(frozen=True)
class _Presets(_Section):
    """A section that may instead be given as the name of a preset (a partial mapping of its keys)."""

    presets: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)

    def allowed(self) -> str:
        return f"one of {', '.join(self.presets)}, or {super().allowed()}"

    def parse(self, value: object, ctx: _Ctx, path: str) -> Any:
        if isinstance(value, str):
            if value not in self.presets:
                close = difflib.get_close_matches(value, list(self.presets), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                ctx.add(path, f"must be {self.allowed()}, got {_show(value)}{hint}")
                return _FAIL
            value = dict(self.presets[value])
        return super().parse(value, ctx, path)

    def json(self, *, nullable: bool = True) -> dict[str, Any]:
        return {"anyOf": [{"type": "string", "enum": list(self.presets)}, super().json(nullable=nullable)]}


@dataclass(frozen=True)
class _List(_Kind):
    item: _Section

    def allowed(self) -> str:
        return "a list of mappings"

    def parse(self, value: object, ctx: _Ctx, path: str) -> Any:
        if value is None:
            return ()
        if not isinstance(value, list | tuple):
            ctx.add(path, f"must be {self.allowed()} with the keys {', '.join(self.item.keys())}, "
                          f"got {_show(value)}")
            return _FAIL
        return tuple(self.item.parse(v, ctx, f"{path}[{i}]") for i, v in enumerate(value))

    def dump(self, value: Any) -> Any:
        return tuple(self.item.dump(v) for v in value)

    def json(self) -> dict[str, Any]:
        return {"type": ["array", "null"], "items": self.item.json(nullable=False)}


def _plain(value: object) -> object:
    """Tuples and read-only mappings as lists and dicts, for yaml.safe_dump and JSON."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _partial(section: _Section, prefix: str) -> tuple[_Field, ...]:
    """The same keys with no defaults, for overriding `prefix` key by key."""
    out = []
    for f in section.fields:
        kind = f.kind
        if isinstance(kind, _Section):
            kind = _Section(_partial(kind, _join(prefix, f.key)))
        out.append(replace(f, kind=kind, default=_ABSENT, inherits=_join(prefix, f.key), attrs=()))
    return tuple(out)


def _kind_of(f: dataclasses.Field) -> _Kind:
    m = f.metadata
    if "items" in m:
        return _List(section_of(m["items"]))
    kind = m["kind"]
    if isinstance(kind, type):
        section = section_of(kind)
        return _Presets(section.fields, m["presets"]) if "presets" in m else section
    kind = NAMED[kind] if isinstance(kind, str) else kind
    # With postponed annotations the type is its source text; "| None" marks a key that may be null.
    return _Optional(kind) if "None" in str(f.type) else kind


def _key_of(f: dataclasses.Field, siblings: Mapping[str, dataclasses.Field]) -> tuple[_Field, ...]:
    m = f.metadata
    kind = _kind_of(f)
    if "inherits" in m:
        assert isinstance(kind, _Section)
        return _partial(kind, m["inherits"])
    attrs = tuple(m.get("joins", (f.name,)))
    defaults = tuple(field_default(siblings[a]) for a in attrs)
    if MISSING in defaults:
        default: object = _REQUIRED
    elif isinstance(kind, _Section):
        default = _EMPTY
    else:
        default = kind.dump(defaults if len(defaults) > 1 else defaults[0])
    doc = threshold_doc(m) if "action" in m else m["doc"]
    return (_Field(m.get("yaml", f.name), kind, default, doc, attrs=attrs),)


def section_of(cls: type) -> _Section:
    """The section of a model dataclass; fields without a doc line are not YAML keys. Keys repeated from
    another section (a canary's overrides of `defaults`) come after the section's own keys."""
    fields = [f for f in dataclasses.fields(cls) if "doc" in f.metadata]
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    fields.sort(key=lambda f: "inherits" in f.metadata)
    return _Section(tuple(k for f in fields for k in _key_of(f, by_name)))


_TOP = section_of(Config)
_DEFAULTS = section_of(AnalysisSettings)


def construct(cls: type, raw: Mapping[str, Any], shared: dict[object, object] | None = None, /, **given: Any) -> Any:
    """Build a model dataclass from its validated section; `given` fields are taken as they are. With
    `shared`, each nested section equal to one built before is that one (see `share`)."""
    kwargs = dict(given)
    for f in dataclasses.fields(cls):
        m = f.metadata
        key = m.get("yaml", f.name)
        if f.name in kwargs or "doc" not in m or key not in raw:
            continue
        value = raw[key]
        if "joins" in m:
            kwargs.update(zip(m["joins"], value, strict=True))
            continue
        if "items" in m:
            value = share(shared, tuple(share(shared, construct(m["items"], v, shared)) for v in value))
        elif isinstance(m["kind"], type):
            value = share(shared, construct(m["kind"], value, shared))
        kwargs[f.name] = value
    return cls(**kwargs)


def share(shared: dict[object, object] | None, value: Any) -> Any:
    """`value`, or the equal one `shared` holds (frozen, so either will do): 10,000 canaries configured
    alike then hold one copy of their settings, gates and queries rather than 10,000 (~1.5 kB each)."""
    if shared is None:
        return value
    try:
        return shared.setdefault(value, value)
    except TypeError:  # not hashable (a mapping inside): kept as it is
        return value


# `version: 1` may head a file; it is not a section, so it is checked (and described) beside them.
VERSION = _Int(1, 1, "1 (the only config version)")
VERSION_DOC = "Config format version; 1 is the only one"


def json_schema() -> dict[str, Any]:
    """The config file as JSON Schema (draft 2020-12), from the same fields as the validation.

    The loader checks more than the schema can say (durations' unit order, keys compared with each other,
    template placeholders); a file it accepts always validates against the schema.
    """
    top = _TOP.json()
    top["properties"] = {"version": {"description": VERSION_DOC, **VERSION.json()}, **top["properties"]}
    return {"$schema": JSON_SCHEMA_DIALECT, "title": "canaryd configuration", **top}
