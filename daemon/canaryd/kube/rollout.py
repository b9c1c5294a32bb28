"""What a Deployment's status says about its rollout."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def rollout_status(deployment: Mapping[str, Any]) -> tuple[bool, str]:
    """(done, why not) the way `kubectl rollout status` decides it."""
    meta, spec, status = deployment.get("metadata", {}), deployment.get("spec", {}), deployment.get("status") or {}
    generation = int(meta.get("generation", 0))
    observed = int(status.get("observedGeneration", 0))
    want = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas", 0))
    total = int(status.get("replicas", 0))
    available = int(status.get("availableReplicas", 0))
    if observed < generation:
        return False, f"waiting for the deployment spec update to be observed (generation {generation}, observed {observed})"
    if updated < want:
        return False, f"{updated} of {want} updated replicas are available"
    if total > updated:
        return False, f"{total - updated} old replicas are pending termination"
    if available < updated:
        return False, f"{available} of {updated} updated replicas are available"
    return True, f"{available} of {want} replicas updated and available"


def progress_deadline_exceeded(deployment: Mapping[str, Any]) -> str | None:
    """The controller's message when it gave up on the rollout (ProgressDeadlineExceeded), else None."""
    for cond in (deployment.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return str(cond.get("message") or "progress deadline exceeded")
    return None


def template_hash(deployment: Mapping[str, Any]) -> str:
    """The version of a Deployment's pod template: what a new release changes (replicas excluded)."""
    template = deployment.get("spec", {}).get("template", {})
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]
