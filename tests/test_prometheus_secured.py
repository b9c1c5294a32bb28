"""Prometheus as it is deployed: behind TLS (a CA the test makes, a client certificate), basic auth and a
tenant gateway. A real Prometheus runs with `--web.config.file`; in front of it a small loopback gateway
serves it under /prometheus only to requests with the right `X-Scope-OrgID`, as Mimir's does.

Three `canaryd run` daemons read the same series: straight through TLS + basic auth, through the
gateway, and with a wrong password. The first two roll a bad canary back; the third holds it with a
reason that says why, and no password ever shows in a log line, an API answer or an error.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from daemon_process import DaemonProcess
from http_helpers import wait_for
from servers import ExporterProcess, SecuredPrometheusServer, free_port, make_test_pki, missing_binaries

NS = "orion"
USER = "canaryd"
PASSWORD = "s3cret-pass"
# bcrypt of PASSWORD (cost 4), as Prometheus' basic_auth_users wants it; computed once, so the test
# needs no bcrypt package.
PASSWORD_HASH = "$2b$04$XA5D.jv.hA8CEkZmzg2ZquHBLCwvViQGsNZrA8iLvwRsU/ms8VUaS"
TENANT = "tenant-a"


class TenantGateway:
    """An aiohttp server on loopback, in a thread of its own: /prometheus/<path> is forwarded to
    `upstream`/<path> with the caller's Authorization, only when X-Scope-OrgID is `tenant`."""

    def __init__(self, upstream: str, tenant: str, upstream_ssl: ssl.SSLContext) -> None:
        self.upstream, self.tenant, self.upstream_ssl = upstream, tenant, upstream_ssl
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/prometheus"
        self.forwarded = 0
        self.refused: list[str | None] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        org = request.headers.get("X-Scope-OrgID")
        if org != self.tenant:
            self.refused.append(org)
            return web.Response(status=401, text="no org id\n")
        assert self._session is not None
        path = request.path_qs.removeprefix("/prometheus")
        headers = {k: v for k, v in request.headers.items() if k in ("Authorization", "Content-Type")}
        async with self._session.request(request.method, self.upstream + path, data=await request.read(),
                                         headers=headers, ssl=self.upstream_ssl) as resp:
            body = await resp.read()
            self.forwarded += 1
            return web.Response(status=resp.status, body=body, content_type=resp.content_type)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/prometheus/{tail:.*}", self._handle)
        self._session = aiohttp.ClientSession()
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def daemon_config(port: int, prometheus: dict[str, Any]) -> dict[str, Any]:
    return {
        "server": {"listen": f"127.0.0.1:{port}"},
        "prometheus": {"timeout": "2s", "retries": 1, **prometheus},
        "kubernetes": {"enabled": False},
        "defaults": {"traffic_steps": [5, 25, 50, 100], "step_duration": "2s", "interval": "1s",
                     "min_requests": 50, "auto_promote": True, "max_step_duration": "60s"},
        "canaries": [{"name": "bad", "namespace": NS, "route": "bad",
                      "stable": {"deployment": "bad-stable", "selector": 'job="bad-stable"'},
                      "canary": {"deployment": "bad-canary", "selector": 'job="bad-canary"'}}],
    }


@dataclass
class Env:
    direct: DaemonProcess
    gateway: DaemonProcess
    wrong: DaemonProcess
    tenant: TenantGateway


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if missing_binaries():
        pytest.skip("prometheus not installed")
    wd = tmp_path_factory.mktemp("secured")
    pki = make_test_pki(wd / "pki")
    client_ssl = ssl.create_default_context(cafile=str(pki["ca"]))
    client_ssl.load_cert_chain(str(pki["client_cert"]), str(pki["client_key"]))
    web_config = {
        "tls_server_config": {"cert_file": str(pki["server_cert"]), "key_file": str(pki["server_key"]),
                              "client_auth_type": "RequireAndVerifyClientCert", "client_ca_file": str(pki["ca"])},
        "basic_auth_users": {USER: PASSWORD_HASH},
    }
    exporter = ExporterProcess(["bad-stable", "bad-canary"], labels={"namespace": NS}, rps=150.0,
                               workdir=wd / "exporter")
    prometheus = SecuredPrometheusServer([exporter.address], web_config=web_config, client_ssl=client_ssl,
                                         client_auth=(USER, PASSWORD), workdir=wd / "prometheus")
    tenant = TenantGateway(prometheus.url, TENANT, client_ssl)
    (wd / "password").write_text(PASSWORD + "\n")
    (wd / "wrong-password").write_text("not-the-password\n")
    tls = {"ca_file": str(pki["ca"]), "cert_file": str(pki["client_cert"]), "key_file": str(pki["client_key"])}
    daemons: list[DaemonProcess] = []
    try:
        exporter.start()
        prometheus.start()
        tenant.start()
        exporter.control(job="bad-canary", error_rate=0.10)
        for name, prom in (
            ("direct", {"url": prometheus.url, "tls_config": tls,
                        "basic_auth": {"username": USER, "password_file": str(wd / "password")}}),
            ("gateway", {"url": tenant.url, "headers": {"X-Scope-OrgID": TENANT},
                         "basic_auth": {"username": USER, "password_file": str(wd / "password")}}),
            ("wrong", {"url": prometheus.url, "tls_config": tls,
                       "basic_auth": {"username": USER, "password_file": str(wd / "wrong-password")}}),
        ):
            (wd / name).mkdir()
            daemons.append(DaemonProcess(wd / name / "canaryd.yaml", wd / name / "canaryd.log",
                                         daemon_config(free_port(), prom), namespace=NS, name=name))
        prometheus.wait_for_targets_up()
        for d in daemons:
            d.wait_ready()
        yield Env(*daemons, tenant=tenant)
    finally:
        for d in daemons:
            d.stop()
        tenant.stop()
        prometheus.cleanup()
        exporter.cleanup()


def rolled_back(d: DaemonProcess) -> dict[str, Any]:
    assert d.command("bad", "start")[0] == 200
    final = wait_for(lambda: (s := d.canary("bad"))["phase"] in ("rolled_back", "succeeded", "paused") and s,
                     timeout=30, what=f"{d.name}: the bad canary to be judged")
    assert final["phase"] == "rolled_back", final["last_decision"]
    assert final["last_decision"]["trigger"] == "analysis"
    failed = {m["name"] for m in final["last_decision"]["metrics"] if m["verdict"] == "fail"}
    assert failed & {"error_rate", "error_ratio"}, final["last_decision"]["reasons"]
    return final


def test_bad_canary_rolls_back_through_tls_and_basic_auth(env: Env) -> None:
    rolled_back(env.direct)
    assert PASSWORD not in env.direct.logs()


def test_bad_canary_rolls_back_through_the_tenant_gateway(env: Env) -> None:
    before = env.tenant.forwarded
    rolled_back(env.gateway)
    assert env.tenant.forwarded > before
    assert env.tenant.refused == []  # every request carried the tenant
    assert PASSWORD not in env.gateway.logs()


def test_wrong_password_holds_with_a_clear_reason(env: Env) -> None:
    d = env.wrong
    assert d.command("bad", "start")[0] == 200

    def held() -> dict[str, Any] | None:
        s = d.canary("bad")
        text = json.dumps(s)
        return s if "401" in text else None

    status = wait_for(held, timeout=20, what="a hold naming the refused credentials")
    assert status["phase"] == "progressing" and status["weight"] == 5  # held, not rolled back, not crashed
    text = json.dumps(status)
    assert "unauthorized" in text and "basic_auth" in text, text
    assert d.proc.poll() is None
    assert d.get("/healthz")[0] == 200
    for secret in (PASSWORD, "not-the-password"):
        assert secret not in d.logs() and secret not in text
