"""Outbound notifications of every event a human must know (see `notify_formats.EVENT_KINDS`): a
generic JSON webhook, Slack's `text`, a Microsoft Teams Adaptive Card or a Discord embed, with links
to the canary's status and dashboard when a target names them; each target may select its events.

Delivery never blocks or breaks a decision: the controller calls `Notifier.fire(event)`, which
only schedules a guarded background task. Each target is tried once, then retried `retries`
times with exponential backoff on connection errors, timeouts, 5xx and 429 (a numeric
Retry-After is honoured, capped); other 4xx are the receiver's final answer. Failures are
logged with the target's scheme and host only, since webhook URLs (Slack's in particular)
carry their secret in the path. On shutdown, `await notifier.close()` waits for deliveries in
flight, up to a timeout, then cancels the rest.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import functools
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp

from .notify_formats import EVENT_KINDS, FORMATS, discord_body, links, msteams_body, slack_links, title

__all__ = ["DeliveryResult", "Event", "NotifyTarget", "Notifier", "event_json", "redact_url", "slack_text"]

log = logging.getLogger("canaryd.notify")

MAX_RETRY_AFTER = 10.0  # seconds; a receiver must not hold a delivery hostage


@dataclass(frozen=True, slots=True)
class NotifyTarget:
    url: str
    format: Literal["json", "slack", "msteams", "discord"] = "json"
    timeout: float = 5.0  # seconds, per attempt
    events: frozenset[str] | None = None  # the event kinds sent here; None: every kind
    api_url: str | None = None  # canaryd's base URL as people reach it: a link to the canary's status
    grafana_url: str | None = None  # a dashboard URL; {namespace} and {canary} are filled in

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            hint = "; Microsoft Teams is msteams" if self.format == "teams" else ""
            raise ValueError(f"format: {self.format!r} is not one of {', '.join(FORMATS)}{hint}")
        unknown = sorted(set(self.events or ()) - set(EVENT_KINDS))
        if unknown:
            raise ValueError(f"events: {', '.join(unknown)} not among {', '.join(EVENT_KINDS)}")
        if urlsplit(self.url).scheme not in ("http", "https"):
            raise ValueError(f"url: {redact_url(self.url)!r} must be an http:// or https:// URL")
        if not self.timeout > 0:
            raise ValueError(f"timeout: must be > 0 seconds, got {self.timeout}")


@dataclass(frozen=True, slots=True)
class Event:
    kind: str  # one of EVENT_KINDS; restart: a new canary version, judged from step 1
    namespace: str
    canary: str
    trigger: str  # analysis | alert | manual | timeout for a rollback; auto | manual for a promotion
    reasons: Sequence[str]
    weight: float  # the canary's share (percent) when the event happened
    at: datetime
    decision: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    target: str  # redacted URL
    ok: bool
    attempts: int
    status: int | None = None
    error: str | None = None


def event_json(event: Event) -> dict[str, Any]:
    """The generic webhook body."""
    return {
        "kind": event.kind,
        "namespace": event.namespace,
        "canary": event.canary,
        "trigger": event.trigger,
        "reasons": list(event.reasons),
        "weight": event.weight,
        "at": event.at.isoformat(),
        "decision": _jsonable(event.decision),
    }


def slack_text(event: Event) -> str:
    """One readable line for Slack (mrkdwn; &, <, > escaped as Slack requires)."""
    line = f"{title(event)} (trigger: {event.trigger}, {event.at.isoformat(timespec='seconds')})"
    if event.reasons:
        line += " - " + "; ".join(r.replace("\n", " ") for r in event.reasons)
    return line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _body(target: NotifyTarget, event: Event) -> dict[str, Any]:
    urls = links(target, event)
    if target.format == "slack":
        return {"text": " ".join(filter(None, (slack_text(event), slack_links(urls))))}
    if target.format == "msteams":
        return msteams_body(event, urls)
    if target.format == "discord":
        return discord_body(event, urls)
    return {**event_json(event), **({"links": urls} if urls else {})}


def redact_url(url: str) -> str:
    """scheme://host[:port]/… without credentials, path or query, which may hold secrets."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    return f"{parts.scheme}://{host}{port}/…"


class _Retryable(Exception):
    def __init__(self, reason: str, status: int | None = None, delay: float | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.delay = delay


class Notifier:
    """Sends events to every target concurrently, each canary's in order; see the module doc for the guarantees."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        targets: Sequence[NotifyTarget],
        *,
        retries: int = 3,
        backoff: float = 0.2,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries: must be >= 0, got {retries}")
        self._session = session
        self._targets = tuple(targets)
        self._retries = retries
        self._backoff = backoff
        self._tasks: set[asyncio.Task[list[DeliveryResult]]] = set()
        self._last: dict[tuple[str, str], asyncio.Task[list[DeliveryResult]]] = {}  # per canary, the newest
        self._closed = False

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def fire(self, event: Event) -> None:
        """Schedule delivery in the background and return at once. Must run inside the event loop."""
        if not self._for(event):
            return
        if self._closed:
            log.warning("notify: %s event for %s/%s dropped: notifier is closed",
                        event.kind, event.namespace, event.canary)
            return
        key = (event.namespace, event.canary)
        # One canary's events arrive in the order they happened ("started" before "rolled back"); the
        # events of different canaries are delivered concurrently.
        task = asyncio.get_running_loop().create_task(
            self._after(self._last.get(key), event), name=f"notify {event.kind} {event.namespace}/{event.canary}"
        )
        self._last[key] = task
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._done, key))

    async def _after(self, previous: asyncio.Task[list[DeliveryResult]] | None, event: Event) -> list[DeliveryResult]:
        if previous is not None:
            await asyncio.wait([previous])
        return await self.send(event)

    def _done(self, key: tuple[str, str], task: asyncio.Task[list[DeliveryResult]]) -> None:
        self._tasks.discard(task)
        if self._last.get(key) is task:  # a newer event of the canary may have replaced it meanwhile
            del self._last[key]
        if task.cancelled():
            log.warning("notify: delivery cancelled (%s)", task.get_name())
            return
        exc = task.exception()
        if exc is not None:  # send() catches everything; this is a bug, but never a silent one
            log.error("notify: delivery task failed (%s)", task.get_name(), exc_info=exc)

    async def send(self, event: Event) -> list[DeliveryResult]:
        """Deliver to every target concurrently; never raises (except on cancellation)."""
        return list(await asyncio.gather(*(self._deliver(t, event) for t in self._for(event))))

    def _for(self, event: Event) -> tuple[NotifyTarget, ...]:
        return tuple(t for t in self._targets if t.events is None or event.kind in t.events)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait for deliveries in flight, up to `timeout` seconds; cancel what is left."""
        if not self._tasks:
            return
        tasks = set(self._tasks)
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        if pending:
            log.warning("notify: %d deliveries still running after %.1fs; cancelling", len(pending), timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def close(self, timeout: float = 5.0) -> None:
        """Refuse new events and drain. The session belongs to the caller and stays open."""
        self._closed = True
        await self.drain(timeout)

    async def _deliver(self, target: NotifyTarget, event: Event) -> DeliveryResult:
        where = redact_url(target.url)
        try:
            payload = json.dumps(_body(target, event), allow_nan=False).encode()
        except (TypeError, ValueError) as e:  # pragma: no cover - _jsonable makes this unreachable
            log.error("notify: cannot encode %s event for %s: %s", event.kind, where, e)
            return DeliveryResult(where, False, 0, error=f"encode: {e}")

        attempts = 0
        while True:
            attempts += 1
            try:
                status = await self._post(target, payload)
            except _Retryable as e:
                if attempts > self._retries:
                    log.warning("notify: %s event for %s/%s to %s failed after %d attempts: %s",
                                event.kind, event.namespace, event.canary, where, attempts, e)
                    return DeliveryResult(where, False, attempts, e.status, str(e))
                delay = self._backoff * 2 ** (attempts - 1)
                if e.delay is not None:
                    delay = max(delay, e.delay)
                log.info("notify: attempt %d to %s failed (%s); retrying in %.2fs", attempts, where, e, delay)
                await asyncio.sleep(delay)
                continue
            except Exception as e:  # anything unforeseen: log it, never raise to the decision path
                log.error("notify: %s event to %s failed: %s: %s", event.kind, where, type(e).__name__, e)
                return DeliveryResult(where, False, attempts, error=f"{type(e).__name__}: {e}")
            if 200 <= status < 300:
                return DeliveryResult(where, True, attempts, status)
            reason = f"HTTP {status} (not retried)"
            log.warning("notify: %s event for %s/%s to %s rejected: %s",
                        event.kind, event.namespace, event.canary, where, reason)
            return DeliveryResult(where, False, attempts, status, reason)

    async def _post(self, target: NotifyTarget, payload: bytes) -> int:
        """POST once; return a final status, or raise _Retryable."""
        try:
            async with self._session.post(
                target.url,
                data=payload,
                headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=target.timeout),
                allow_redirects=False,
            ) as resp:
                await resp.read()  # let the connection be reused
                if resp.status == 429 or resp.status >= 500:
                    raise _Retryable(f"HTTP {resp.status}", resp.status, _retry_after(resp.headers))
                return resp.status
        except TimeoutError:
            raise _Retryable(f"timed out after {target.timeout:g}s") from None
        except aiohttp.ClientError as e:
            # The message of a connection error names host and port only, never the path.
            raise _Retryable(f"{type(e).__name__}: {_client_error_text(e)}") from None


def _client_error_text(e: aiohttp.ClientError) -> str:
    if isinstance(e, aiohttp.ClientConnectorError):
        return f"cannot connect to {e.host}:{e.port}: {e.os_error.strerror or e.os_error}"
    if isinstance(e, aiohttp.ClientResponseError):
        return f"HTTP {e.status} {e.message}"
    if isinstance(e, aiohttp.InvalidURL):
        return "invalid URL"
    return str(e) or type(e).__name__


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff
    return min(max(seconds, 0.0), MAX_RETRY_AFTER) if math.isfinite(seconds) else None


def _jsonable(value: Any) -> Any:
    """Plain JSON from a decision: datetimes as ISO text, enums as values, NaN/inf as null."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float | enum.Enum | datetime):
        return _scalar(value)
    if _is_container(value):
        return _container(value)
    if hasattr(value, "item"):  # numpy scalars
        return _jsonable(value.item())
    if hasattr(value, "tolist"):  # numpy arrays
        return _jsonable(value.tolist())
    return str(value)


def _scalar(value: float | enum.Enum | datetime) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, enum.Enum):
        return _jsonable(value.value)
    return value.isoformat()


def _is_container(value: Any) -> bool:
    return (dataclasses.is_dataclass(value) and not isinstance(value, type)) or isinstance(
        value, Mapping | list | tuple | set | frozenset)


def _container(value: Any) -> Any:
    """A dataclass instance or a mapping as an object, any other collection as an array."""
    if dataclasses.is_dataclass(value):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return [_jsonable(v) for v in value]
