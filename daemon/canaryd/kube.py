"""Kubernetes access: custom objects, deployments, leases. The one module that imports kubernetes_asyncio.

Everything here speaks plain JSON dicts (the API's camelCase), never the client's model classes, and
raises only our own errors: `KubeNotFound`, `KubeConflict`, `KubeError`. Each names the object and the
verb, e.g. ``VirtualService orion/auth-service patch failed: 404 NotFound: ...``; no ApiException or
aiohttp error leaks out of this module.

Writes are optimistic. `read_modify_write` re-reads and retries when a write hits a conflict (409, or
a JSON-patch `test` that no longer holds, which the API server answers with 422).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp

from canaryd import __version__

if TYPE_CHECKING:
    from kubernetes_asyncio import client
    from kubernetes_asyncio.client.exceptions import ApiException


@functools.cache
def _k() -> SimpleNamespace:
    """kubernetes_asyncio, imported on first use: it costs ~0.6 s and ~30 MB, and a dry-run daemon never
    needs it."""
    from kubernetes_asyncio import client, config, watch
    from kubernetes_asyncio.client.exceptions import ApiException
    from kubernetes_asyncio.leaderelection import electionconfig, leaderelection
    from kubernetes_asyncio.leaderelection.resourcelock.leaselock import LeaseLock

    return SimpleNamespace(client=client, config=config, watch=watch, ApiException=ApiException,
                           electionconfig=electionconfig, leaderelection=leaderelection, LeaseLock=LeaseLock)

log = logging.getLogger(__name__)

JSON = dict[str, Any]
T = TypeVar("T")
P = TypeVar("P")
R = TypeVar("R")

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"


# --------------------------------------------------------------------------------------------- errors
class KubeError(Exception):
    """A Kubernetes API call failed. `status` is the HTTP code (None: no answer), `reason` the
    Status reason (NotFound, Conflict, ...)."""

    def __init__(self, message: str, *, status: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class KubeNotFound(KubeError):
    """404. `api_missing` is True when the API itself (group/version/resource) is not served, rather
    than the object missing: the real server's Status then names no object."""

    def __init__(self, message: str, *, status: int | None = 404, reason: str = "NotFound",
                 api_missing: bool = False) -> None:
        super().__init__(message, status=status, reason=reason)
        self.api_missing = api_missing


class KubeConflict(KubeError):
    """409, or 422 from a JSON patch whose `test` ops no longer hold: re-read and try again."""


class RolloutTimeout(KubeError):
    """A deployment did not finish rolling out before the deadline."""


class RolloutFailed(KubeError):
    """The deployment controller gave up (condition Progressing=False, ProgressDeadlineExceeded)."""


# ---------------------------------------------------------------------------------------- resources
@dataclass(frozen=True)
class CustomResource:
    """A custom resource type at one API version."""

    group: str
    version: str
    plural: str
    kind: str

    def at(self, version: str) -> CustomResource:
        return replace(self, version=version)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


VIRTUAL_SERVICE = CustomResource("networking.istio.io", "v1", "virtualservices", "VirtualService")
TRAFFIC_SPLIT = CustomResource("split.smi-spec.io", "v1alpha2", "trafficsplits", "TrafficSplit")
HTTP_ROUTE = CustomResource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")


@dataclass(frozen=True)
class WatchEvent:
    """One change seen by a watch. `type` is ADDED, MODIFIED or DELETED as the API server sends them,
    or SYNC for an object listed when the watch (re)starts: after a 410 Gone the watch re-lists, and
    the listing may hide changes, so consumers compare SYNC objects with what they knew."""

    type: str
    object: JSON

    @property
    def name(self) -> str:
        return str(self.object.get("metadata", {}).get("name", ""))


# ---------------------------------------------------------------------------------- error mapping
def _status_of(e: ApiException) -> JSON:
    body = e.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body:
        try:
            decoded = json.loads(body)
        except ValueError:
            return {"message": body.strip()[:300]}
        if isinstance(decoded, dict):
            return decoded
    return {}


def map_error(e: BaseException, what: str, verb: str, *, json_patch_test: bool = False) -> KubeError:
    """Our error for a failed call on `what` ("VirtualService orion/auth-service") by `verb`."""
    if isinstance(e, KubeError):
        return e
    if isinstance(e, _k().ApiException):
        status = _status_of(e)
        code = int(status.get("code") or e.status or 0)
        reason = str(status.get("reason") or e.reason or "")
        message = str(status.get("message") or e.reason or "").strip()
        text = f"{what} {verb} failed: {code} {reason}: {message}" if code else f"{what} {verb} failed: {message}"
        if code == 404:
            details = status.get("details")
            api_missing = not (isinstance(details, dict) and details.get("name"))
            return KubeNotFound(text, status=code, reason=reason, api_missing=api_missing)
        if code == 409 or (code == 422 and json_patch_test):
            return KubeConflict(text, status=code, reason=reason)
        return KubeError(text, status=code or None, reason=reason)
    if isinstance(e, asyncio.TimeoutError):
        return KubeError(f"{what} {verb} failed: timed out", reason="Timeout")
    if isinstance(e, aiohttp.ClientError | OSError):
        return KubeError(f"{what} {verb} failed: cannot reach the API server: {e}", reason="Unreachable")
    return KubeError(f"{what} {verb} failed: {type(e).__name__}: {e}")


def _client_errors() -> tuple[type[BaseException], ...]:
    return (_k().ApiException, aiohttp.ClientError, OSError, asyncio.TimeoutError)


def _has_test_op(patch: object) -> bool:
    return isinstance(patch, list) and any(isinstance(op, dict) and op.get("op") == "test" for op in patch)


async def read_modify_write(
    read: Callable[[], Awaitable[T]],
    compute_patch: Callable[[T], P],
    write: Callable[[P], Awaitable[R]],
    *,
    attempts: int = 5,
    backoff: float = 0.02,
) -> R:
    """Read, compute a change, write it; on KubeConflict re-read and try again, `attempts` times in all.

    `compute_patch` may raise to give up (e.g. the route no longer holds both destinations). The last
    KubeConflict is raised, with the attempt count in its message, when every attempt conflicted.
    """
    last: KubeConflict | None = None
    for attempt in range(attempts):
        current = await read()
        patch = compute_patch(current)
        try:
            return await write(patch)
        except KubeConflict as e:
            last = e
            log.info("conflict on attempt %d/%d, re-reading: %s", attempt + 1, attempts, e)
            await asyncio.sleep(backoff * attempt)  # the first retry is immediate
    assert last is not None, "attempts must be >= 1"
    raise KubeConflict(f"{last} (gave up after {attempts} attempts)", status=last.status, reason=last.reason)


# ------------------------------------------------------------------------------------ deployments
def container_images(deployment: Mapping[str, Any]) -> dict[str, str]:
    """Container name → image of a deployment's pod template (init containers excluded)."""
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
    return {c["name"]: c.get("image", "") for c in containers if isinstance(c, dict) and "name" in c}


def image_patch(deployment: Mapping[str, Any], images: Mapping[str, str]) -> list[JSON]:
    """A JSON patch setting container images by name, each guarded by a `test` on the container's
    name at its index (so a reordered container list is a conflict, not a wrong image)."""
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
    index = {c.get("name"): i for i, c in enumerate(containers) if isinstance(c, dict)}
    missing = [n for n in images if n not in index]
    if missing:
        known = ", ".join(str(n) for n in index) or "none"
        raise KubeError(f"Deployment {_ns_name(deployment)} has no container named {', '.join(missing)} "
                        f"(containers: {known})", reason="Invalid")
    ops: list[JSON] = [{"op": "test", "path": "/metadata/resourceVersion",
                        "value": deployment["metadata"]["resourceVersion"]}]
    for name, image in images.items():
        base = f"/spec/template/spec/containers/{index[name]}"
        ops.append({"op": "test", "path": f"{base}/name", "value": name})
        ops.append({"op": "replace" if "image" in containers[index[name]] else "add",
                    "path": f"{base}/image", "value": image})
    return ops


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


def _progress_deadline_exceeded(deployment: Mapping[str, Any]) -> str | None:
    for cond in (deployment.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return str(cond.get("message") or "progress deadline exceeded")
    return None


def _ns_name(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata", {})
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


# ------------------------------------------------------------------------------------------ client
def _resolve_env_once(api: client.ApiClient) -> None:
    """The client's session is built with trust_env, which makes aiohttp look up ~/.netrc and the proxy
    variables in a thread on every request: half the time of a rollback's PATCH on loopback, and a
    ~/.netrc entry for the API host breaks every request (its Authorization clashes with the token's).
    Resolve the proxy from the environment once, here, and use a session that does not look again."""
    rest = getattr(api, "rest_client", None)
    old = getattr(rest, "pool_manager", None)
    if rest is None or not isinstance(old, aiohttp.ClientSession):
        return
    if not rest.proxy:
        try:
            from aiohttp.helpers import get_env_proxy_for_url
            from yarl import URL

            proxy, _auth = get_env_proxy_for_url(URL(api.configuration.host))
            rest.proxy = str(proxy)
        except (LookupError, ValueError, ImportError):
            pass  # no proxy for this host
    rest.pool_manager = aiohttp.ClientSession(connector=old.connector, trust_env=False, read_bufsize=2**21)
    old.detach()


class KubeClient:
    """Kubernetes API access for canaryd, owning one kubernetes_asyncio ApiClient.

    Build it with `await KubeClient.connect(kubeconfig)` (None: in-cluster when running in a pod,
    else the default kubeconfig) or `from_kubeconfig(path)`; `await close()` when done (or use
    `async with`).
    """

    def __init__(self, api: client.ApiClient) -> None:
        self._api = api
        api.user_agent = f"canaryd/{__version__}"
        _resolve_env_once(api)
        self._custom = _k().client.CustomObjectsApi(api)
        self._apps = _k().client.AppsV1Api(api)

    @classmethod
    async def from_kubeconfig(cls, path: str | None = None, *, context: str | None = None) -> KubeClient:
        try:
            api = await _k().config.new_client_from_config(config_file=path, context=context, persist_config=False)
        except (_k().config.ConfigException, OSError, ValueError, TypeError, KeyError) as e:
            where = path or "the default kubeconfig (~/.kube/config)"
            raise KubeError(f"cannot load {where}: {e}", reason="Config") from e
        return cls(api)

    @classmethod
    async def in_cluster(cls) -> KubeClient:
        cfg = _k().client.Configuration()
        try:
            _k().config.load_incluster_config(client_configuration=cfg)
        except (_k().config.ConfigException, OSError) as e:
            raise KubeError(f"cannot load the in-cluster config: {e}", reason="Config") from e
        return cls(_k().client.ApiClient(configuration=cfg))

    @classmethod
    async def connect(cls, kubeconfig: str | None = None) -> KubeClient:
        """A kubeconfig path; or None: in-cluster inside a pod, else the default kubeconfig."""
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            return await cls.in_cluster()
        return await cls.from_kubeconfig(kubeconfig)

    async def close(self) -> None:
        await self._api.close()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, what: str, verb: str, coro: Awaitable[T], *, json_patch_test: bool = False) -> T:
        try:
            return await coro
        except _client_errors() as e:
            raise map_error(e, what, verb, json_patch_test=json_patch_test) from e

    def _plain(self, model: Any) -> JSON:
        """A client model as the API's JSON (camelCase keys, timestamps as strings)."""
        plain = self._api.sanitize_for_serialization(model)
        return plain if isinstance(plain, dict) else {}

    # ------------------------------------------------------------------------ custom objects
    @staticmethod
    def _what(res: CustomResource, namespace: str, name: str) -> str:
        return f"{res.kind} {namespace}/{name}"

    async def get_custom(self, res: CustomResource, namespace: str, name: str) -> JSON:
        return await self._call(
            self._what(res, namespace, name), "get",
            self._custom.get_namespaced_custom_object(res.group, res.version, namespace, res.plural, name),
        )

    async def list_custom(self, res: CustomResource, namespace: str) -> list[JSON]:
        listing = await self._call(
            f"{res.kind} {namespace}/*", "list",
            self._custom.list_namespaced_custom_object(res.group, res.version, namespace, res.plural),
        )
        return list(listing.get("items") or [])

    async def create_custom(self, res: CustomResource, namespace: str, body: Mapping[str, Any]) -> JSON:
        name = str(body.get("metadata", {}).get("name", ""))
        return await self._call(
            self._what(res, namespace, name), "create",
            self._custom.create_namespaced_custom_object(res.group, res.version, namespace, res.plural, dict(body)),
        )

    async def replace_custom(self, res: CustomResource, namespace: str, name: str, body: Mapping[str, Any]) -> JSON:
        """PUT; a `metadata.resourceVersion` in `body` makes it conditional (409 → KubeConflict)."""
        return await self._call(
            self._what(res, namespace, name), "replace",
            self._custom.replace_namespaced_custom_object(
                res.group, res.version, namespace, res.plural, name, dict(body)),
        )

    async def patch_custom(
        self, res: CustomResource, namespace: str, name: str, patch: Sequence[Mapping[str, Any]] | Mapping[str, Any]
    ) -> JSON:
        """A list is a JSON patch (RFC 6902; failed `test` ops → KubeConflict), a dict a merge patch."""
        is_json_patch = isinstance(patch, Sequence)
        body: Any = [dict(op) for op in patch] if is_json_patch else dict(patch)  # type: ignore[union-attr]
        content_type = JSON_PATCH if is_json_patch else MERGE_PATCH
        return await self._call(
            self._what(res, namespace, name), "patch",
            self._custom.patch_namespaced_custom_object(
                res.group, res.version, namespace, res.plural, name, body, _content_type=content_type),
            json_patch_test=_has_test_op(body),
        )

    async def delete_custom(self, res: CustomResource, namespace: str, name: str) -> None:
        await self._call(
            self._what(res, namespace, name), "delete",
            self._custom.delete_namespaced_custom_object(res.group, res.version, namespace, res.plural, name),
        )

    # --------------------------------------------------------------------------- deployments
    async def get_deployment(self, namespace: str, name: str) -> JSON:
        model = await self._call(
            f"Deployment {namespace}/{name}", "get", self._apps.read_namespaced_deployment(name, namespace)
        )
        return self._plain(model)

    async def list_deployments(self, namespace: str, *, name: str | None = None) -> tuple[list[JSON], str]:
        """The deployments (one, with `name`) and the list's resourceVersion, to watch from."""
        kwargs = {"field_selector": f"metadata.name={name}"} if name else {}
        listing = await self._call(
            f"Deployment {namespace}/{name or '*'}", "list", self._apps.list_namespaced_deployment(namespace, **kwargs)
        )
        plain = self._plain(listing)
        return list(plain.get("items") or []), str(plain.get("metadata", {}).get("resourceVersion", ""))

    async def patch_deployment(
        self, namespace: str, name: str, patch: Sequence[Mapping[str, Any]] | Mapping[str, Any]
    ) -> JSON:
        """A list is a JSON patch; a dict a strategic merge patch (the client's default for dicts)."""
        is_json_patch = isinstance(patch, Sequence)
        body: Any = [dict(op) for op in patch] if is_json_patch else dict(patch)  # type: ignore[union-attr]
        model = await self._call(
            f"Deployment {namespace}/{name}", "patch",
            self._apps.patch_namespaced_deployment(name, namespace, body),
            json_patch_test=_has_test_op(body),
        )
        return self._plain(model)

    async def set_images(
        self, namespace: str, name: str, images: Mapping[str, str], *, attempts: int = 5
    ) -> JSON:
        """Set container images by container name (`kubectl set image`); returns the patched deployment,
        whose metadata.generation is the one to wait for."""
        return await read_modify_write(
            lambda: self.get_deployment(namespace, name),
            lambda dep: image_patch(dep, images),
            lambda ops: self.patch_deployment(namespace, name, ops),
            attempts=attempts,
        )

    async def scale(self, namespace: str, name: str, replicas: int) -> None:
        """Set spec.replicas through the scale subresource (`kubectl scale`)."""
        await self._call(
            f"Deployment {namespace}/{name}", "scale",
            self._apps.patch_namespaced_deployment_scale(name, namespace, {"spec": {"replicas": replicas}}),
        )

    async def wait_for_rollout(
        self, namespace: str, name: str, *, timeout: float, poll_interval: float = 2.0
    ) -> JSON:
        """Poll until the deployment is rolled out (observedGeneration ≥ generation, every replica
        updated and available); return it. RolloutTimeout after `timeout` seconds, RolloutFailed when
        the controller reports ProgressDeadlineExceeded."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            dep = await self.get_deployment(namespace, name)
            done, why = rollout_status(dep)
            if done:
                return dep
            failed = _progress_deadline_exceeded(dep)
            if failed:
                raise RolloutFailed(f"Deployment {namespace}/{name} rollout failed: {failed}", reason="ProgressDeadlineExceeded")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise RolloutTimeout(
                    f"Deployment {namespace}/{name} rollout did not finish within {timeout:g}s: {why}", reason="Timeout"
                )
            await asyncio.sleep(min(poll_interval, remaining))

    async def watch_deployments(
        self, namespace: str, *, name: str | None = None, timeout_seconds: int = 300
    ) -> AsyncIterator[WatchEvent]:
        """Changes to deployments in `namespace` (one, with `name`), forever.

        Starts with SYNC for each existing deployment, then ADDED/MODIFIED/DELETED. Each watch request
        ends after `timeout_seconds` and resumes from the last resourceVersion seen; on 410 Gone it
        re-lists (SYNC again, DELETED for what disappeared meanwhile). Other failures raise KubeError.
        """
        what = f"Deployment {namespace}/{name or '*'}"
        known: set[str] = set()
        rv: str | None = None
        while True:
            if rv is None:
                items, rv = await self.list_deployments(namespace, name=name)
                listed = {str(i["metadata"]["name"]): i for i in items}
                for gone in sorted(known - listed.keys()):
                    yield WatchEvent("DELETED", {"metadata": {"name": gone, "namespace": namespace}})
                for obj in listed.values():
                    yield WatchEvent("SYNC", obj)
                known = set(listed)
            w = _k().watch.Watch()
            kwargs: dict[str, Any] = {"resource_version": rv, "timeout_seconds": timeout_seconds}
            if name:
                kwargs["field_selector"] = f"metadata.name={name}"
            stream = w.stream(self._apps.list_namespaced_deployment, namespace, **kwargs)
            started, events = asyncio.get_running_loop().time(), 0
            try:
                while True:
                    try:
                        event = await stream.__anext__()
                    except StopAsyncIteration:
                        # the server ended this watch request: resume from rv, not in a tight loop
                        if not events and asyncio.get_running_loop().time() - started < 1.0:
                            await asyncio.sleep(0.5)
                        break
                    except _k().ApiException as e:
                        if e.status == 410:
                            log.info("%s watch: resourceVersion %s expired, re-listing", what, rv)
                            rv = None
                            break
                        raise map_error(e, what, "watch") from e
                    except Exception as e:  # noqa: BLE001 - includes the client's "malformed JSON" Exception
                        raise map_error(e, what, "watch") from e
                    events += 1
                    obj = event.get("raw_object") or {}
                    rv = str(obj.get("metadata", {}).get("resourceVersion") or rv)
                    if event["type"] == "DELETED":
                        known.discard(str(obj.get("metadata", {}).get("name")))
                    elif event["type"] in ("ADDED", "MODIFIED"):
                        known.add(str(obj.get("metadata", {}).get("name")))
                    else:
                        continue  # BOOKMARK
                    yield WatchEvent(str(event["type"]), obj)
            finally:
                await w.close()

    # -------------------------------------------------------------------------------- leases
    async def run_leader_election(
        self,
        *,
        namespace: str,
        lease: str,
        identity: str,
        on_started_leading: Callable[[], Awaitable[None]],
        on_stopped_leading: Callable[[], Awaitable[None]],
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
    ) -> None:
        """Compete for the coordination.k8s.io/v1 Lease `namespace/lease` as `identity`, one round.

        While this replica leads, `on_started_leading()` runs as a task. The round ends when the lease
        is lost: that task is cancelled, then `on_stopped_leading()` runs, and this returns (callers
        loop to compete again). kubernetes_asyncio's LeaderElection does the election; around it this
        adds what it lacks: the leading task is also cancelled when the API server cannot be reached
        (raised here as KubeError) or when renewals stall past `renew_deadline` (a hung connection),
        so a replica that may have lost the lease stops acting at once. kubernetes_asyncio requires
        every duration >= 1 s and lease_duration > renew_deadline > 1.2 x retry_period (ValueError).
        """
        what = f"Lease {namespace}/{lease}"
        leading: asyncio.Task[Any] | None = None
        stopped = False

        async def started() -> None:
            nonlocal leading
            leading = asyncio.current_task()
            await on_started_leading()

        async def stop_once() -> None:
            nonlocal stopped
            if not stopped:
                stopped = True
                await on_stopped_leading()

        cfg = _k().electionconfig.Config(
            _k().LeaseLock(lease, namespace, identity, self._api), lease_duration, renew_deadline, retry_period,
            started, stop_once,
        )
        election = _k().leaderelection.LeaderElection(cfg)
        runner = asyncio.ensure_future(election.run())
        # look often enough to step down after renew_deadline and well before the lease expires
        check = max(0.05, min(retry_period, (lease_duration - renew_deadline) / 4))
        try:
            while True:
                done, _ = await asyncio.wait({runner}, timeout=check)
                if done:
                    runner.result()  # re-raises what the election raised
                    return
                stale_ms = time.time() * 1000 - election.observed_time_milliseconds
                if leading is not None and not leading.done() and stale_ms > renew_deadline * 1000:
                    log.warning("%s: no successful renewal for %.1fs; stepping down", what, stale_ms / 1000)
                    return
        except _client_errors() as e:
            raise map_error(e, what, "renew") from e
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
            if leading is not None:
                leading.cancel()
                await asyncio.gather(leading, return_exceptions=True)  # it has stopped before we say so
                await stop_once()
