"""`canaryd schema`: the published JSON Schema is the generated one, editors find it through the example's
modeline, and it accepts the shipped configs and refuses a misspelt key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from canaryd.config import ConfigError, json_schema, load_config, parse_config

jsonschema = pytest.importorskip("jsonschema")

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "schema" / "canaryd.schema.json"
EXAMPLE = REPO / "examples" / "canaryd.yaml"


def schema_output() -> dict:
    out = subprocess.run([sys.executable, "-m", "canaryd.cli", "schema"], capture_output=True, text=True,
                         timeout=60, check=True)
    return json.loads(out.stdout)


def configmap_config() -> dict:
    docs = yaml.safe_load_all((REPO / "deploy" / "configmap.yaml").read_text())
    (cm,) = [d for d in docs if d and d.get("kind") == "ConfigMap" and "config.yaml" in d.get("data", {})]
    return yaml.safe_load(cm["data"]["config.yaml"])


def test_schema_command_prints_the_published_schema() -> None:
    printed = schema_output()
    assert printed == json_schema()
    assert json.loads(PUBLISHED.read_text()) == printed, (
        "schema/canaryd.schema.json is stale: python -m canaryd.cli schema > schema/canaryd.schema.json")


def test_example_points_editors_at_the_schema() -> None:
    first = EXAMPLE.read_text().splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")
    target = (EXAMPLE.parent / first.split("$schema=", 1)[1].strip()).resolve()
    assert target == PUBLISHED.resolve()


def test_shipped_configs_validate_and_a_misspelt_key_does_not() -> None:
    validator = jsonschema.Draft202012Validator(schema_output())
    example = yaml.safe_load(EXAMPLE.read_text())
    assert example["version"] == 1
    for data in (example, configmap_config()):
        assert list(validator.iter_errors(data)) == []
    misspelt = {**example, "prometheus": {**example["prometheus"], "timout": "5s"}}
    errors = list(validator.iter_errors(misspelt))
    assert errors and "timout" in errors[0].message
    assert not validator.is_valid({**example, "version": 2})
    assert not validator.is_valid({**example, "canaries": [{**example["canaries"][0], "queries": "istoi"}]})
    assert validator.is_valid({**example, "canaries": [{**example["canaries"][0], "queries": "linkerd"}]})


def test_version_one_is_accepted_and_others_are_not() -> None:
    load_config(EXAMPLE)
    assert parse_config({"version": 1}) == parse_config({})
    with pytest.raises(ConfigError, match=r"version: must be 1 \(the only config version\), got 2"):
        parse_config({"version": 2})
