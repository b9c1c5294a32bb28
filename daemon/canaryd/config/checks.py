"""The checks that span keys, run on the validated (raw) sections before the typed config is built."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..analysis.durations import format_duration
from .delivery import check_delivery
from .kinds import _FAIL, _Ctx, _join
from .model import Mesh, default_backend
from .schema import _DEFAULTS


def _valid(value: object) -> bool:
    if value is _FAIL:
        return False
    if isinstance(value, Mapping):
        return all(_valid(v) for v in value.values())
    if isinstance(value, tuple):
        return all(_valid(v) for v in value)
    return True


def _check_order(ctx: _Ctx, d: Mapping[str, Any], path: str, shorter: str, longer: str, *,
                 strict: bool = False) -> None:
    """Report when d[shorter] must be below (or at most) d[longer] and is not."""
    a, b = d.get(shorter), d.get(longer)
    if not isinstance(a, float) or not isinstance(b, float):
        return
    if a > b or (strict and a == b):
        relation = "shorter than" if strict else "at most"
        ctx.add(_join(path, shorter),
                f"must be {relation} {longer} ({format_duration(b)}), got {format_duration(a)}")


def _check_election(ctx: _Ctx, le: Mapping[str, Any], path: str) -> None:
    """kubernetes_asyncio's elector refuses durations under 1 s and a renew_deadline within 1.2 × retry_period:
    say so at load rather than fail every election round."""
    _check_order(ctx, le, path, "renew_deadline", "lease_duration", strict=True)
    _check_order(ctx, le, path, "retry_period", "renew_deadline", strict=True)
    for key in ("lease_duration", "renew_deadline", "retry_period"):
        v = le.get(key)
        if isinstance(v, float) and v < 1.0:
            ctx.add(_join(path, key), f"must be at least 1s (the Lease API counts whole seconds), got {format_duration(v)}")
    renew, retry = le.get("renew_deadline"), le.get("retry_period")
    if isinstance(renew, float) and isinstance(retry, float) and 1.0 <= retry < renew <= 1.2 * retry:
        ctx.add(_join(path, "renew_deadline"),
                f"must be more than 1.2 × retry_period ({format_duration(1.2 * retry)}), got {format_duration(renew)}")


def _check_settings(ctx: _Ctx, s: Mapping[str, Any], path: str, own: Mapping[str, Any] | None = None) -> None:
    # For a canary, only recheck what it changed, so a bad default is reported once, not per canary.
    if own is not None and not {"step_duration", "interval", "max_step_duration"} & own.keys():
        return
    _check_order(ctx, s, path, "interval", "step_duration")
    if s.get("max_step_duration") is not None:
        _check_order(ctx, {"step_duration": s.get("step_duration"), "max_step_duration": s["max_step_duration"]},
                     path, "step_duration", "max_step_duration")


def _merge(defaults: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """A canary's settings: its own keys over the defaults; thresholds merge key by key."""
    merged = dict(defaults)
    for key in _DEFAULTS.keys():
        if key == "thresholds":
            base, mine = defaults.get(key, {}), own.get(key, {})
            # Either side may have failed validation (already reported): then so does the merge.
            ok = isinstance(base, Mapping) and isinstance(mine, Mapping) and _valid(mine)
            merged[key] = {**base, **mine} if ok else _FAIL
        elif key in own:
            merged[key] = own[key]
    return merged


def _check_unique(ctx: _Ctx, c: Mapping[str, Any], i: int, seen: dict[tuple[str, str], int]) -> None:
    ns, name = c.get("namespace"), c.get("name")
    if not (isinstance(ns, str) and isinstance(name, str)):
        return
    if (ns, name) in seen:
        ctx.add(f"canaries[{i}].name", f"duplicate canary {ns}/{name}, already defined at "
                                       f"canaries[{seen[ns, name]}]; each namespace/name must be unique")
    seen.setdefault((ns, name), i)


def _check_arms(ctx: _Ctx, c: Mapping[str, Any], path: str, mesh: object) -> None:
    """The two arms of one canary must differ in Deployment, selector and backend."""
    stable, canary, name = c.get("stable"), c.get("canary"), c.get("name")
    if not (isinstance(stable, Mapping) and isinstance(canary, Mapping)):
        return
    for key, what in (("deployment", "Deployment"), ("selector", "selector")):
        if isinstance(stable.get(key), str) and stable.get(key) == canary.get(key):
            ctx.add(f"{path}.canary.{key}", f"is the same as stable.{key} ({stable[key]!r}); "
                                            f"the canary needs its own {what}")
    if isinstance(mesh, Mesh) and isinstance(name, str):
        backends = [arm.get("backend") or default_backend(mesh, name, role)
                    for role, arm in (("stable", stable), ("canary", canary))]
        if backends[0] == backends[1] and _valid(backends[0]):
            ctx.add(f"{path}.canary.backend", f"is the same as the stable backend ({backends[0]!r}); "
                                              "the two arms need different backends")


def _check_canaries(ctx: _Ctx, canaries: tuple[Any, ...], defaults: object) -> None:
    defaults = defaults if isinstance(defaults, Mapping) else None
    seen: dict[tuple[str, str], int] = {}
    for i, c in enumerate(canaries):
        if not isinstance(c, Mapping):
            continue
        path = f"canaries[{i}]"
        if defaults is not None:
            _check_settings(ctx, _merge(defaults, c), path, own=c)
        _check_unique(ctx, c, i, seen)
        mesh = c.get("mesh", defaults.get("mesh") if defaults is not None else None)
        _check_arms(ctx, c, path, mesh)
        check_delivery(ctx, c, path, mesh)


def _check_alerts(ctx: _Ctx, alerts: tuple[Any, ...]) -> None:
    seen: dict[str, int] = {}
    for i, a in enumerate(alerts):
        name = a.get("alertname") if isinstance(a, Mapping) else None
        if isinstance(name, str):
            if name in seen:
                ctx.add(f"alerts[{i}].alertname", f"duplicate alert {name!r}, already mapped at alerts[{seen[name]}]; "
                                                  "each alertname may appear once")
            seen.setdefault(name, i)


def _check_prometheus(ctx: _Ctx, p: Mapping[str, Any]) -> None:
    """The http_config keys that only make sense together (as Prometheus itself requires)."""
    auth, basic, tls = (p.get(k) if isinstance(p.get(k), Mapping) else {}
                        for k in ("authorization", "basic_auth", "tls_config"))
    if auth.get("credentials_file") and basic.get("username"):
        ctx.add("prometheus.basic_auth", "cannot be used with authorization.credentials_file; keep one of them")
    if basic.get("password_file") and not basic.get("username"):
        ctx.add("prometheus.basic_auth.username", "missing; password_file needs a username")
    if bool(tls.get("cert_file")) != bool(tls.get("key_file")):
        missing = "key_file" if tls.get("cert_file") else "cert_file"
        ctx.add(f"prometheus.tls_config.{missing}", "missing; a client certificate needs cert_file and key_file")


def check_all(ctx: _Ctx, raw: Mapping[str, Any]) -> None:
    """Every check that spans keys, on the validated sections (values that failed are skipped)."""
    if isinstance(raw.get("prometheus"), Mapping):
        _check_prometheus(ctx, raw["prometheus"])
    k8s = raw.get("kubernetes")
    if isinstance(k8s, Mapping) and isinstance(k8s.get("leader_election"), Mapping):
        _check_election(ctx, k8s["leader_election"], "kubernetes.leader_election")
    defaults = raw.get("defaults")
    if isinstance(defaults, Mapping):
        _check_settings(ctx, defaults, "defaults")
    if isinstance(raw.get("canaries"), tuple):
        _check_canaries(ctx, raw["canaries"], defaults)
    if isinstance(raw.get("alerts"), tuple):
        _check_alerts(ctx, raw["alerts"])
