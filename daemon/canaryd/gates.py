"""Gates: checks around a rollout, each an HTTP webhook or a Kubernetes Job (or both, both must pass).

- webhook: POST of the canary's state as JSON (`gate_body`); any 2xx passes, anything else, a timeout
  or no connection fails;
- Job: created in the canary's namespace from `gates.<name>.job` (image, command); a Job that
  succeeds passes, one that fails or does not finish within `timeout` fails.

A failed attempt is tried again `retries` times, a second apart and doubling, before the gate fails.
Which gate runs when, and what its outcome does, is the rollout's (rollout_gates.py); this module only
runs one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from .config.model import CanaryConfig, GateConfig, GateJob

log = logging.getLogger("canaryd.gates")

RunJob = Callable[[str, GateJob, float, Mapping[str, str]], Awaitable[tuple[bool, str]]]
MAX_BACKOFF = 10.0


@dataclass(frozen=True)
class GateOutcome:
    name: str
    passed: bool
    detail: str


def gate_body(name: str, c: CanaryConfig, status: Mapping[str, Any]) -> dict[str, Any]:
    """What a gate's webhook receives (and a Job's environment, flattened): which gate, which canary,
    where its rollout is, and how to reach the canary through its match routes."""
    return {
        "gate": name,
        "namespace": c.namespace,
        "canary": c.name,
        "route": c.route,
        "mesh": c.settings.mesh.value,
        "canary_backend": c.canary.backend,
        "stable_backend": c.stable.backend,
        "phase": status.get("phase"),
        "weight": status.get("weight"),
        "step": status.get("step"),
        "stage": status.get("stage"),
        "version": status.get("version"),
        "match_routes": [{"name": m.name, "headers": dict(m.headers)} for m in c.match_routes],
    }


def job_env(body: Mapping[str, Any]) -> dict[str, str]:
    """CANARYD_GATE, CANARYD_NAMESPACE, CANARYD_CANARY, ... and CANARYD_HEADERS (the first match route's
    headers as `name: value` lines, for curl -H)."""
    env = {f"CANARYD_{k.upper()}": str(v) for k, v in body.items() if not isinstance(v, list | dict) and v is not None}
    routes = body.get("match_routes") or []
    if routes:
        env["CANARYD_HEADERS"] = "\n".join(f"{h}: {v}" for h, v in routes[0]["headers"].items())
    return env


async def post_webhook(session: aiohttp.ClientSession, url: str, body: Mapping[str, Any],
                       timeout: float) -> tuple[bool, str]:
    try:
        async with session.post(url, json=dict(body), timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            text = (await resp.text())[:200].strip()
            ok = 200 <= resp.status < 300
            return ok, f"{url} answered HTTP {resp.status}" + (f": {text}" if text and not ok else "")
    except TimeoutError:
        return False, f"{url} did not answer within {timeout:g}s"
    except aiohttp.ClientError as e:
        return False, f"{url}: {type(e).__name__}: {e}"


async def run_gate(name: str, gate: GateConfig, body: Mapping[str, Any], *,
                   session: aiohttp.ClientSession, run_job: RunJob | None,
                   sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> GateOutcome:
    """One gate, with its retries: passed when every part of an attempt passes."""
    attempts = gate.retries + 1
    detail = "no webhook or Job configured"
    for attempt in range(attempts):
        passed, detail = await _attempt(name, gate, body, session, run_job)
        if passed:
            return GateOutcome(name, True, detail)
        log.warning("gate attempt failed", extra={"gate": name, "canary": f"{body.get('namespace')}/"
                                                  f"{body.get('canary')}", "attempt": attempt + 1, "error": detail})
        if attempt + 1 < attempts:
            await sleep(min(MAX_BACKOFF, 2.0 ** attempt))
    suffix = f" (after {attempts} attempts)" if attempts > 1 else ""
    return GateOutcome(name, False, detail + suffix)


async def _attempt(name: str, gate: GateConfig, body: Mapping[str, Any], session: aiohttp.ClientSession,
                   run_job: RunJob | None) -> tuple[bool, str]:
    details = []
    if gate.url is not None:
        passed, detail = await post_webhook(session, gate.url, body, gate.timeout)
        if not passed:
            return False, detail
        details.append(detail)
    if gate.job.image is not None:
        if run_job is None:
            return False, "a Job gate needs kubernetes.enabled (no cluster to run it in)"
        passed, detail = await run_job(name, gate.job, gate.timeout, job_env(body))
        if not passed:
            return False, detail
        details.append(detail)
    return True, "; ".join(details) or "no webhook or Job configured"
