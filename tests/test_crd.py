"""The Canary CRD: generated from the config model, structural, and validating as an API server does.

A real API server installs a CRD only when its schema is structural, and with strict field validation
(kubectl's default since 1.27) it refuses a field the schema does not declare, unless the field's object
is a map (`additionalProperties`) or preserves unknown fields. jsonschema alone does not read a
structural schema that way (a closed object there has no `additionalProperties: false`), so the
validator below does.
"""

from __future__ import annotations

import copy
import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryd.config import json_schema
from canaryd.crd import OWN_KEYS, PRINTER_COLUMNS, crd_manifest

ROOT = Path(__file__).resolve().parent.parent
CRD_FILE = ROOT / "deploy" / "crd" / "canaries.canaryd.io.yaml"
EXAMPLE = ROOT / "examples" / "canary.yaml"
_JUNCTORS = ("anyOf", "allOf", "oneOf", "not")
_INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]
_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool}


def _schema() -> dict[str, Any]:
    (version,) = crd_manifest()["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


# ---------------------------------------------------------------------------------------- structural
def structural_problems(node: dict[str, Any], path: str = "", *, in_junctor: bool = False) -> list[str]:
    """Why a schema is not structural (Kubernetes' rules), empty when it is."""
    out: list[str] = []
    if "properties" in node and "additionalProperties" in node:
        out.append(f"{path}: additionalProperties beside properties")
    if in_junctor:
        out += [f"{path}: {k} inside a logical junctor" for k in
                ("description", "type", "default", "additionalProperties", "nullable") if k in node]
    elif not node.get("x-kubernetes-int-or-string") and not node.get("x-kubernetes-preserve-unknown-fields"):
        if not isinstance(node.get("type"), str) or not node["type"]:
            out.append(f"{path}: no single type")
    if node.get("uniqueItems") is True:
        out.append(f"{path}: uniqueItems: true is refused")
    for k in ("exclusiveMinimum", "exclusiveMaximum"):
        if k in node and not isinstance(node[k], bool):
            out.append(f"{path}: {k} must be a flag in OpenAPI v3")
    if "pattern" in node:
        re.compile(node["pattern"])
        if re.search(r"\(\?[=!<]|\\[1-9]", node["pattern"]):
            out.append(f"{path}: the pattern is not RE2 (lookaround or backreference)")
    for name, sub in (node.get("properties") or {}).items():
        out += structural_problems(sub, f"{path}.{name}", in_junctor=in_junctor)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            out += structural_problems(node[key], f"{path}.{key}", in_junctor=in_junctor)
    for j in _JUNCTORS:
        if j not in node:
            continue
        if node.get("x-kubernetes-int-or-string") and j == "anyOf" and node[j] == _INT_OR_STRING:
            continue  # the one pattern allowed to name types inside a junctor
        for i, sub in enumerate(node[j] if isinstance(node[j], list) else [node[j]]):
            out += structural_problems(sub, f"{path}.{j}[{i}]", in_junctor=True)
    return out


# ------------------------------------------------------------------------------- strict validation
def _typed(node: dict[str, Any], value: Any, path: str) -> list[str]:
    if node.get("x-kubernetes-int-or-string"):
        ok = isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
        return [] if ok else [f"{path}: must be an integer or a string, got {value!r}"]
    kind = node.get("type")
    if kind is None:
        return []
    if kind in ("integer", "number"):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and (kind == "number" or isinstance(value, int) or float(value).is_integer())
    else:
        ok = isinstance(value, _TYPES[kind])
    return [] if ok else [f"{path}: must be {kind}, got {value!r}"]


def _values(node: dict[str, Any], value: Any, path: str) -> list[str]:
    out = []
    if "enum" in node and value not in node["enum"]:
        out.append(f"{path}: must be one of {node['enum']}, got {value!r}")
    if isinstance(value, str):
        if "pattern" in node and not re.search(node["pattern"], value):
            out.append(f"{path}: does not match {node['pattern']}")
        if len(value) > node.get("maxLength", len(value)) or len(value) < node.get("minLength", 0):
            out.append(f"{path}: wrong length")
    if isinstance(value, int | float) and not isinstance(value, bool):
        lo, hi = node.get("minimum"), node.get("maximum")
        if lo is not None and (value < lo or (node.get("exclusiveMinimum") and value == lo)):
            out.append(f"{path}: below the minimum {lo}")
        if hi is not None and (value > hi or (node.get("exclusiveMaximum") and value == hi)):
            out.append(f"{path}: above the maximum {hi}")
    if isinstance(value, list) and not node.get("minItems", 0) <= len(value) <= node.get("maxItems", len(value)):
        out.append(f"{path}: wrong number of items")
    return out


def strict_errors(node: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Errors an API server with strict field validation reports for `value` (an empty list: accepted)."""
    if value is None:
        return [] if node.get("nullable") else [f"{path}: must not be null"]
    out = _typed(node, value, path)
    if out:
        return out
    out = _values(node, value, path)
    if isinstance(value, dict):
        props = node.get("properties") or {}
        out += [f"{path}.{k}: Required value" for k in node.get("required", ()) if k not in value]
        for key, sub in value.items():
            where = f"{path}.{key}"
            if key in props:
                out += strict_errors(props[key], sub, where)
            elif isinstance(node.get("additionalProperties"), dict):
                out += strict_errors(node["additionalProperties"], sub, where)
            elif not node.get("x-kubernetes-preserve-unknown-fields"):
                out.append(f'unknown field "{where.lstrip(".")}"')
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        for i, item in enumerate(value):
            out += strict_errors(node["items"], item, f"{path}[{i}]")
    return out


def canary_errors(obj: dict[str, Any]) -> list[str]:
    """The object as the API server checks it: ObjectMeta is the server's own, the rest by the schema."""
    schema = copy.deepcopy(_schema())
    schema["properties"]["metadata"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return strict_errors(schema, obj)


# ------------------------------------------------------------------------------------------- tests
def test_committed_crd_is_the_generated_one() -> None:
    spec = importlib.util.spec_from_file_location("crd_script", ROOT / "scripts" / "crd.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert CRD_FILE.read_text() == script.render(), "deploy/crd is stale: run python scripts/crd.py"
    assert yaml.safe_load(CRD_FILE.read_text()) == crd_manifest()


def test_crd_names_scope_subresources_and_columns() -> None:
    crd = crd_manifest()
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "canaries.canaryd.io"
    assert spec["group"] == "canaryd.io" and spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "Canary" and spec["names"]["shortNames"] == ["cnr"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Phase", "Weight", "Step", "Last decision",
                                                                       "Age"]
    assert [dict(c) for c in PRINTER_COLUMNS] == version["additionalPrinterColumns"]


def test_schema_is_structural() -> None:
    assert structural_problems(_schema()) == []


def test_structural_check_is_not_vacuous() -> None:
    bad = copy.deepcopy(_schema())
    bad["properties"]["spec"]["additionalProperties"] = False
    bad["properties"]["spec"]["properties"]["mesh"].pop("type")
    bad["properties"]["spec"]["properties"]["route"] = {"anyOf": [{"type": "string"}, {"type": "null"}]}
    problems = structural_problems(bad)
    assert any("additionalProperties beside properties" in p for p in problems)
    assert any(p.startswith(".properties.mesh") or ".mesh: no single type" in p for p in problems)
    assert any("type inside a logical junctor" in p for p in problems)


def test_unknown_fields_are_preserved_only_where_the_daemon_validates_a_union() -> None:
    found: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        if node.get("x-kubernetes-preserve-unknown-fields"):
            found.append(path)
        for name, sub in (node.get("properties") or {}).items():
            walk(sub, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    walk(_schema(), "")
    assert found == [".spec.queries"]  # a preset's name or a mapping: checked by the daemon (Ready=False)


def test_spec_has_the_keys_of_a_config_entry() -> None:
    entry = json_schema()["properties"]["canaries"]["items"]
    spec = _schema()["properties"]["spec"]
    assert set(spec["properties"]) == set(entry["properties"]) - set(OWN_KEYS)
    assert set(spec["required"]) == set(entry["required"]) - set(OWN_KEYS)
    assert not any("default" in p for p in spec["properties"].values()), "defaults come from the daemon's config"


def test_schema_accepts_the_example() -> None:
    example = yaml.safe_load(EXAMPLE.read_text())
    assert example["apiVersion"] == "canaryd.io/v1alpha1" and example["kind"] == "Canary"
    assert canary_errors(example) == []


@pytest.mark.parametrize(("edit", "error"), [
    (lambda s: s.update(stpe_duration="5m"), 'unknown field "spec.stpe_duration"'),
    (lambda s: s["stable"].update(deploymnet="x"), 'unknown field "spec.stable.deploymnet"'),
    (lambda s: s["thresholds"].update(error_rat=5), 'unknown field "spec.thresholds.error_rat"'),
    (lambda s: s.update(name="auth-service"), 'unknown field "spec.name"'),
    (lambda s: s.update(interval=[30]), "must be an integer or a string"),
    (lambda s: s.update(interval="30 seconds"), "does not match"),
    (lambda s: s.update(traffic_steps=[5, 250]), "above the maximum 100"),
    (lambda s: s.update(mesh="consul"), "must be one of"),
    (lambda s: s.pop("route"), ".spec.route: Required value"),
])
def test_schema_rejects_what_the_config_rejects(edit: Any, error: str) -> None:
    example = yaml.safe_load(EXAMPLE.read_text())
    edit(example["spec"])
    errors = canary_errors(example)
    assert any(error in e for e in errors), errors


def test_accepted_specs_of_every_shape() -> None:
    example = yaml.safe_load(EXAMPLE.read_text())
    spec = example["spec"]
    spec.update(queries="istio", interval=30, max_step_duration=None, canary_replicas=None,
                thresholds={"error_rate": 2.5, "cpu": None})
    spec["canary"]["backend"] = None
    assert canary_errors(example) == []
    spec["queries"] = {"requests": "istio_requests_total{{{selector}}}", "latency_unit": "milliseconds"}
    assert canary_errors(example) == []
