"""json_schema(): the config as JSON Schema, derived from the same fields as the loader."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from canaryd.config import json_schema, load_config, parse_config

jsonschema = pytest.importorskip("jsonschema")

REPO = Path(__file__).resolve().parents[1]


def _validator() -> object:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _configmap_config() -> dict:
    docs = yaml.safe_load_all((REPO / "deploy" / "configmap.yaml").read_text())
    (cm,) = [d for d in docs if d and d.get("kind") == "ConfigMap" and "config.yaml" in d.get("data", {})]
    return yaml.safe_load(cm["data"]["config.yaml"])


def test_schema_is_draft_2020_12() -> None:
    assert json_schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    _validator()


def test_example_and_configmap_validate() -> None:
    validator = _validator()
    example = yaml.safe_load((REPO / "examples" / "canaryd.yaml").read_text())
    load_config(REPO / "examples" / "canaryd.yaml")
    for data in (example, _configmap_config(), {}, None):
        parse_config(data)
        assert list(validator.iter_errors(data)) == []


def test_schema_rejects_what_the_loader_rejects() -> None:
    validator = _validator()
    for bad in ({"defaults": {"step_duraton": "5m"}}, {"defaults": {"mesh": "istoi"}},
                {"defaults": {"thresholds": {"error_rate": 101}}}, {"prometheus": {"timeout": "-5m"}},
                {"canaries": [{"name": "a"}]}, {"server": {"listen": "nohost"}}):
        assert list(validator.iter_errors(bad)), bad


def test_schema_defaults_are_the_reference_defaults() -> None:
    props = json_schema()["properties"]
    defaults = props["defaults"]["properties"]
    assert defaults["step_duration"]["default"] == "5m"
    assert defaults["thresholds"]["properties"]["error_rate"]["default"] == 5
    assert props["server"]["properties"]["listen"]["default"] == "127.0.0.1:8080"
    assert "settings" not in props["canaries"]["items"]["properties"]
    assert "mesh" in props["canaries"]["items"]["properties"]
