"""Shared by the HTTP property tests (test_fuzz_webhook.py, test_fuzz_api.py): the daemon's real app
with a dry-run controller (test_server.py's stack), driven by raw HTTP/1.1 over a socket so that a
test can send any bytes (a header that is not UTF-8, a path that no client library would build).

Hypothesis runs the examples synchronously; the harness owns an event loop and runs each request on
it. Every example is checked against the README's "HTTP API" contract by `Harness.check`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web import Application
from hypothesis import HealthCheck, settings

from canaryd.logs import quiet_bad_requests
from test_server import Stack, _stack

# At least 2,000 examples per surface; CANARYD_FUZZ_EXAMPLES asks for more (or fewer) on one run.
FUZZ = settings(
    max_examples=int(os.environ.get("CANARYD_FUZZ_EXAMPLES", "2000")),
    deadline=None,  # one example is a few HTTP round trips; their time varies with the machine's load
    database=None,  # no .hypothesis/ directory in the tree; a failure prints its reproduction blob
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Every status the README's HTTP API documents; 503 is the only 5xx.
DOCUMENTED = frozenset({200, 400, 401, 404, 405, 409, 413, 503})


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _ErrorLog(logging.Handler):
    """Collects ERROR records from canaryd and aiohttp: a bad request must never log one."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def _client(app: Application) -> TestClient:
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


class Harness:
    """One daemon app for a whole property test; `request` sends raw bytes and reads the answer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stacks: AsyncIterator[Stack], stack: Stack) -> None:
        self.loop = loop
        self._stacks = stacks
        self.stack = stack
        self.port = stack.client.server.port
        self.errors = _ErrorLog()

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def request(self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b""
                ) -> Answer:
        return self.run(self._request(method, target, headers, body))

    async def _request(self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes
                       ) -> Answer:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            lines = [method + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close",
                     b"Content-Length: " + str(len(body)).encode()]
            lines += [name + b": " + value for name, value in headers]
            writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
            await writer.drain()
            raw = await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()
        head, _, payload = raw.partition(b"\r\n\r\n")
        status_line, *header_lines = head.split(b"\r\n")
        content_type = ""
        for line in header_lines:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-type":
                content_type = value.strip().decode("latin-1")
        return Answer(int(status_line.split()[1]), content_type, payload)

    def state(self) -> list[dict[str, Any]]:
        """Everything a request could change: each canary's status (phase, weight, step, history) and
        the dry-run routes' write history."""
        routes = {key: list(self.stack.routers(key).history) for key in self.stack.actuators}
        return [*self.stack.controller.canaries(), routes]

    def check(self, answer: Answer, allowed: frozenset[int] = DOCUMENTED, *, head: bool = False) -> None:
        """The contract of every answer: a documented status, and a JSON body naming the problem for an
        error; then /metrics still answers 200 and nothing was logged at ERROR."""
        assert answer.status in allowed, (answer.status, answer.body[:300])
        if answer.status != 200 and not head:
            assert answer.content_type.startswith("application/json"), (answer.status, answer.body[:300])
            error = answer.json()["error"]
            assert isinstance(error, str) and error, answer.body[:300]
        self.check_alive()

    def check_alive(self) -> None:
        metrics = self.request(b"GET", b"/metrics", [])
        assert metrics.status == 200, metrics.body[:300]
        assert not self.errors.records, [r.getMessage() for r in self.errors.records]


@contextmanager
def harness(*, webhook_token: str | None = None, api_token: str | None = None) -> Iterator[Harness]:
    """test_server.py's stack (fake Prometheus, dry-run controller, the real app) on a loop of its own."""
    loop = asyncio.new_event_loop()
    stacks = _stack(_client, webhook_token=webhook_token, api_token=api_token)
    h = Harness(loop, stacks, loop.run_until_complete(stacks.__anext__()))
    quiet = quiet_bad_requests()  # as `canaryd run` does: a malformed request is a WARNING line
    loggers = [logging.getLogger(name) for name in ("canaryd", "aiohttp")]
    for logger in loggers:
        logger.addHandler(h.errors)
    try:
        yield h
    finally:
        for logger in loggers:
            logger.removeHandler(h.errors)
        logging.getLogger("aiohttp.server").removeFilter(quiet)
        loop.run_until_complete(stacks.aclose())
        loop.run_until_complete(h.stack.client.close())
        loop.close()
