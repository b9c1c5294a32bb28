"""The configuration reference, generated from the schema (itself derived from the model)."""

from __future__ import annotations

from collections.abc import Mapping

import yaml

from .kinds import _ABSENT, _REQUIRED, _join
from .schema import _TOP, _Field, _List, _plain, _Section


def _format_default(f: _Field) -> str:
    if f.default is _REQUIRED:
        return "(required)"
    if f.default is _ABSENT:
        return f"({f.inherits})" if f.inherits else ""
    if f.default is None:
        return "null"
    if isinstance(f.default, bool):
        return "true" if f.default else "false"
    if isinstance(f.default, tuple | list | Mapping):
        return yaml.safe_dump(_plain(f.default), default_flow_style=True, sort_keys=False, width=10**6).strip()
    return str(f.default)


def _reference_rows(section: _Section, prefix: str, rows: list[tuple[str, str, str]]) -> None:
    for f in section.fields:
        path = _join(prefix, f.key)
        if isinstance(f.kind, _Section):
            _reference_rows(f.kind, path, rows)
        elif isinstance(f.kind, _List):
            rows.append((path, _format_default(f), f.doc))
            _reference_rows(f.kind.item, path + "[]", rows)
        else:
            rows.append((path, _format_default(f), f"{f.description()}. Allowed: {f.kind.allowed()}."))


def config_reference() -> list[tuple[str, str, str]]:
    """Every key as (key path, default as written in YAML, description), from the validating schema."""
    rows: list[tuple[str, str, str]] = []
    _reference_rows(_TOP, "", rows)
    return rows
