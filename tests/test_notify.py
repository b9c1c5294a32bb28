"""notify.py against real aiohttp receivers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from canaryd.notify import Event, Notifier, NotifyTarget, event_json, redact_url, slack_text

AT = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)


class Verdict(enum.Enum):
    FAIL = "fail"


def rollback_event(**over: Any) -> Event:
    kw: dict[str, Any] = {
        "kind": "rollback",
        "namespace": "orion",
        "canary": "auth-service",
        "trigger": "analysis",
        "reasons": ["error_rate: 7.1% > 5% (n=4210)", "latency_p99: 1.4s > 1s"],
        "weight": 25,
        "at": AT,
        "decision": {"decision": "rollback", "metrics": [{"metric": "error_rate", "verdict": Verdict.FAIL,
                                                          "p_value": 1e-9, "ratio": float("nan"), "at": AT}]},
    }
    kw.update(over)
    return Event(**kw)


@dataclass
class Receiver:
    """A local webhook receiver whose answers are scripted."""

    answers: list[int] = field(default_factory=list)  # status per request; 200 once exhausted
    hang: bool = False
    bodies: list[Any] = field(default_factory=list)
    attempts: int = 0
    got: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        if self.hang:
            await self.release.wait()
            return web.Response(status=200)
        status = self.answers.pop(0) if self.answers else 200
        if status == 200:
            assert request.content_type == "application/json"
            self.bodies.append(await request.json())
            self.got.set()
        headers = {"Retry-After": "0"} if status == 429 else {}
        return web.Response(status=status, headers=headers, text="nope" if status >= 400 else "ok")


@pytest.fixture
async def receivers(aiohttp_server: Any) -> AsyncIterator[Callable[..., Any]]:
    made: list[Receiver] = []

    async def make(**kw: Any) -> Receiver:
        rec = Receiver(**kw)
        app = web.Application()
        app.router.add_post("/hooks/T000/B000/s3cr3t-token", rec.handle)
        server = await aiohttp_server(app, host="127.0.0.1")
        rec.url = f"http://127.0.0.1:{server.port}/hooks/T000/B000/s3cr3t-token"
        made.append(rec)
        return rec

    yield make
    for rec in made:  # let hanging handlers finish so the servers close cleanly
        rec.release.set()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_generic_json_body(receivers: Any, session: aiohttp.ClientSession) -> None:
    rec = await receivers()
    results = await Notifier(session, [NotifyTarget(rec.url)]).send(rollback_event())
    assert [(r.ok, r.attempts, r.status) for r in results] == [(True, 1, 200)]
    (body,) = rec.bodies
    assert body == {
        "kind": "rollback",
        "namespace": "orion",
        "canary": "auth-service",
        "trigger": "analysis",
        "reasons": ["error_rate: 7.1% > 5% (n=4210)", "latency_p99: 1.4s > 1s"],
        "weight": 25,
        "at": "2024-05-01T10:00:00+00:00",
        "decision": {"decision": "rollback", "metrics": [{"metric": "error_rate", "verdict": "fail",
                                                          "p_value": 1e-9, "ratio": None,
                                                          "at": "2024-05-01T10:00:00+00:00"}]},
    }


async def test_slack_text(receivers: Any, session: aiohttp.ClientSession) -> None:
    rec = await receivers()
    event = rollback_event(reasons=["error_rate: 7.1% > 5%", "p99 <bad> & worse\nsecond line"])
    await Notifier(session, [NotifyTarget(rec.url, format="slack")]).send(event)
    (body,) = rec.bodies
    assert list(body) == ["text"]
    text = body["text"]
    assert "\n" not in text
    assert text == (
        "canaryd: orion/auth-service rolled back at 25% (trigger: analysis, 2024-05-01T10:00:00+00:00)"
        " - error_rate: 7.1% &gt; 5%; p99 &lt;bad&gt; &amp; worse second line"
    )
    promo = slack_text(rollback_event(kind="promotion", trigger="manual", reasons=[], weight=100))
    assert promo == "canaryd: orion/auth-service promoted at 100% (trigger: manual, 2024-05-01T10:00:00+00:00)"


async def test_retry_on_500_then_success(receivers: Any, session: aiohttp.ClientSession) -> None:
    rec = await receivers(answers=[500, 503])
    start = time.monotonic()
    results = await Notifier(session, [NotifyTarget(rec.url)], backoff=0.05).send(rollback_event())
    assert [(r.ok, r.attempts, r.status) for r in results] == [(True, 3, 200)]
    assert rec.attempts == 3 and len(rec.bodies) == 1
    assert time.monotonic() - start >= 0.05 + 0.1  # exponential backoff: 0.05, then 0.1


async def test_429_is_retried(receivers: Any, session: aiohttp.ClientSession) -> None:
    rec = await receivers(answers=[429])
    (result,) = await Notifier(session, [NotifyTarget(rec.url)], backoff=0.01).send(rollback_event())
    assert result.ok and result.attempts == 2


async def test_gives_up_after_retries(receivers: Any, session: aiohttp.ClientSession,
                                      caplog: pytest.LogCaptureFixture) -> None:
    rec = await receivers(answers=[500] * 10)
    (result,) = await Notifier(session, [NotifyTarget(rec.url)], retries=3, backoff=0.01).send(rollback_event())
    assert not result.ok and result.attempts == 4 and result.status == 500 and rec.attempts == 4
    assert "failed after 4 attempts: HTTP 500" in caplog.text


async def test_400_is_not_retried(receivers: Any, session: aiohttp.ClientSession,
                                  caplog: pytest.LogCaptureFixture) -> None:
    rec = await receivers(answers=[400, 400])
    (result,) = await Notifier(session, [NotifyTarget(rec.url)], backoff=0.01).send(rollback_event())
    assert (result.ok, result.attempts, result.status) == (False, 1, 400)
    assert rec.attempts == 1
    assert "rejected: HTTP 400 (not retried)" in caplog.text


async def test_connection_refused_is_retried_logged_and_never_raised(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://user:pw@127.0.0.1:{port}/services/T000/B000/s3cr3t-token?key=abc"
    caplog.set_level(logging.INFO, logger="canaryd.notify")
    (result,) = await Notifier(session, [NotifyTarget(url)], retries=2, backoff=0.01).send(rollback_event())
    assert not result.ok and result.attempts == 3 and "cannot connect" in (result.error or "")
    assert f"http://127.0.0.1:{port}/…" in caplog.text
    for secret in ("s3cr3t", "pw", "key=abc", "T000"):
        assert secret not in caplog.text
        assert secret not in repr(result)


async def test_timeout_is_retried(receivers: Any, session: aiohttp.ClientSession) -> None:
    rec = await receivers(hang=True)
    (result,) = await Notifier(session, [NotifyTarget(rec.url, timeout=0.1)], retries=1, backoff=0.01).send(
        rollback_event()
    )
    assert not result.ok and result.attempts == 2 and result.error == "timed out after 0.1s"


async def test_hanging_receiver_blocks_neither_fire_nor_others(
    receivers: Any, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    hanging = await receivers(hang=True)
    good = [await receivers(), await receivers()]
    targets = [NotifyTarget(hanging.url, timeout=30), NotifyTarget(good[0].url),
               NotifyTarget(good[1].url, format="slack")]
    notifier = Notifier(session, targets)

    start = time.monotonic()
    notifier.fire(rollback_event())
    assert time.monotonic() - start < 0.05  # returns at once: nothing awaited
    assert notifier.pending == 1

    await asyncio.wait_for(asyncio.gather(good[0].got.wait(), good[1].got.wait()), 2)
    assert good[0].bodies[0]["kind"] == "rollback"
    assert "rolled back" in good[1].bodies[0]["text"]
    assert hanging.attempts == 1 and notifier.pending == 1

    # Shutdown waits up to its timeout, then cancels the hanging delivery.
    start = time.monotonic()
    await notifier.close(timeout=0.2)
    assert 0.2 <= time.monotonic() - start < 2
    assert notifier.pending == 0
    assert "1 deliveries still running after 0.2s; cancelling" in caplog.text
    notifier.fire(rollback_event())  # after close: dropped, logged
    assert notifier.pending == 0 and "notifier is closed" in caplog.text


async def test_drain_waits_for_deliveries(receivers: Any, session: aiohttp.ClientSession) -> None:
    rec = await receivers(answers=[500])
    notifier = Notifier(session, [NotifyTarget(rec.url)], backoff=0.05)
    for i in range(3):
        notifier.fire(rollback_event(canary=f"c{i}"))
    await notifier.drain(timeout=5)
    assert notifier.pending == 0
    assert sorted(b["canary"] for b in rec.bodies) == ["c0", "c1", "c2"]


async def test_no_targets_is_a_no_op(session: aiohttp.ClientSession) -> None:
    notifier = Notifier(session, [])
    notifier.fire(rollback_event())
    assert notifier.pending == 0
    assert await notifier.send(rollback_event()) == []
    await notifier.close()


def test_target_validation() -> None:
    with pytest.raises(ValueError, match="format: 'teams'"):
        NotifyTarget("http://x", format="teams")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="http:// or https://"):
        NotifyTarget("ftp://host/secret-path")
    with pytest.raises(ValueError, match="timeout"):
        NotifyTarget("http://x", timeout=0)
    with pytest.raises(ValueError, match="retries"):
        Notifier(None, [], retries=-1)  # type: ignore[arg-type]


def test_redact_url() -> None:
    assert redact_url("https://hooks.slack.com/services/T0/B0/XYZ") == "https://hooks.slack.com/…"
    assert redact_url("http://u:p@10.0.0.1:8080/x?token=1") == "http://10.0.0.1:8080/…"


def test_event_json_is_plain_json() -> None:
    text = json.dumps(event_json(rollback_event()), allow_nan=False)
    assert "NaN" not in text
