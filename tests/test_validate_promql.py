"""`canaryd validate` parses every rendered query as PromQL and names the key path of one that does not
parse; the daemon would otherwise skip that metric at run time."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from canaryd.config import load_config
from canaryd.config.promql import promql_problems

REPO = Path(__file__).resolve().parents[1]
CANARY = """\
canaries:
  - name: auth
    namespace: orion
    route: auth
    stable: {deployment: auth-stable, selector: 'job="auth-stable"'}
    canary: {deployment: auth-canary, selector: 'job="auth-canary"'}
"""


def validate(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "canaryd.yaml"
    path.write_text(textwrap.dedent(text))
    return subprocess.run([sys.executable, "-m", "canaryd.cli", "validate", str(path)], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("query", ["rate(foo{{{selector}}}[5m]", "rate(foo[5m]"])
def test_unbalanced_query_is_rejected_with_its_key_path(tmp_path: Path, query: str) -> None:
    out = validate(tmp_path, CANARY + f"    queries:\n      cpu: '{query}'\n")
    assert out.returncode == 2 and "OK" not in out.stdout
    assert "canaryd.yaml: canaries[0].queries.cpu:" in out.stderr, out.stderr


def test_unbalanced_gauge_says_what_the_parser_found(tmp_path: Path) -> None:
    out = validate(tmp_path, CANARY + "    queries:\n      memory: 'max(container_memory{{{selector}}}) / (2'\n")
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(f"{tmp_path / 'canaryd.yaml'}: canaries[0].queries.memory: is not valid PromQL (")
    assert 'job="auth-stable"' in line  # the query as Prometheus would have received it


def test_valid_queries_presets_and_the_example_pass(tmp_path: Path) -> None:
    gauge = ('100 * sum(rate(container_cpu_usage_seconds_total{{namespace="{namespace}",pod=~"{deployment}-.*"}}'
             '[{window}])) / sum(kube_pod_container_resource_limits{{namespace="{namespace}",'
             'pod=~"{deployment}-.*",resource="cpu"}})')
    out = validate(tmp_path, CANARY + f"    queries:\n      cpu: '{gauge}'\n")
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr
    for preset in ("istio", "linkerd", "default"):
        (tmp_path / "p.yaml").write_text(CANARY + f"    queries: {preset}\n")
        assert promql_problems(load_config(tmp_path / "p.yaml")) == []
    assert promql_problems(load_config(REPO / "examples" / "canaryd.yaml")) == []
