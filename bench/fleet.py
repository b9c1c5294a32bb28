"""What the load benchmarks share: a fleet of canaries, each arm a scrape job of the test exporters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def canary_config(namespace: str, name: str, i: int, job: Callable[[int, str], str]) -> dict[str, Any]:
    """One canary of the config, its arms selected by the jobs `job(i, "stable")` and `job(i, "canary")`."""
    return {"name": name, "namespace": namespace, "route": name,
            **{arm: {"deployment": job(i, arm), "selector": f'job="{job(i, arm)}"'} for arm in ("stable", "canary")}}
