"""Crash loops read from the cluster: the canary pods' container restarts and CrashLoopBackOff.

Pure: the worker's poller (worker_delivery.py) lists the canary Deployment's pods and asks `verdict`.
Restarts count from the rollout's first look at each pod (a pod seen for the first time during the
rollout counts from there; pods that start during it count from 0, as their restartCount does). A
rollout rolls back when those restarts exceed the limit, or when a pod is in CrashLoopBackOff with
more restarts than the limit, without waiting for the CanaryPodCrashLooping alert.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PodRestarts:
    name: str
    restarts: int
    crash_looping: bool


def pod_restarts(pod: Mapping[str, Any]) -> PodRestarts:
    status = pod.get("status") or {}
    statuses = [*(status.get("initContainerStatuses") or ()), *(status.get("containerStatuses") or ())]
    restarts = sum(s.get("restartCount") or 0 for s in statuses if isinstance(s, Mapping))
    crash = any(((s.get("state") or {}).get("waiting") or {}).get("reason") == "CrashLoopBackOff"
                for s in statuses if isinstance(s, Mapping))
    return PodRestarts(str((pod.get("metadata") or {}).get("name", "")), int(restarts), crash)


def verdict(pods: Iterable[PodRestarts], baseline: Mapping[str, int], limit: int,
            *, first_look: bool) -> tuple[str | None, dict[str, int]]:
    """(why to roll back, or None; the baseline to keep). `first_look`: the rollout's first look, whose
    pods count from what they have now (they existed before it)."""
    pods = list(pods)
    base = dict(baseline)
    for p in pods:
        base.setdefault(p.name, p.restarts if first_look else 0)
    during = sum(max(0, p.restarts - base[p.name]) for p in pods)
    looping = [p for p in pods if p.crash_looping and p.restarts > limit]
    if during <= limit and not looping:
        return None, base
    parts = []
    if during > limit:
        parts.append(f"the canary's containers restarted {during} times during the rollout (limit {limit})")
    parts += [f"pod {p.name} is in CrashLoopBackOff after {p.restarts} restarts" for p in looping]
    return "; ".join(parts) + ": rolled back without waiting for the CanaryPodCrashLooping alert", base
