"""The feature-flag hook: at every step, promotion and rollback, canaryd POSTs the canary's weight and
phase to `feature_flags.url`, so a flag service can follow the rollout (the new code path on for the
canary's share of users).

The body names the flag (`flagKey`) and carries a flagd-style flag definition (OpenFeature's flagd:
`variants`, `defaultVariant`, a `fractional` targeting rule), which flagd's HTTP sync or a small
adapter can load as is:

    {"flagKey": "new-auth-flow", "namespace": "prod", "canary": "auth", "phase": "progressing",
     "weight": 25, "step": 1, "stage": null,
     "flags": {"new-auth-flow": {"state": "ENABLED", "variants": {"on": true, "off": false},
                                 "defaultVariant": "off",
                                 "targeting": {"fractional": [["on", 25], ["off", 75]]}}}}

After a promotion the flag is on for everyone; after a rollback off for everyone. Failures are logged
and never stop the rollout.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import aiohttp

from .config.model import CanaryConfig

log = logging.getLogger("canaryd.flags")


def flag_body(c: CanaryConfig, status: Mapping[str, Any]) -> dict[str, Any]:
    key = c.feature_flags.flag or c.name
    phase = status.get("phase")
    weight = int(status.get("weight") or 0)
    on = 100 if phase == "succeeded" else 0 if phase in ("rolled_back", "idle") else weight
    flag = {"state": "ENABLED", "variants": {"on": True, "off": False},
            "defaultVariant": "on" if on == 100 else "off",
            "targeting": {"fractional": [["on", on], ["off", 100 - on]]}}
    return {"flagKey": key, "namespace": c.namespace, "canary": c.name, "phase": phase, "weight": weight,
            "step": status.get("step"), "stage": status.get("stage"), "flags": {key: flag}}


async def send_flag(session: aiohttp.ClientSession, c: CanaryConfig, status: Mapping[str, Any]) -> bool:
    url = c.feature_flags.url
    if url is None:
        return False
    body = flag_body(c, status)
    try:
        async with session.post(url, json=body,
                                timeout=aiohttp.ClientTimeout(total=c.feature_flags.timeout)) as resp:
            if 200 <= resp.status < 300:
                return True
            log.warning("feature flag hook failed", extra={"canary": c.key, "url": url, "status": resp.status})
    except (TimeoutError, aiohttp.ClientError) as e:
        log.warning("feature flag hook failed", extra={"canary": c.key, "url": url, "error": str(e)})
    return False
