"""What the demo reads back, over HTTP like any client: canaryd's API and /metrics, Prometheus' alerts.

Nothing here reaches into the daemon's objects: the demo shows what an operator would see.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

ALERTS_RECEIVED = "canaryd_alerts_received_total"
TIMEOUT = aiohttp.ClientTimeout(total=3.0)


class WatchError(RuntimeError):
    """An endpoint did not answer as expected."""


@dataclass(frozen=True)
class ReceivedKey:
    alertname: str
    status: str
    outcome: str


@dataclass(frozen=True)
class PromAlert:
    """An alert as Prometheus' rule evaluation sees it (GET /api/v1/alerts)."""

    alertname: str
    state: str  # pending | firing
    active_at: str  # RFC 3339: when it became pending
    labels: Mapping[str, str]


class Watch:
    def __init__(self, session: aiohttp.ClientSession, *, canaryd_url: str, prometheus_url: str) -> None:
        self.session = session
        self.canaryd_url = canaryd_url
        self.prometheus_url = prometheus_url

    async def _get(self, url: str) -> aiohttp.ClientResponse:
        try:
            resp = await self.session.get(url, timeout=TIMEOUT)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise WatchError(f"GET {url}: {e or type(e).__name__}") from e
        if resp.status != 200:
            text = await resp.text()
            resp.release()
            raise WatchError(f"GET {url}: HTTP {resp.status}: {text[:200]}")
        return resp

    async def _json(self, url: str) -> Any:
        resp = await self._get(url)
        async with resp:
            try:
                return await resp.json()
            except (aiohttp.ContentTypeError, ValueError) as e:
                raise WatchError(f"GET {url}: not JSON: {e}") from e

    async def canary(self, namespace: str, name: str) -> dict[str, Any]:
        return dict(await self._json(f"{self.canaryd_url}/api/v1/canaries/{namespace}/{name}"))

    async def command(self, namespace: str, name: str, verb: str) -> dict[str, Any]:
        url = f"{self.canaryd_url}/api/v1/canaries/{namespace}/{name}/{verb}"
        try:
            async with self.session.post(url, timeout=aiohttp.ClientTimeout(total=15.0)) as resp:
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise WatchError(f"POST {url}: {e or type(e).__name__}") from e
        if resp.status != 200:
            raise WatchError(f"POST {url}: HTTP {resp.status}: {body}")
        return dict(body)

    async def alerts_received(self) -> dict[ReceivedKey, float]:
        """canaryd_alerts_received_total by (alertname, status, outcome), from canaryd's own /metrics."""
        resp = await self._get(f"{self.canaryd_url}/metrics")
        async with resp:
            text = await resp.text()
        counts: dict[ReceivedKey, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == ALERTS_RECEIVED:
                    labels = sample.labels
                    key = ReceivedKey(labels.get("alertname", ""), labels.get("status", ""), labels.get("outcome", ""))
                    counts[key] = float(sample.value)
        return counts

    async def prometheus_alerts(self) -> list[PromAlert]:
        body = await self._json(f"{self.prometheus_url}/api/v1/alerts")
        if not isinstance(body, dict) or body.get("status") != "success":
            raise WatchError(f"Prometheus /api/v1/alerts: {body}")
        return [PromAlert(alertname=a["labels"].get("alertname", ""), state=a.get("state", ""),
                          active_at=a.get("activeAt", ""), labels=dict(a["labels"]))
                for a in body["data"]["alerts"]]

    async def targets_up(self) -> int:
        body = await self._json(f"{self.prometheus_url}/api/v1/targets?state=active")
        return sum(1 for t in body["data"]["activeTargets"] if t.get("health") == "up")

    async def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus_url}/api/v1/query"
        try:
            async with self.session.get(url, params={"query": expr}, timeout=TIMEOUT) as resp:
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise WatchError(f"query {expr}: {e or type(e).__name__}") from e
        if body.get("status") != "success":
            raise WatchError(f"query {expr}: {body}")
        return list(body["data"]["result"])

    async def wait_targets_up(self, count: int, timeout: float = 30.0) -> None:
        """Wait until Prometheus has scraped `count` targets successfully (the services and canaryd)."""
        deadline = asyncio.get_running_loop().time() + timeout
        last = "no answer"
        while True:
            try:
                up = await self.targets_up()
                if up >= count:
                    return
                last = f"{up} of {count} targets up"
            except WatchError as e:
                last = str(e)
            if asyncio.get_running_loop().time() >= deadline:
                raise WatchError(f"Prometheus did not scrape its {count} targets within {timeout:g}s ({last})")
            await asyncio.sleep(0.2)
