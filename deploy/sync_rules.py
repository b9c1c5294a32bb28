"""Write deploy/prometheusrule.yaml from rules/*.yml, so the PrometheusRule and rules/ never differ.

    python deploy/sync_rules.py           # rewrite the file
    python deploy/sync_rules.py --check   # exit 1 if it is out of date (tests/test_deploy.py checks too)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"
TARGET = ROOT / "deploy" / "prometheusrule.yaml"
HEADER = """\
# GENERATED from rules/*.yml by deploy/sync_rules.py: edit rules/, then run it.
# prometheus-operator: the recording and alerting rules. Your Prometheus' ruleSelector must select
# this object (kube-prometheus-stack, for instance, wants the label `release: <its release name>`).
"""


def rule_groups() -> list[dict[str, Any]]:
    """Every group of rules/*.yml, in file-name order."""
    groups: list[dict[str, Any]] = []
    for path in sorted(RULES.glob("*.yml")):
        groups.extend(yaml.safe_load(path.read_text())["groups"])
    return groups


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # multi-line PromQL stays readable as a literal block
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render() -> str:
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "canaryd",
            "labels": {"app.kubernetes.io/name": "canaryd", "app.kubernetes.io/component": "rules"},
        },
        "spec": {"groups": rule_groups()},
    }
    return HEADER + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=4096, allow_unicode=True)


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if TARGET.read_text() != text:
            print(f"{TARGET.relative_to(ROOT)} is out of date: run python deploy/sync_rules.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
