"""Cluster commands with no cluster: `deploy --dry-run` still prints the plan of its flags."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _canaryd(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env.update(HOME=str(home))
    return subprocess.run([sys.executable, "-m", "canaryd.cli", *args], capture_output=True, text=True,
                          env=env, timeout=60, cwd=home)


def test_deploy_dry_run_without_a_kubeconfig_prints_the_plan_of_its_flags(tmp_path: Path) -> None:
    run = _canaryd("deploy", "auth-service", "ghcr.io/orion/auth:v2", "--dry-run", "--traffic-steps", "10,50,100",
                   "--step-duration", "2", "--mesh", "linkerd", home=tmp_path)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("dry run without a cluster (kubernetes: no kubeconfig")
    assert "nothing was read or changed" in lines[0]
    assert "would set image deployment/auth-service-canary" in lines[1] and "ghcr.io/orion/auth:v2" in lines[1]
    steps = [line for line in lines if line.startswith("- step ")]
    assert [s.split("canary ")[1].split(" ")[0] for s in steps] == ["10", "50", "100"]
    assert all("at least 120s" in s for s in steps)
    assert "Traceback" not in run.stderr and run.stderr == ""


def test_deploy_without_a_kubeconfig_is_one_line_and_exit_2(tmp_path: Path) -> None:
    run = _canaryd("deploy", "auth-service", "ghcr.io/orion/auth:v2", home=tmp_path)
    assert run.returncode == 2
    assert run.stdout == ""
    assert len(run.stderr.strip().splitlines()) == 1 and "no kubeconfig" in run.stderr
