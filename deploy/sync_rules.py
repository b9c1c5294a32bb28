"""Write the rules of rules/*.yml into the install, so what Prometheus loads and rules/ never differ.

- deploy/prometheusrule.yaml: a PrometheusRule for prometheus-operator, all groups in one object;
- overlays/no-operator/rules-configmap.yaml: a ConfigMap holding each rules/*.yml verbatim, one key
  per file, to mount into a Prometheus without the operator (rule_files: [/etc/prometheus/canaryd/*.yml]).

    python deploy/sync_rules.py           # rewrite both files
    python deploy/sync_rules.py --check   # exit 1 if either is out of date (tests/test_deploy.py checks too)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"
TARGET = ROOT / "deploy" / "prometheusrule.yaml"
CONFIGMAP_TARGET = ROOT / "overlays" / "no-operator" / "rules-configmap.yaml"
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


CONFIGMAP_HEADER = """\
# GENERATED from rules/*.yml by deploy/sync_rules.py: edit rules/, then run it.
# The rules for a Prometheus without prometheus-operator: mount this ConfigMap into Prometheus
# (for instance at /etc/prometheus/canaryd) and add /etc/prometheus/canaryd/*.yml to rule_files.
"""


def rule_files() -> dict[str, str]:
    """Each rules/*.yml, verbatim, by file name."""
    return {path.name: path.read_text() for path in sorted(RULES.glob("*.yml"))}


def render_configmap() -> str:
    doc = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "canaryd-prometheus-rules",
            "labels": {"app.kubernetes.io/name": "canaryd", "app.kubernetes.io/component": "rules"},
        },
        "data": rule_files(),
    }
    return CONFIGMAP_HEADER + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=4096, allow_unicode=True)


def targets() -> dict[Path, str]:
    return {TARGET: render(), CONFIGMAP_TARGET: render_configmap()}


def main(argv: list[str]) -> int:
    stale = [path for path, text in targets().items() if not path.is_file() or path.read_text() != text]
    if "--check" in argv:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is out of date: run python deploy/sync_rules.py", file=sys.stderr)
        return 1 if stale else 0
    for path, text in targets().items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
