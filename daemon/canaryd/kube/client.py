"""`KubeClient`: custom objects, deployments, watches and leases over one kubernetes_asyncio ApiClient.

Everything speaks plain JSON dicts (the API's camelCase), never the client's model classes, and raises
only the errors of `canaryd.kube.errors`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp

from canaryd import __version__

from . import leader_election, watch
from .errors import KubeError, RolloutFailed, RolloutTimeout, client_errors, map_error
from .lazy import kubernetes
from .patches import JSON_PATCH, MERGE_PATCH, has_test_op, image_patch, read_modify_write, template_patch
from .resources import JSON, CustomResource, WatchEvent
from .rollout import progress_deadline_exceeded, rollout_status

if TYPE_CHECKING:
    from .lazy import client

T = TypeVar("T")


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


KUBECONFIG_HINT = "point canaryd at a cluster with --kubeconfig FILE, KUBECONFIG=FILE or kubernetes.kubeconfig in the config"


def kubeconfig_files(path: str | None) -> tuple[str, str | None]:
    """The kubeconfig to read (the given file, else $KUBECONFIG, a list, else ~/.kube/config), and a one-line
    message naming what is missing when none of its files exists (None when one does)."""
    env = os.environ.get("KUBECONFIG")
    files = path or env or os.path.join("~", ".kube", "config")
    if any(os.path.exists(os.path.expanduser(f)) for f in files.split(os.pathsep) if f):
        return files, None
    if path:
        return files, f"the kubeconfig {path} does not exist; {KUBECONFIG_HINT}"
    if env:
        return files, f"no kubeconfig: KUBECONFIG={env} names no existing file; {KUBECONFIG_HINT}"
    return files, (f"no kubeconfig: {os.path.expanduser(files)} does not exist and KUBECONFIG is not set "
                   f"(not in a cluster either); {KUBECONFIG_HINT}")


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
        self._custom = kubernetes().client.CustomObjectsApi(api)
        self._apps = kubernetes().client.AppsV1Api(api)

    @classmethod
    async def from_kubeconfig(cls, path: str | None = None, *, context: str | None = None) -> KubeClient:
        files, missing = kubeconfig_files(path)
        if missing:  # say it ourselves: the library would log a stray "Config not found" and then fail
            raise KubeError(missing, reason="Config")
        try:
            api = await kubernetes().config.new_client_from_config(
                config_file=files, context=context, persist_config=False)
        except (kubernetes().config.ConfigException, OSError, ValueError, TypeError, KeyError) as e:
            detail = " ".join(str(e).split())  # one line, whatever the library's message holds
            raise KubeError(f"cannot load the kubeconfig {files}: {detail}; {KUBECONFIG_HINT}", reason="Config") from e
        return cls(api)

    @classmethod
    async def in_cluster(cls) -> KubeClient:
        cfg = kubernetes().client.Configuration()
        try:
            kubernetes().config.load_incluster_config(client_configuration=cfg)
        except (kubernetes().config.ConfigException, OSError) as e:
            raise KubeError(f"cannot load the in-cluster config: {e}", reason="Config") from e
        return cls(kubernetes().client.ApiClient(configuration=cfg))

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
        except client_errors() as e:
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
            json_patch_test=has_test_op(body),
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
            json_patch_test=has_test_op(body),
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

    async def copy_template(
        self, namespace: str, name: str, source: Mapping[str, Any], *, attempts: int = 5
    ) -> JSON:
        """Give Deployment `name` the pod template of Deployment `source` (see patches.promoted_template);
        returns the patched deployment, whose metadata.generation is the one to wait for."""
        return await read_modify_write(
            lambda: self.get_deployment(namespace, name),
            lambda dep: template_patch(dep, source),
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
            failed = progress_deadline_exceeded(dep)
            if failed:
                raise RolloutFailed(f"Deployment {namespace}/{name} rollout failed: {failed}", reason="ProgressDeadlineExceeded")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise RolloutTimeout(
                    f"Deployment {namespace}/{name} rollout did not finish within {timeout:g}s: {why}", reason="Timeout"
                )
            await asyncio.sleep(min(poll_interval, remaining))

    def watch_deployments(
        self, namespace: str, *, name: str | None = None, timeout_seconds: int = 300
    ) -> AsyncIterator[WatchEvent]:
        """Changes to deployments in `namespace` (one, with `name`), forever.

        Starts with SYNC for each existing deployment, then ADDED/MODIFIED/DELETED. Each watch request
        ends after `timeout_seconds` and resumes from the last resourceVersion seen; on 410 Gone it
        re-lists (SYNC again, DELETED for what disappeared meanwhile). Other failures raise KubeError.
        """
        return watch.watch_deployments(self.list_deployments, self._apps.list_namespaced_deployment, namespace,
                                 name=name, timeout_seconds=timeout_seconds)

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
        await leader_election.run_leader_election(
            self._api, namespace=namespace, lease=lease, identity=identity,
            on_started_leading=on_started_leading, on_stopped_leading=on_stopped_leading,
            lease_duration=lease_duration, renew_deadline=renew_deadline, retry_period=retry_period,
        )
