"""`canaryd run` as a subprocess, driven over its HTTP API: what the end-to-end tests share."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from http_helpers import request, wait_for


class DaemonProcess:
    """The daemon runs with `config_path`; its logs go to `log_path`; every call names `namespace`."""

    def __init__(self, config_path: Path, log_path: Path, config: dict[str, Any], *,
                 args: tuple[str, ...] = (), namespace: str = "orion", name: str = "canaryd") -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.namespace = namespace
        self.name = name
        self.write_config(config)
        self.url = f"http://{config['server']['listen']}"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "canaryd.cli", "run", "--config", str(self.config_path), *args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)

    def write_config(self, config: dict[str, Any] | str) -> None:
        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        self.config_path.write_text(text)

    def wait_ready(self, timeout: float = 30.0) -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"canaryd exited with {self.proc.returncode}:\n{self.logs()[-3000:]}")
            return request("GET", self.url + "/healthz")[0] == 200
        wait_for(up, timeout=timeout, interval=0.1, what=f"{self.name} /healthz")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        """Every log line, parsed: with the default JSON format, a line that is not JSON fails here."""
        return [json.loads(line) for line in self.logs().splitlines() if line.strip()]

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def get(self, path: str) -> tuple[int, Any]:
        return request("GET", self.url + path)

    def canary(self, name: str) -> dict[str, Any]:
        status, body = self.get(f"/api/v1/canaries/{self.namespace}/{name}")
        assert status == 200, body
        return dict(body)

    def command(self, name: str, verb: str) -> tuple[int, Any]:
        return request("POST", f"{self.url}/api/v1/canaries/{self.namespace}/{name}/{verb}")

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels` (0 when there is none)."""
        status, text = self.get("/metrics")
        assert status == 200
        return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))
