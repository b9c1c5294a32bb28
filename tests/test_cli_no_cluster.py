"""What a newcomer sees without a cluster or without Prometheus: one line each, no library noise, and the
exit codes the README's CLI table lists (2: no kubeconfig or no API server, nothing was changed).

Every command runs as a subprocess with HOME pointing at an empty directory and KUBECONFIG unset, as on
a laptop that never had a cluster.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

SERVICE = "auth-service"
HINT = "point canaryd at a cluster with --kubeconfig FILE, KUBECONFIG=FILE or kubernetes.kubeconfig in the config"


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port nothing listens on (bound, never listened, so no one else takes it meanwhile)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    return {**env, "HOME": str(home)}


def _run_all(commands: dict[str, list[str]], home: Path) -> dict[str, subprocess.CompletedProcess[str]]:
    """All at once: each subprocess pays the interpreter's start-up."""
    procs = {name: subprocess.Popen([sys.executable, "-m", "canaryd.cli", *argv], env=_env(home), text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
             for name, argv in commands.items()}
    done = {}
    for name, p in procs.items():
        out, err = p.communicate(timeout=60)
        done[name] = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    return done


def test_no_kubeconfig_is_one_line_and_exit_2(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    commands = {
        "status": ["status", SERVICE],
        "promote": ["promote", SERVICE],
        "rollback": ["rollback", SERVICE],
        "rollback --emergency": ["rollback", SERVICE, "--emergency"],
        "deploy": ["deploy", SERVICE, "ghcr.io/orion/auth:v2"],
    }
    default = home / ".kube" / "config"
    for name, proc in _run_all(commands, home).items():
        command = name.split()[0]
        assert proc.returncode == 2, (name, proc.stderr)
        assert proc.stdout == ""
        (line,) = proc.stderr.splitlines()  # no "Config not found" from the library before it
        assert line.startswith(f"canaryd {command}: "), line
        assert f"no kubeconfig: {default} does not exist and KUBECONFIG is not set" in line, line
        assert line.endswith(HINT), line


def test_a_missing_kubeconfig_file_is_named(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    given = tmp_path / "nosuch.yaml"
    procs = _run_all({"flag": ["status", SERVICE, "--kubeconfig", str(given)]}, home)
    env = {**_env(home), "KUBECONFIG": f"{given}{os.pathsep}{tmp_path / 'other.yaml'}"}  # a list, none there
    by_env = subprocess.run([sys.executable, "-m", "canaryd.cli", "promote", SERVICE], env=env, text=True,
                            capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert procs["flag"].returncode == 2 and procs["flag"].stderr.splitlines() == [
        f"canaryd status: the kubeconfig {given} does not exist; {HINT}"]
    assert by_env.returncode == 2 and by_env.stderr.splitlines() == [
        f"canaryd promote: no kubeconfig: KUBECONFIG={env['KUBECONFIG']} names no existing file; {HINT}"]


def test_an_unreachable_api_server_is_one_line_and_exit_2(tmp_path: Path, closed_port: int) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{closed_port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))
    kc = ["--kubeconfig", str(kubeconfig)]
    commands = {"status": ["status", SERVICE, *kc], "promote": ["promote", SERVICE, *kc],
                "rollback": ["rollback", SERVICE, "--emergency", *kc]}
    for name, proc in _run_all(commands, tmp_path).items():
        assert proc.returncode == 2, (name, proc.stderr)
        (line,) = proc.stderr.splitlines()
        assert line.startswith(f"canaryd {name}: cannot reach the cluster: VirtualService orion/{SERVICE} get "
                               "failed: cannot reach the API server: "), line
        assert line.endswith(f"; check that it is up, or {HINT}"), line


def test_monitor_with_prometheus_down_says_it_once_per_refresh(tmp_path: Path, closed_port: int) -> None:
    """monitor needs no cluster; Prometheus down is said once per refresh, in its status line, not once per
    query on stderr (the client's log lines)."""
    home = tmp_path / "home"
    home.mkdir()
    url = f"http://127.0.0.1:{closed_port}"
    proc = _run_all({"monitor": ["monitor", SERVICE, "--prometheus-url", url, "--interval", "0.5",
                                 "--duration", "0.02"]}, home)["monitor"]
    assert proc.returncode == 3, proc.stdout + proc.stderr  # no data: hold
    assert proc.stderr == ""
    status_lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(status_lines) >= 2, proc.stdout  # at least two refreshes
    pattern = (rf"\[\d\d:\d\d:\d\d\] orion/{SERVICE}: NO DATA after \d+s, 4 of 4 queries failed: "
               rf"Prometheus connection error: {re.escape(url)}/api/v1/query: .*")
    for line in status_lines:
        assert re.fullmatch(pattern, line), line
        assert line.count("Prometheus connection error") == 1
