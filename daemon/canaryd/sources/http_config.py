"""How canaryd reaches a Prometheus-compatible backend as it is deployed: the `prometheus:` keys named
after Prometheus' own http_config (authorization, basic_auth, tls_config, headers), turned into what
each request carries.

Secrets live in files and are read again whenever a file changes (its inode, size or mtime), so a
rotated Kubernetes Secret is picked up without a restart. The secrets this module has read are known
to `redact`, which the client applies to every error message and log line; a password written into
the URL (user:pass@host) is moved out of it into basic auth, so the URL can be logged.

The environment's proxy (HTTP(S)_PROXY, NO_PROXY) and a ~/.netrc entry for the host apply, as to any
client; they are looked up once (`use_environment`), not on every request in a thread, as an aiohttp
session with trust_env does (two thread hops a query, which the event loop's other work waits on).
"""

from __future__ import annotations

import base64
import os
import ssl
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from aiohttp.helpers import basicauth_from_netrc, get_env_proxy_for_url, netrc_from_env
from yarl import URL

from canaryd.config.model import PrometheusConfig

T = TypeVar("T")
REDACTED = "<redacted>"


class CredentialsError(Exception):
    """A credentials, certificate or key file could not be read or used. The message names the key and
    the file, never the file's content."""


def _signature(paths: tuple[str, ...]) -> tuple[tuple[int, int, int], ...]:
    out = []
    for p in paths:
        st = os.stat(p)
        out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


@dataclass
class _Watched(Generic[T]):
    """A value built from files, built again when any of them changes."""

    key: str  # the config key, for error messages
    paths: tuple[str, ...]
    build: Callable[[], T]
    _seen: tuple[tuple[int, int, int], ...] | None = None
    _value: T | None = None

    def get(self) -> T:
        try:
            sig = _signature(self.paths)
            if sig != self._seen or self._value is None:
                self._value, self._seen = self.build(), sig
        except OSError as e:
            raise CredentialsError(f"cannot read {self.key} {e.filename or ', '.join(self.paths)}: "
                                   f"{e.strerror or type(e).__name__}") from None
        except (ssl.SSLError, ValueError) as e:
            raise CredentialsError(f"cannot use {self.key} {', '.join(self.paths)}: {e}") from None
        return self._value


def _read_secret(path: str) -> str:
    # As Prometheus does: surrounding whitespace (the trailing newline of `echo x > file`) is not part of it.
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


def split_userinfo(url: str) -> tuple[str, tuple[str, str] | None]:
    """The URL without user:password@, and the (user, password) it carried, if any."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port is not None else "")
    clean = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return clean, (urllib.parse.unquote(parts.username or ""), urllib.parse.unquote(parts.password or ""))


@dataclass
class HttpOptions:
    """Per-request headers and TLS context of one backend; see the module docstring."""

    headers: Mapping[str, str] = field(default_factory=dict)
    authorization: tuple[str, _Watched[str]] | None = None  # (scheme, credentials)
    basic_auth: tuple[str, _Watched[str] | None] | None = None  # (username, password)
    url_auth: tuple[str, str] | None = None  # user:password taken out of the URL
    tls: _Watched[ssl.SSLContext] | None = None
    server_name: str | None = None
    proxy: str | None = None  # from the environment (use_environment)
    proxy_headers: dict[str, str] | None = None  # Proxy-Authorization, when the proxy URL has credentials
    netrc_auth: str | None = None  # Authorization from ~/.netrc, when no other credentials are configured
    _secrets: set[str] = field(default_factory=set)

    def use_environment(self, url: str) -> None:
        """The proxy and ~/.netrc credentials the environment gives `url`'s host, looked up now, once."""
        target = URL(url)
        try:
            proxy, auth = get_env_proxy_for_url(target)
            self.proxy = str(proxy)
            self.proxy_headers = None if auth is None else {"Proxy-Authorization": self._secret(auth.encode())}
        except LookupError:  # no proxy for this host (or NO_PROXY says so)
            self.proxy, self.proxy_headers = None, None
        netrc = netrc_from_env()
        if netrc is not None and target.host is not None:
            try:
                self.netrc_auth = self._secret(basicauth_from_netrc(netrc, target.host).encode())
            except LookupError:
                self.netrc_auth = None

    def request_headers(self) -> dict[str, str]:
        """The headers of one request. Raises CredentialsError when a secret file cannot be read."""
        out = dict(self.headers)
        if self.authorization is not None:
            scheme, credentials = self.authorization
            out["Authorization"] = f"{scheme} {self._secret(credentials.get())}"
        elif self.basic_auth is not None or self.url_auth is not None:
            if self.basic_auth is not None:
                user, password_file = self.basic_auth
                password = "" if password_file is None else password_file.get()
            else:
                assert self.url_auth is not None
                user, password = self.url_auth
            token = base64.b64encode(f"{user}:{self._secret(password)}".encode()).decode()
            out["Authorization"] = f"Basic {self._secret(token)}"
        elif self.netrc_auth is not None and "authorization" not in {k.lower() for k in out}:
            out["Authorization"] = self.netrc_auth
        return out

    def ssl_context(self) -> ssl.SSLContext | None:
        """None: aiohttp's default verification. Raises CredentialsError for an unusable file."""
        return None if self.tls is None else self.tls.get()

    def _secret(self, value: str) -> str:
        if value:
            self._secrets.add(value)
        return value

    def redact(self, text: str) -> str:
        """`text` with every secret this object has sent replaced, longest first."""
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, REDACTED)
        return text


def _tls_context(ca_file: str | None, cert_file: str | None, key_file: str | None,
                 insecure: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file)
    if cert_file and key_file:
        ctx.load_cert_chain(cert_file, key_file)
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def http_options(config: PrometheusConfig, url: str | None = None) -> tuple[str, HttpOptions]:
    """The base URL to request (without credentials) and the options of `config`'s backend."""
    base, url_auth = split_userinfo(url if url is not None else config.url)
    options = HttpOptions(headers=dict(config.headers), url_auth=url_auth,
                          server_name=config.tls_config.server_name)
    if url_auth is not None:
        options._secret(url_auth[1])
    auth = config.authorization
    if auth.credentials_file:
        path = auth.credentials_file
        options.authorization = (auth.type, _Watched("prometheus.authorization.credentials_file", (path,),
                                                     lambda: _read_secret(path)))
    basic = config.basic_auth
    if basic.username:
        pw = basic.password_file
        watched = None if not pw else _Watched("prometheus.basic_auth.password_file", (pw,), lambda: _read_secret(pw))
        options.basic_auth = (basic.username, watched)
    tls = config.tls_config
    if tls.ca_file or tls.cert_file or tls.insecure_skip_verify:
        files = tuple(p for p in (tls.ca_file, tls.cert_file, tls.key_file) if p)
        options.tls = _Watched("prometheus.tls_config", files, lambda: _tls_context(
            tls.ca_file, tls.cert_file, tls.key_file, tls.insecure_skip_verify))
    return base, options
