"""Real Prometheus, Alertmanager and test exporters as plain loopback subprocesses (for tests and bench/).

`ExporterProcess` runs `tests/exporter.py`. Usable from pytest (see conftest.py) and from plain scripts:

    with PrometheusServer(["127.0.0.1:9101"], workdir=Path("/tmp/p")) as prom:
        prom.wait_for_targets_up()
        print(prom.query('up'))

Each server runs in its own directory on a free 127.0.0.1 port. `stop()` terminates, then kills;
`restart()` keeps the port and the data directory, so a test can take Prometheus away mid-rollout
and bring it back with its history. The process launcher itself is the demo's (`canaryd_demo.servers`);
besides it only the standard library and PyYAML are used, so a script can import this without pytest.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

# The process launcher is the demo's (canaryd_demo.servers, installed with the test dependencies): one
# implementation of start/ready/stop for the demo, the tests and the benchmarks.
from canaryd_demo.servers import (  # noqa: F401 - re-exported for the tests and bench/
    ALERTMANAGER_BIN,
    HOST,
    PROMETHEUS_BIN,
    ServerError,
    ServerProcess,
    free_port,
    missing_binaries,
)

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], *, timeout: float = 20.0, interval: float = 0.1, what: str = "condition"
) -> T:
    """Poll `predicate` until it returns something truthy; return that. Exceptions count as not yet."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except Exception as e:  # noqa: BLE001 - polling: any failure means "not yet"
            last_exc = e
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(interval)


def http_json(
    method: str, url: str, body: Any = None, *, timeout: float = 5.0, headers: Mapping[str, str] | None = None
) -> Any:
    """A small JSON-over-HTTP helper for scripts and sync test code. Raises urllib's HTTPError on >= 400."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        raw = resp.read()
    return json.loads(raw) if raw.strip() else None


class PrometheusServer(ServerProcess):
    """Real Prometheus scraping `scrape_targets` (host:port) every `scrape_interval`.

    The targets form one job, "exporters", with `honor_labels: true`, so each exporter's own `job` and
    other labels (e.g. namespace) are what the series carry. `alertmanagers` are host:port addresses
    that rule alerts are sent to.
    """

    name = "prometheus"

    def __init__(
        self,
        scrape_targets: Sequence[str] = (),
        rule_files: Sequence[Path] = (),
        *,
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
        extra_scrape_configs: Sequence[Mapping[str, Any]] = (),
        alertmanagers: Sequence[str] = (),
        workdir: Path | None = None,
        port: int | None = None,
        start_timeout: float = 30.0,
    ):
        super().__init__(workdir=workdir, port=port, start_timeout=start_timeout)
        self.scrape_targets = list(scrape_targets)
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval
        self.extra_scrape_configs = [dict(c) for c in extra_scrape_configs]
        self.alertmanagers = list(alertmanagers)
        self.config_path = self.workdir / "prometheus.yml"
        self.data_dir = self.workdir / "data"

    def config(self) -> dict[str, Any]:
        scrape_configs: list[dict[str, Any]] = []
        if self.scrape_targets:
            scrape_configs.append(
                {
                    "job_name": "exporters",
                    "honor_labels": True,
                    "static_configs": [{"targets": self.scrape_targets}],
                }
            )
        scrape_configs.extend(self.extra_scrape_configs)
        cfg: dict[str, Any] = {
            "global": {
                "scrape_interval": self.scrape_interval,
                # The 10s default would exceed a 1s interval, which Prometheus rejects.
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.evaluation_interval,
            },
            "scrape_configs": scrape_configs,
        }
        if self.rule_files:
            cfg["rule_files"] = [str(p) for p in self.rule_files]
        if self.alertmanagers:
            cfg["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": self.alertmanagers}]}]}
        return cfg

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))

    def command(self) -> list[str]:
        return [
            PROMETHEUS_BIN,
            f"--config.file={self.config_path}",
            f"--web.listen-address={self.address}",
            f"--storage.tsdb.path={self.data_dir}",
            "--web.enable-lifecycle",
            "--log.level=warn",
        ]

    def reload(self, *, scrape_targets: Sequence[str] | None = None) -> None:
        """Rewrite the config (optionally with new targets) and POST /-/reload."""
        if scrape_targets is not None:
            self.scrape_targets = list(scrape_targets)
        self.prepare()
        req = urllib.request.Request(self.url + "/-/reload", method="POST")
        with self.urlopen(req, timeout=10):
            pass

    # --- sync query helpers for tests and scripts --------------------------------------------------
    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with self.urlopen(url, timeout=10) as resp:
            body = json.loads(resp.read())
        if body.get("status") != "success":
            raise ServerError(f"Prometheus {path} failed: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the raw `result` list."""
        return list(self.api("query", query=expr)["result"])

    def wait_for_targets_up(self, count: int | None = None, timeout: float = 20.0) -> None:
        """Wait until `count` (default: all configured) targets have been scraped successfully."""
        want = len(self.scrape_targets) if count is None else count

        def up() -> bool:
            active = self.api("targets", state="active")["activeTargets"]
            return sum(1 for t in active if t.get("health") == "up") >= want

        wait_until(up, timeout=timeout, what=f"{want} Prometheus targets up")

    def wait_for_scrapes(self, count: int, timeout: float = 30.0) -> None:
        """Wait until every configured target has been scraped successfully at least `count` times, so
        that `increase(...[w])` over a window w < count scrape intervals sees complete data."""
        want = len(self.scrape_targets)

        def enough() -> bool:
            rows = self.query("sum_over_time(up[1h])")
            return len(rows) >= want and all(float(r["value"][1]) >= count for r in rows)

        wait_until(enough, timeout=timeout, interval=0.2, what=f"{count} scrapes of {want} targets")

    def wait_for_samples(self, expr: str, min_series: int = 1, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Wait until the instant query `expr` returns at least `min_series` series."""

        def enough() -> list[dict[str, Any]] | None:
            result = self.query(expr)
            return result if len(result) >= min_series else None

        return wait_until(enough, timeout=timeout, what=f"{min_series} series for {expr}")


def make_test_pki(directory: Path, *, hosts: Sequence[str] = ("127.0.0.1", "localhost")) -> dict[str, Path]:
    """A CA, a server certificate for `hosts` and a client certificate, made with the openssl CLI (EC keys,
    valid two days). Returns the paths by name: ca, ca_key, server_cert, server_key, client_cert, client_key."""
    directory.mkdir(parents=True, exist_ok=True)
    d = {n: directory / f for n, f in (("ca", "ca.crt"), ("ca_key", "ca.key"), ("server_cert", "server.crt"),
                                       ("server_key", "server.key"), ("client_cert", "client.crt"),
                                       ("client_key", "client.key"))}
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", *ec, "-keyout", str(d["ca_key"]), "-out", str(d["ca"]), "-days", "2",
        "-subj", "/CN=canaryd test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    san = ",".join(f"IP:{h}" if h.replace(".", "").isdigit() or ":" in h else f"DNS:{h}" for h in hosts)
    for role, usage, extra in (("server", "serverAuth", f"subjectAltName={san}\n"), ("client", "clientAuth", "")):
        ext = directory / f"{role}.ext"
        ext.write_text(f"{extra}extendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"
                       "authorityKeyIdentifier=keyid,issuer\nsubjectKeyIdentifier=hash\n")
        csr = directory / f"{role}.csr"
        run("req", *ec, "-keyout", str(d[f"{role}_key"]), "-out", str(csr), "-subj", f"/CN=canaryd test {role}")
        run("x509", "-req", "-in", str(csr), "-CA", str(d["ca"]), "-CAkey", str(d["ca_key"]), "-CAcreateserial",
            "-out", str(d[f"{role}_cert"]), "-days", "2", "-extfile", str(ext))
    return d


class SecuredPrometheusServer(PrometheusServer):
    """Prometheus started with `--web.config.file` (`web_config`: tls_server_config, basic_auth_users, as
    Prometheus documents them). The sync helpers reach it with `client_ssl` and `client_auth` (user,
    password), as any client of a secured Prometheus must."""

    def __init__(self, *args: Any, web_config: Mapping[str, Any], client_ssl: Any = None,
                 client_auth: tuple[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.web_config = dict(web_config)
        self.client_ssl = client_ssl
        self.client_auth = client_auth
        self.web_config_path = self.workdir / "web.yml"

    @property
    def url(self) -> str:
        return f"{'https' if 'tls_server_config' in self.web_config else 'http'}://{self.address}"

    def prepare(self) -> None:
        super().prepare()
        self.web_config_path.write_text(yaml.safe_dump(self.web_config, sort_keys=False))

    def command(self) -> list[str]:
        return [*super().command(), f"--web.config.file={self.web_config_path}"]

    def urlopen(self, url: str | urllib.request.Request, timeout: float) -> Any:
        req = url if isinstance(url, urllib.request.Request) else urllib.request.Request(url)
        if self.client_auth is not None:
            token = base64.b64encode(":".join(self.client_auth).encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        return urllib.request.urlopen(req, timeout=timeout, context=self.client_ssl)


class AlertmanagerServer(ServerProcess):
    """Real Alertmanager, no clustering, routing every alert to one webhook (`webhook_url`).

    Each alert is its own group (`group_by: ['...']`) and `group_wait: 0s`, so a POSTed alert is sent
    on at once; `group_interval: 1s`; resolved alerts are sent too. With `bearer_token`, the webhook
    carries `Authorization: Bearer <token>`.
    """

    name = "alertmanager"

    def __init__(
        self,
        webhook_url: str,
        bearer_token: str | None = None,
        *,
        group_by: Sequence[str] = ("...",),
        group_wait: str = "0s",
        group_interval: str = "1s",
        repeat_interval: str = "2s",
        resolve_timeout: str = "5m",
        workdir: Path | None = None,
        port: int | None = None,
        start_timeout: float = 30.0,
    ):
        super().__init__(workdir=workdir, port=port, start_timeout=start_timeout)
        self.webhook_url = webhook_url
        self.bearer_token = bearer_token
        self.group_by = list(group_by)
        self.group_wait = group_wait
        self.group_interval = group_interval
        self.repeat_interval = repeat_interval
        self.resolve_timeout = resolve_timeout
        self.config_path = self.workdir / "alertmanager.yml"
        self.data_dir = self.workdir / "data"

    def config(self) -> dict[str, Any]:
        webhook: dict[str, Any] = {"url": self.webhook_url, "send_resolved": True}
        if self.bearer_token is not None:
            webhook["http_config"] = {"authorization": {"type": "Bearer", "credentials": self.bearer_token}}
        return {
            "global": {"resolve_timeout": self.resolve_timeout},
            "route": {
                "receiver": "canaryd",
                "group_by": self.group_by,
                "group_wait": self.group_wait,
                "group_interval": self.group_interval,
                "repeat_interval": self.repeat_interval,
            },
            "receivers": [{"name": "canaryd", "webhook_configs": [webhook]}],
        }

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(self.config(), sort_keys=False))

    def command(self) -> list[str]:
        return [
            ALERTMANAGER_BIN,
            f"--config.file={self.config_path}",
            f"--web.listen-address={self.address}",
            f"--storage.path={self.data_dir}",
            "--cluster.listen-address=",  # empty: no gossip port, no settling delay
            "--log.level=warn",
        ]

    def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """POST /api/v2/alerts. Each alert: {"labels": {...}, "annotations": {...}, "startsAt"?, "endsAt"?}."""
        http_json("POST", f"{self.url}/api/v2/alerts", list(alerts), timeout=10)

    def alerts(self) -> list[dict[str, Any]]:
        """GET /api/v2/alerts: what Alertmanager currently holds."""
        return list(http_json("GET", f"{self.url}/api/v2/alerts", timeout=10))


EXPORTER_SCRIPT = Path(__file__).resolve().parent / "exporter.py"


class ExporterProcess(ServerProcess):
    """A `tests/exporter.py` subprocess simulating one or more services (see that file)."""

    name = "exporter"
    ready_path = "/metrics"

    def __init__(
        self,
        jobs: Sequence[str] = ("service",),
        *,
        labels: Mapping[str, str] | None = None,
        rps: float = 100.0,
        error_rate: float = 0.0,
        client_error_rate: float = 0.0,
        latency_median: float = 0.05,
        latency_sigma: float = 0.5,
        cpu: float | None = None,
        memory: float | None = None,
        python: str = sys.executable,
        workdir: Path | None = None,
        port: int | None = None,
        start_timeout: float = 15.0,
    ):
        super().__init__(workdir=workdir, port=port, start_timeout=start_timeout)
        self.jobs = [jobs] if isinstance(jobs, str) else list(jobs)
        self.labels = dict(labels or {})
        self.settings: dict[str, float | None] = {
            "rps": rps,
            "error_rate": error_rate,
            "client_error_rate": client_error_rate,
            "latency_median": latency_median,
            "latency_sigma": latency_sigma,
            "cpu": cpu,
            "memory": memory,
        }
        self.python = python

    def command(self) -> list[str]:
        cmd = [self.python, str(EXPORTER_SCRIPT), "--host", HOST, "--port", str(self.port)]
        for job in self.jobs:
            cmd += ["--job", job]
        for k, v in self.labels.items():
            cmd += ["--label", f"{k}={v}"]
        for k, v in self.settings.items():
            if v is not None:
                cmd += [f"--{k.replace('_', '-')}", repr(float(v))]
        return cmd

    def control(self, job: str | None = None, **settings: float) -> dict[str, Any]:
        """Change rps, error_rate, client_error_rate, latency_median, latency_sigma, cpu, memory at runtime,
        for one job or (job=None) all of them. Later restarts keep the change only when job is None."""
        body: dict[str, Any] = dict(settings)
        if job is not None:
            body["job"] = job
        else:
            self.settings.update(settings)
        return dict(http_json("POST", f"{self.url}/control", body))

    def state(self) -> dict[str, Any]:
        """The exporter's exact counters per job (GET /state), to compare with what Prometheus read."""
        return dict(http_json("GET", f"{self.url}/state"))
