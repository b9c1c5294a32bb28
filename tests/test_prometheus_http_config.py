"""The `prometheus:` http_config keys: validation, and what each request carries (against a small aiohttp
server that records the headers it got)."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from canaryd.config import ConfigError, parse_config
from canaryd.sources.http_config import http_options, split_userinfo
from canaryd.sources.prometheus import PrometheusClient, SourceError

OK = {"status": "success", "data": {"resultType": "vector", "result": []}}


def prom(**keys: Any) -> Any:
    return parse_config({"prometheus": keys}).prometheus


@pytest.fixture
async def backend(aiohttp_server: Any) -> Any:
    """A Prometheus stand-in under /prefix: 401 unless the Authorization is `want`."""
    state: dict[str, Any] = {"want": None, "seen": []}

    async def query(request: web.Request) -> web.Response:
        state["seen"].append(dict(request.headers))
        if state["want"] is not None and request.headers.get("Authorization") != state["want"]:
            return web.Response(status=401, text="Unauthorized\n")
        return web.json_response(OK)

    app = web.Application()
    app.router.add_post("/prefix/api/v1/query", query)
    server = await aiohttp_server(app)
    state["url"] = str(server.make_url("/prefix"))
    return state


def test_keys_are_validated_with_their_paths() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"prometheus": {"headers": {"Authorization": "Bearer x", "X-Ok": 5, "bad name": "v"},
                                     "tls_config": {"cert_file": "/c"},
                                     "basic_auth": {"password_file": "/p"}, "basic_auht": {}}})
    text = str(e.value)
    assert "prometheus.headers.Authorization: is set by canaryd" in text
    assert "prometheus.headers.X-Ok: must be a one-line string" in text
    assert any(line.startswith("<config>: prometheus.headers") and "bad name" in line
               and line.endswith("is not an HTTP header name (letters, digits and !#$%&'*+.^_`|~-)")
               for line in e.value.problems), text
    assert "prometheus.basic_auht: unknown key; did you mean 'basic_auth'?" in text
    with pytest.raises(ConfigError) as e:
        parse_config({"prometheus": {"tls_config": {"cert_file": "/c"}, "basic_auth": {"password_file": "/p"}}})
    assert "prometheus.tls_config.key_file: missing" in str(e.value)
    assert "prometheus.basic_auth.username: missing" in str(e.value)
    with pytest.raises(ConfigError, match="cannot be used with authorization"):
        parse_config({"prometheus": {"authorization": {"credentials_file": "/t"}, "basic_auth": {"username": "u"}}})
    p = prom(headers={"X-Scope-OrgID": "tenant-1"}, authorization={"credentials_file": "/t"})
    assert p.headers == (("X-Scope-OrgID", "tenant-1"),) and p.authorization.type == "Bearer"


def test_credentials_in_the_url_move_out_of_it() -> None:
    assert split_userinfo("https://u:p%40ss@mimir.example:8443/prometheus") == (
        "https://mimir.example:8443/prometheus", ("u", "p@ss"))
    assert split_userinfo("http://[::1]:9090") == ("http://[::1]:9090", None)


async def test_bearer_token_is_read_again_when_the_file_changes(backend: Any, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    url, http = http_options(prom(url=backend["url"], authorization={"credentials_file": str(token)},
                                  headers={"X-Scope-OrgID": "t1"}))
    async with aiohttp.ClientSession() as session:
        client = PrometheusClient(session, url, retries=0, http=http)
        await client.query("up")
        token.write_text("second-and-longer\n")  # a rotated Secret
        await client.query("up")
    got = [(h["Authorization"], h["X-Scope-OrgID"]) for h in backend["seen"]]
    assert got == [("Bearer first", "t1"), ("Bearer second-and-longer", "t1")]


async def test_no_secret_in_errors_or_logs(backend: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    password = "hunter2-very-secret"
    (tmp_path / "pw").write_text(password)
    backend["want"] = "Basic " + base64.b64encode(b"u:right").decode()
    url, http = http_options(prom(url=backend["url"], basic_auth={"username": "u", "password_file": str(tmp_path / "pw")}))
    caplog.set_level(logging.DEBUG)
    async with aiohttp.ClientSession() as session:
        client = PrometheusClient(session, url, retries=1, backoff=0, http=http)
        with pytest.raises(SourceError) as e:
            await client.query(f'up{{x="{password}"}}')  # even a query that happens to hold it
        # Credentials in the URL: sent as basic auth, never logged.
        in_url = PrometheusClient(session, backend["url"].replace("://", f"://u:{password}@"), retries=0)
        with pytest.raises(SourceError):
            await in_url.query("up")
    assert e.value.status == 401 and "unauthorized" in str(e.value) and "basic_auth" in str(e.value)
    assert password not in str(e.value) and password not in (e.value.query or "")
    encoded = base64.b64encode(f"u:{password}".encode()).decode()
    assert backend["seen"][-1]["Authorization"] == f"Basic {encoded}"
    records = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert caplog.records and password not in records and encoded not in records


async def test_an_unreadable_secret_is_a_source_error(tmp_path: Path) -> None:
    url, http = http_options(prom(basic_auth={"username": "u", "password_file": str(tmp_path / "missing")},
                                  tls_config={"ca_file": str(tmp_path / "no-ca.pem")}))
    async with aiohttp.ClientSession() as session:
        with pytest.raises(SourceError) as e:
            await PrometheusClient(session, url, retries=0, http=http).query("up")
    assert e.value.kind == "credentials"
    assert "prometheus.basic_auth.password_file" in str(e.value) and "missing" in str(e.value)


async def test_the_environment_s_proxy_and_netrc_apply(backend: Any, aiohttp_server: Any, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # A forward proxy on loopback: it gets the absolute URL and passes the query on to the backend.
    proxied: list[str] = []

    async def forward(request: web.Request) -> web.Response:
        proxied.append(str(request.url))
        async with aiohttp.ClientSession() as s, s.post(str(request.url), data=await request.read(),
                                                        headers={k: v for k, v in request.headers.items()
                                                                 if k.lower() in ("authorization", "content-type")}) as r:
            return web.Response(status=r.status, body=await r.read(), content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    proxy = await aiohttp_server(app)
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", str(proxy.make_url("")))
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login reader password s3cret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    url, http = http_options(prom(url=backend["url"]))
    http.use_environment(url)
    monkeypatch.delenv("HTTP_PROXY")  # looked up once: later changes to the environment do not apply
    async with aiohttp.ClientSession() as session:
        await PrometheusClient(session, url, retries=0, http=http).query("up")
    assert proxied == [f"{backend['url']}/api/v1/query"]
    basic = "Basic " + base64.b64encode(b"reader:s3cret").decode()
    assert [h.get("Authorization") for h in backend["seen"]] == [basic]


async def test_configured_credentials_win_over_netrc(backend: Any, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login reader password s3cret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    token = tmp_path / "token"
    token.write_text("tok\n")
    url, http = http_options(prom(url=backend["url"], authorization={"credentials_file": str(token)}))
    http.use_environment(url)
    async with aiohttp.ClientSession() as session:
        await PrometheusClient(session, url, retries=0, http=http).query("up")
    assert [h.get("Authorization") for h in backend["seen"]] == ["Bearer tok"]
