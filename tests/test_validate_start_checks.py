"""`canaryd validate` runs every check `canaryd run` runs at start: a config it passes, run starts with.

The token files are read at start (server.read_token): a missing or empty one stops `run`, so it fails
`validate` too, naming the key and the file.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CONFIG = """\
prometheus: {{url: "http://127.0.0.1:1"}}
kubernetes: {{enabled: false}}
server: {{listen: "127.0.0.1:1", webhook_token_file: "{webhook}", api_token_file: "{api}"}}
canaries: []
"""


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "canaryd.cli", *argv], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("case", ["missing", "empty"])
def test_validate_refuses_the_token_files_that_run_refuses(tmp_path: Path, case: str) -> None:
    api = tmp_path / "api-token"
    api.write_text("s3cret\n")
    webhook = tmp_path / "webhook-token"
    if case == "empty":
        webhook.write_text("\n")
    path = tmp_path / "canaryd.yaml"
    path.write_text(CONFIG.format(webhook=webhook, api=api))

    validated = cli("validate", str(path))
    assert validated.returncode == 2, validated.stdout + validated.stderr
    assert f"{path}: server.webhook_token_file: " in validated.stderr and str(webhook) in validated.stderr
    assert "Traceback" not in validated.stderr
    ran = cli("run", "--config", str(path))  # and run refuses it before it listens
    assert ran.returncode != 0 and str(webhook) in ran.stderr

    webhook.write_text("hook\n")
    assert cli("validate", str(path)).returncode == 0
