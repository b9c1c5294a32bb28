"""The demo's processes: real Prometheus and Alertmanager, and canaryd itself (`canaryd run`).

Each runs as a loopback subprocess in its own session (a Ctrl-C in the terminal reaches the demo,
which stops them in order), with its own directory and log file. `stop()` terminates, then kills;
a demo that dies without stopping them stops them at interpreter exit.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

# The Debian packages' paths; CANARYD_PROMETHEUS / CANARYD_ALERTMANAGER (or the older CANARYD_TEST_*)
# point elsewhere.
PROMETHEUS_BIN = (os.environ.get("CANARYD_PROMETHEUS") or os.environ.get("CANARYD_TEST_PROMETHEUS")
                  or "/usr/bin/prometheus")
ALERTMANAGER_BIN = (os.environ.get("CANARYD_ALERTMANAGER") or os.environ.get("CANARYD_TEST_ALERTMANAGER")
                    or "/usr/bin/prometheus-alertmanager")
HOST = "127.0.0.1"


class ServerError(RuntimeError):
    """A process did not start or answer; the message includes the tail of its log."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def missing_binaries() -> list[str]:
    """The Prometheus/Alertmanager binaries that are not installed (empty when all are)."""
    return [b for b in (PROMETHEUS_BIN, ALERTMANAGER_BIN) if not os.access(b, os.X_OK)]


def canaryd_command() -> list[str]:
    """canaryd's console script beside this interpreter (the same installation the demo imports),
    else the first on PATH."""
    here = shutil.which("canaryd", path=str(Path(sys.executable).parent)) or shutil.which("canaryd")
    if here is None:
        raise ServerError("canaryd's console script is not installed beside this Python or on PATH")
    return [here]


def _terminate(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`; reaps the process."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


class ServerProcess:
    """One subprocess listening on 127.0.0.1:port, logging to <workdir>/<name>.log.

    Without a `workdir` it makes a temporary one, which `cleanup()` removes. The tests and benchmarks
    build their servers on this class too.
    """

    name = "server"
    ready_path = "/-/ready"

    def __init__(self, *, workdir: Path | None = None, port: int | None = None, start_timeout: float = 30.0) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix=f"canaryd-{self.name}-")) if workdir is None else workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_port()
        self.start_timeout = start_timeout
        self.log_path = self.workdir / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer = weakref.finalize(self, lambda: None)

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Write config files before (re)starting."""

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def returncode(self) -> int | None:
        """The exit code once the process has exited; None while it runs (or before it started)."""
        return self._proc.poll() if self._proc is not None else None

    def start(self) -> None:
        if self.running:
            return
        self.prepare()
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            # Its own session: a Ctrl-C in the terminal reaches this process, which stops the children in order.
            self._proc = subprocess.Popen(self.command(), cwd=self.workdir, stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        # A script that dies without stop() must not leave servers behind: stop them at interpreter exit.
        self._finalizer = weakref.finalize(self, _terminate, self._proc)
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise ServerError(f"{self.name} exited with code {self._proc.returncode} during start\n"
                                  f"{self.log_tail()}")
            try:
                with self.urlopen(self.url + self.ready_path, timeout=1.0) as resp:
                    if resp.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() >= deadline:
                raise ServerError(f"{self.name} not ready after {self.start_timeout:g}s\n{self.log_tail()}")
            time.sleep(0.05)

    def urlopen(self, url: str | urllib.request.Request, timeout: float) -> Any:
        """Open a URL of this server; a server behind TLS or auth overrides it."""
        return urllib.request.urlopen(url, timeout=timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate, then kill after `timeout`. Safe to call twice, or on a process that never started."""
        proc, self._proc = self._proc, None
        self._finalizer.detach()
        if proc is not None:
            _terminate(proc, timeout)

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), like a crashed server."""
        proc, self._proc = self._proc, None
        self._finalizer.detach()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    def restart(self) -> None:
        """Stop and start again on the same port with the same data directory."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop, and remove the work directory when this object created it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self: Any) -> Any:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} running={self.running}>"


class PrometheusServer(ServerProcess):
    """Real Prometheus: `scrape_configs` as given, `rule_files` evaluated, alerts sent to `alertmanagers`."""

    name = "prometheus"

    def __init__(self, *, scrape_configs: Sequence[Mapping[str, Any]], rule_files: Sequence[Path],
                 alertmanagers: Sequence[str], interval: str, workdir: Path, port: int | None = None) -> None:
        super().__init__(workdir=workdir, port=port)
        self.scrape_configs = [dict(c) for c in scrape_configs]
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.alertmanagers = list(alertmanagers)
        self.interval = interval
        self.config_path = self.workdir / "prometheus.yml"
        self.data_dir = self.workdir / "data"

    def config(self) -> dict[str, Any]:
        return {
            # The 10s default scrape timeout would exceed a 1s interval, which Prometheus rejects.
            "global": {"scrape_interval": self.interval, "scrape_timeout": self.interval,
                       "evaluation_interval": self.interval},
            "scrape_configs": self.scrape_configs,
            "rule_files": [str(p) for p in self.rule_files],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": self.alertmanagers}]}]},
        }

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))

    def command(self) -> list[str]:
        return [PROMETHEUS_BIN, f"--config.file={self.config_path}", f"--web.listen-address={self.address}",
                f"--storage.tsdb.path={self.data_dir}", "--log.level=warn"]


class AlertmanagerServer(ServerProcess):
    """Real Alertmanager, no clustering, sending every alert at once to one webhook, with a bearer token.

    Each alert is its own group, `group_wait: 0s`, `group_interval: 1s`, and firing alerts are sent
    again every 2 s (canaryd answers those as duplicates); resolved alerts are sent too.
    """

    name = "alertmanager"

    def __init__(self, webhook_url: str, bearer_token: str, *, workdir: Path, port: int | None = None) -> None:
        super().__init__(workdir=workdir, port=port)
        self.webhook_url = webhook_url
        self.bearer_token = bearer_token
        self.config_path = self.workdir / "alertmanager.yml"
        self.data_dir = self.workdir / "data"

    def config(self) -> dict[str, Any]:
        webhook = {"url": self.webhook_url, "send_resolved": True,
                   "http_config": {"authorization": {"type": "Bearer", "credentials": self.bearer_token}}}
        return {
            "global": {"resolve_timeout": "5m"},
            "route": {"receiver": "canaryd", "group_by": ["..."], "group_wait": "0s", "group_interval": "1s",
                      "repeat_interval": "2s"},
            "receivers": [{"name": "canaryd", "webhook_configs": [webhook]}],
        }

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))

    def command(self) -> list[str]:
        return [ALERTMANAGER_BIN, f"--config.file={self.config_path}", f"--web.listen-address={self.address}",
                f"--storage.path={self.data_dir}",
                "--cluster.listen-address=",  # empty: no gossip port, no settling delay
                "--log.level=warn"]


class CanarydServer(ServerProcess):
    """`canaryd run --config <config_path>`, as an operator runs it; JSON logs to <workdir>/canaryd.log."""

    name = "canaryd"
    ready_path = "/healthz"

    def __init__(self, config_path: Path, *, port: int, workdir: Path) -> None:
        super().__init__(workdir=workdir, port=port, start_timeout=15.0)
        self.config_path = config_path

    def command(self) -> list[str]:
        return [*canaryd_command(), "run", "--config", str(self.config_path), "--log-format", "json"]
