"""Notifications of every event a human must know, in every format, with links, filtered per target.

Receivers are local aiohttp servers. The formats are checked on events of every kind; the events
themselves are checked through a whole in-process daemon (`wiring.assemble`, dry-run routes) whose
notifications go to a receiver, and on the rollout transitions that cannot be reached quickly there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from canaryd import rollout as ro
from canaryd.config import parse_config
from canaryd.notify import Event, Notifier, NotifyTarget
from canaryd.notify_formats import EVENT_KINDS, transitions
from canaryd.rollout import Phase
from canaryd.wiring import assemble
from canaryd.worker import new_rollout

AT = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
API = "https://canaryd.example.com"
GRAFANA = "https://grafana.example.com/d/canary?var-namespace={namespace}&var-canary={canary}"
STATUS_LINK = f"{API}/api/v1/canaries/orion/auth-service"
DASHBOARD_LINK = "https://grafana.example.com/d/canary?var-namespace=orion&var-canary=auth-service"


def event(kind: str) -> Event:
    return Event(kind=kind, namespace="orion", canary="auth-service", trigger="analysis",
                 reasons=[f"why {kind} happened", "a second reason"], weight=25, at=AT,
                 decision={"decision": kind})


class Receiver:
    def __init__(self) -> None:
        self.bodies: list[Any] = []
        self.url = ""
        self.changed = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/json"
        self.bodies.append(await request.json())
        self.changed.set()
        return web.Response(text="ok")

    async def wait_for(self, check: Callable[[list[Any]], bool], timeout: float = 20.0) -> list[Any]:
        async def loop() -> list[Any]:
            while not check(self.bodies):
                self.changed.clear()
                await self.changed.wait()
            return self.bodies
        return await asyncio.wait_for(loop(), timeout)


@pytest.fixture
async def receiver(aiohttp_server: Any) -> AsyncIterator[Callable[[], Any]]:
    async def make() -> Receiver:
        rec = Receiver()
        app = web.Application()
        app.router.add_post("/hook/secret-path", rec.handle)
        server = await aiohttp_server(app, host="127.0.0.1")
        rec.url = f"http://127.0.0.1:{server.port}/hook/secret-path"
        return rec
    yield make


def check_json(body: dict[str, Any], kind: str) -> None:
    assert body["kind"] == kind and body["canary"] == "auth-service" and body["weight"] == 25
    assert body["links"] == {"status": STATUS_LINK, "dashboard": DASHBOARD_LINK}


def check_slack(body: dict[str, Any], kind: str) -> None:
    assert list(body) == ["text"]
    assert body["text"].startswith("canaryd: orion/auth-service ") and f"why {kind} happened" in body["text"]
    assert f"<{STATUS_LINK}|status>" in body["text"]
    assert f"<{DASHBOARD_LINK.replace('&', '&amp;')}|dashboard>" in body["text"]


def check_msteams(body: dict[str, Any], kind: str) -> None:
    assert body["type"] == "message"
    (attachment,) = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    texts = [b["text"] for b in card["body"] if b["type"] == "TextBlock"]
    assert texts[0].startswith("canaryd: orion/auth-service") and f"why {kind} happened" in texts
    facts = {f["title"]: f["value"] for b in card["body"] if b["type"] == "FactSet" for f in b["facts"]}
    assert facts["Weight"] == "25%" and facts["Trigger"] == "analysis"
    assert [(a["type"], a["url"]) for a in card["actions"]] == [("Action.OpenUrl", STATUS_LINK),
                                                                ("Action.OpenUrl", DASHBOARD_LINK)]


def check_discord(body: dict[str, Any], kind: str) -> None:
    assert body["content"].startswith("canaryd: orion/auth-service")
    (embed,) = body["embeds"]
    assert embed["url"] == STATUS_LINK and f"why {kind} happened" in embed["description"]
    assert isinstance(embed["color"], int) and embed["timestamp"].startswith("2024-05-01T10:00:00")
    assert DASHBOARD_LINK in " ".join(f["value"] for f in embed["fields"])
    assert body["allowed_mentions"] == {"parse": []}  # a reason never pings anyone


CHECKS = {"json": check_json, "slack": check_slack, "msteams": check_msteams, "discord": check_discord}


async def test_every_format_receives_every_event_kind(receiver: Any) -> None:
    receivers = {fmt: await receiver() for fmt in CHECKS}
    targets = [NotifyTarget(r.url, fmt, api_url=API, grafana_url=GRAFANA) for fmt, r in receivers.items()]
    async with aiohttp.ClientSession() as session:
        notifier = Notifier(session, targets)
        for kind in EVENT_KINDS:
            results = await notifier.send(event(kind))
            assert all(r.ok for r in results), results
    for fmt, rec in receivers.items():
        assert len(rec.bodies) == len(EVENT_KINDS), fmt
        for kind, body in zip(EVENT_KINDS, rec.bodies, strict=True):
            CHECKS[fmt](body, kind)


async def test_each_target_gets_only_its_events(receiver: Any) -> None:
    every, some = await receiver(), await receiver()
    async with aiohttp.ClientSession() as session:
        notifier = Notifier(session, [NotifyTarget(every.url), NotifyTarget(some.url, events=frozenset(
            {"rollback", "awaiting_promotion"}))])
        for kind in EVENT_KINDS:
            notifier.fire(event(kind))
        await notifier.drain()
    assert [b["kind"] for b in every.bodies] and sorted(b["kind"] for b in every.bodies) == sorted(EVENT_KINDS)
    assert sorted(b["kind"] for b in some.bodies) == ["awaiting_promotion", "rollback"]
    assert "links" not in every.bodies[0]  # no link configured: the generic body is as it always was
    with pytest.raises(ValueError, match="events: rolback"):
        NotifyTarget(every.url, events=frozenset({"rolback"}))


def canary_config(receiver_url: str, fmt: str) -> Any:
    return parse_config({
        "kubernetes": {"enabled": False},
        "prometheus": {"url": "http://127.0.0.1:9", "retries": 0, "timeout": "1s"},
        "defaults": {"traffic_steps": [5, 50, 100], "step_duration": "1h", "interval": "1h"},
        "canaries": [{"name": "auth-service", "namespace": "orion", "route": "auth-service",
                      "stable": {"deployment": "auth-stable", "selector": 'job="auth-stable"'},
                      "canary": {"deployment": "auth-canary", "selector": 'job="auth-canary"'}}],
        "notifications": [{"url": receiver_url, "format": fmt, "api_url": API, "grafana_url": GRAFANA}],
    })


@pytest.mark.parametrize("fmt", ["json", "teams"])
async def test_the_daemon_notifies_start_pause_and_rollback(receiver: Any, fmt: str) -> None:
    rec = await receiver()
    async with assemble(canary_config(rec.url, fmt), elect=False) as parts:
        c = parts.controller
        await c.command("orion", "auth-service", "start")
        await c.command("orion", "auth-service", "pause")
        await c.command("orion", "auth-service", "rollback")
        bodies = await rec.wait_for(lambda b: len(b) >= 3)
    if fmt == "json":
        assert [b["kind"] for b in bodies] == ["started", "paused", "rollback"]
        assert bodies[1]["trigger"] == "manual" and bodies[1]["reasons"]
        assert bodies[0]["links"]["status"] == STATUS_LINK
    else:
        titles = [b["attachments"][0]["content"]["body"][0]["text"] for b in bodies]
        assert ["started" in titles[0], "paused" in titles[1], "rolled back" in titles[2]] == [True] * 3


def test_transitions_name_every_event_no_effect_carries() -> None:
    config = canary_config("http://127.0.0.1:9/x", "json").canaries[0]
    idle = new_rollout(config)
    started, effects = ro.start(idle, 100.0)
    assert [n.kind for n in transitions(idle, started, effects)] == ["started"]
    advanced = replace(started, step=1, weight=50, last_decision={"trigger": "analysis", "reasons": ["passed"]})
    (notice,) = transitions(started, advanced, [ro.SetWeight(50)])
    assert (notice.kind, notice.trigger.value, notice.reasons) == ("advanced", "analysis", ("passed",))
    timeout = "held 15m at 50 %, longer than max_step_duration: paused"
    paused = replace(advanced, phase=Phase.PAUSED, paused_reason=timeout)
    (notice,) = transitions(advanced, paused, [])
    assert (notice.kind, notice.reasons) == ("paused", (timeout,))
    waiting = replace(advanced, phase=Phase.PAUSED, awaiting_promotion=True, paused_reason="last step passed")
    assert [n.kind for n in transitions(advanced, waiting, [])] == ["awaiting_promotion"]
    failed = ro.promotion_failed(waiting, 200.0, "stable rollout timed out")
    (notice,) = transitions(waiting, failed, [ro.Promote()])
    assert notice.kind == "promotion_failed" and "stable rollout timed out" in notice.reasons[0]
    assert transitions(advanced, advanced, []) == []  # a hold changes nothing a human must hear about
    resumed = replace(paused, phase=Phase.PROGRESSING, paused_reason=None)
    assert transitions(paused, resumed, []) == []


async def test_one_canarys_events_arrive_in_order_even_when_the_first_is_slow(aiohttp_server: Any) -> None:
    """Concurrent delivery must not put "rolled back" in the channel before "started"."""
    got: list[tuple[str, str]] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        if (body["canary"], body["kind"]) == ("auth-service", "started"):
            await asyncio.sleep(0.3)  # the first delivery is the slow one
        got.append((body["canary"], body["kind"]))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/", handle)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as session:
        notifier = Notifier(session, [NotifyTarget(url=str(server.make_url("/")))])
        for canary, kind in (("auth-service", "started"), ("auth-service", "paused"),
                             ("auth-service", "rollback"), ("cart", "started")):
            notifier.fire(Event(kind=kind, namespace="orion", canary=canary, trigger="manual",
                                reasons=(kind,), weight=5.0, at=datetime.now(UTC)))
        await notifier.close()
    assert [k for c, k in got if c == "auth-service"] == ["started", "paused", "rollback"]
    assert got[0] == ("cart", "started")  # another canary does not wait behind the slow one
