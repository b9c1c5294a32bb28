"""Polling and plain HTTP for the end-to-end tests: `wait_for` from synchronous code, `until` in a test's event loop."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], *, timeout: float, interval: float = 0.05, what: str) -> T:
    """Poll until `predicate` returns something truthy; a deadline, never a bare sleep."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, ValueError, KeyError) as e:
            last_error = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                                 + (f" (last error: {last_error!r})" if last_error else ""))
        time.sleep(interval)


async def until(predicate: Callable[[], Any], *, timeout: float = 10.0, what: str = "the condition") -> Any:
    """`wait_for` for async tests: the event loop runs (the daemon's tasks with it) between polls."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def request(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
            content_type: str = "application/json", timeout: float = 5.0) -> tuple[int, Any]:
    """(status, parsed JSON or text), for any status. Bytes are sent as they are, anything else as JSON."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None and "Content-Type" not in req.headers:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw, ctype = resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        status, raw, ctype = e.code, e.read(), e.headers.get("Content-Type", "")
    text = raw.decode()
    return status, json.loads(text) if "json" in ctype else text
