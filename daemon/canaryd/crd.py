"""The `Canary` custom resource (canaries.canaryd.io/v1alpha1): its CustomResourceDefinition, generated.

A Canary's `spec` holds the keys of one `canaries:` entry of the config file except `name` and
`namespace`, which are the object's own. Its OpenAPI schema is the config's JSON Schema
(`config.json_schema()`, itself derived from the model's fields) rewritten as a structural schema, the
form a real API server requires:

- one `type` per node; a key that may be null is `nullable: true`;
- no `additionalProperties: false` beside `properties`: a structural schema is closed by itself, and the
  API server's strict field validation refuses the keys it does not declare;
- a number-or-string (a duration: ``30s`` or whole seconds) is `x-kubernetes-int-or-string`, its string
  pattern and numeric bound kept beside it;
- any other union (``queries:`` is a preset's name or a mapping) preserves unknown fields: the daemon
  validates it, and an invalid Canary is reported in its `Ready` condition;
- no defaults: a Canary's unset keys follow the file's `defaults:` at the daemon, not values frozen
  by the API server when the object was created.

`scripts/crd.py` writes deploy/crd/canaries.canaryd.io.yaml; a test keeps that file equal to
`crd_manifest()`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .config import json_schema

GROUP = "canaryd.io"
VERSION = "v1alpha1"
PLURAL = "canaries"
KIND = "Canary"
SHORT_NAMES = ("cnr",)
API_VERSION = f"{GROUP}/{VERSION}"
OWN_KEYS = ("name", "namespace")  # a config entry's keys that a Canary takes from its metadata

# Keywords copied as they are; anything else the config schema may say one day must be translated
# here first (`structural` refuses what it does not know, so the generator fails rather than drift).
_PLAIN = ("enum", "pattern", "maxLength", "minLength", "minimum", "maximum", "minItems", "maxItems", "required")
_DROPPED = ("default", "$schema", "title")  # see the module's doc: no defaults at the API server


class NotStructural(ValueError):
    """The config schema uses a keyword this translation does not know."""


def structural(node: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) node of the config as a structural OpenAPI v3 node."""
    if "anyOf" in node:
        out = _union(node)
    else:
        out = _single(node)
    if "description" in node:
        out = {"description": node["description"], **out}
    return out


def _single(node: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    kind = node.get("type")
    if isinstance(kind, list):
        real = [t for t in kind if t != "null"]
        if len(real) != 1:
            raise NotStructural(f"a node of the types {kind} has no structural form")
        out["type"], nullable = real[0], "null" in kind
    else:
        out["type"], nullable = kind, False
    if out["type"] is None:
        raise NotStructural(f"a node without a type: {dict(node)}")
    for key, value in node.items():
        if key not in ("type", "description", "additionalProperties", *_DROPPED):
            out |= _keyword(key, value)
    if node.get("additionalProperties") not in (None, False):
        out["additionalProperties"] = structural(node["additionalProperties"])  # a map
    if nullable:
        out["nullable"] = True
    return out


def _keyword(key: str, value: Any) -> dict[str, Any]:
    """One keyword of a node, translated."""
    if key == "properties":
        return {"properties": {k: structural(v) for k, v in value.items()}}
    if key == "items":
        return {"items": structural(value)}
    if key in ("exclusiveMinimum", "exclusiveMaximum"):  # a bound in 2020-12, a flag in OpenAPI v3
        return {"minimum" if key == "exclusiveMinimum" else "maximum": value, key: True}
    if key == "uniqueItems":
        return {"x-kubernetes-list-type": "set"} if value else {}  # the API server refuses uniqueItems: true
    if key in _PLAIN:
        return {key: list(value) if isinstance(value, list | tuple) else value}
    raise NotStructural(f"the keyword {key!r} has no translation to a structural schema")


def _branches(node: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The branches of a (nested) anyOf, flattened."""
    out: list[Mapping[str, Any]] = []
    for b in node["anyOf"]:
        out += _branches(b) if "anyOf" in b else [b]
    return out


def _types(node: Mapping[str, Any]) -> set[str]:
    kind = node.get("type")
    return set(kind) if isinstance(kind, list) else {kind} if kind else set()


def _union(node: Mapping[str, Any]) -> dict[str, Any]:
    branches = _branches(node)
    nullable = any(_types(b) & {"null"} for b in branches)
    real = [b for b in branches if _types(b) - {"null"}]
    kinds = {t for b in real for t in _types(b) - {"null"}}
    if len(real) == 1:
        out = _single({k: v for k, v in node.items() if k not in ("anyOf", "description")} | real[0])
    elif kinds in ({"number", "string"}, {"integer", "string"}):
        out = {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}
        for b in real:  # each branch's checks apply to its own type only, as JSON Schema reads them
            out |= {k: v for k, v in _single(b).items() if k != "type"}
    else:
        # Neither scalar nor object alone (a preset's name or a mapping): the daemon validates it.
        out = {"x-kubernetes-preserve-unknown-fields": True}
    if nullable:
        out["nullable"] = True
    return out


def spec_schema() -> dict[str, Any]:
    """The schema of a Canary's spec: a `canaries:` entry without the keys the metadata gives."""
    entry = dict(json_schema()["properties"]["canaries"]["items"])
    entry["properties"] = {k: v for k, v in entry["properties"].items() if k not in OWN_KEYS}
    entry["required"] = [k for k in entry.get("required", ()) if k not in OWN_KEYS]
    entry["description"] = ("A canaries: entry of the config file without name and namespace (the Canary's own); "
                            "unset keys follow the config's defaults:")
    return structural(entry)


def _condition() -> dict[str, Any]:
    return {"type": "object", "required": ["type", "status"], "properties": {
        "type": {"type": "string", "description": "Ready, Progressing, Promoted or RolledBack"},
        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "reason": {"type": "string"},
        "message": {"type": "string"},
        "observedGeneration": {"type": "integer", "format": "int64"},
        "lastTransitionTime": {"type": "string", "format": "date-time"},
    }}


def status_schema() -> dict[str, Any]:
    """What the leader writes in /status (see canary_status.py)."""
    return {"type": "object", "description": "Written by canaryd's leader", "properties": {
        "phase": {"type": "string", "description": "Idle, Progressing, Paused, Promoting, Succeeded, RolledBack, "
                                                   "or Invalid (see the Ready condition)"},
        "weight": {"type": "integer", "description": "Percent of traffic on the canary"},
        "step": {"type": "integer", "description": "Traffic step, from 1; 0 before the first"},
        "steps": {"type": "integer", "description": "Number of traffic steps"},
        "stepStartedAt": {"type": "string", "format": "date-time"},
        "lastDecision": {"type": "object", "properties": {
            "decision": {"type": "string"},
            "trigger": {"type": "string"},
            "time": {"type": "string", "format": "date-time"},
            "reasons": {"type": "array", "items": {"type": "string"}},
        }},
        "observedGeneration": {"type": "integer", "format": "int64"},
        "conditions": {"type": "array", "items": _condition(), "x-kubernetes-list-type": "map",
                       "x-kubernetes-list-map-keys": ["type"]},
    }}


PRINTER_COLUMNS = (
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Weight", "type": "integer", "jsonPath": ".status.weight"},
    {"name": "Step", "type": "integer", "jsonPath": ".status.step"},
    {"name": "Last decision", "type": "string", "jsonPath": ".status.lastDecision.decision"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
)


def crd_manifest() -> dict[str, Any]:
    """The CustomResourceDefinition, as deploy/crd/canaries.canaryd.io.yaml holds it."""
    root = {"type": "object", "description": "A canary rollout judged by canaryd", "required": ["spec"],
            "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                           "metadata": {"type": "object"}, "spec": spec_schema(), "status": status_schema()}}
    version = {"name": VERSION, "served": True, "storage": True, "schema": {"openAPIV3Schema": root},
               "subresources": {"status": {}}, "additionalPrinterColumns": [dict(c) for c in PRINTER_COLUMNS]}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}",
                     "labels": {"app.kubernetes.io/name": "canaryd", "app.kubernetes.io/component": "crd"}},
        "spec": {"group": GROUP, "scope": "Namespaced",
                 "names": {"plural": PLURAL, "singular": KIND.lower(), "kind": KIND, "listKind": f"{KIND}List",
                           "shortNames": list(SHORT_NAMES), "categories": ["canaryd"]},
                 "versions": [version]},
    }
