"""A fake kube-apiserver over real HTTP (aiohttp), for kubernetes_asyncio to talk to in tests.

It is faithful where canaryd depends on the API server's behaviour, and nowhere else:

- One object store per group/resource, shared by every served API version (the object is served with
  the `apiVersion` the request asked for). `resourceVersion` is a global counter bumped on every write,
  as etcd's revision is; `metadata.generation` bumps when `spec` changes.
- Writes: create (409 AlreadyExists), replace (409 Conflict on a stale `metadata.resourceVersion`),
  patch by content type: `application/json-patch+json` (RFC 6902, a failed `test` is 422 Invalid),
  `application/merge-patch+json` (RFC 7386), `application/strategic-merge-patch+json` for deployments
  only (a merge patch whose lists of named items merge by `name`), 415 for anything else. A patch that
  sets `metadata.resourceVersion` is a precondition, as on the real server. Delete.
- Errors carry a `Status` body (`kind: Status`, `reason`, `code`, `message`, `details`). A missing
  object's details name it; an API that is not served has empty details, like the real 404.
- Watch (`?watch=true&resourceVersion=N&timeoutSeconds=S`) streams JSON lines; with no
  resourceVersion (or "0") it starts with ADDED for every object. A resourceVersion older than the
  compaction point gets `{"type": "ERROR", "object": Status 410 Expired}`.
- Served: apps/v1 deployments (+ `scale`, `status` subresources), coordination.k8s.io/v1 leases,
  networking.istio.io v1/v1beta1 virtualservices, split.smi-spec.io v1alpha1..4 trafficsplits,
  gateway.networking.k8s.io v1/v1beta1 httproutes, canaryd.io v1alpha1 canaries (+ `status`: writes
  through the main resource keep the stored status, `/status` writes change only the status),
  events.k8s.io/v1 events, batch/v1 jobs, core v1 pods (`/api/v1`; lists filter by equality
  `labelSelector`), and enough discovery (`/api`, `/apis`, `/version`). Lists and watches
  without a namespace span every namespace. `unserve("canaryd.io", "v1alpha1")` is a cluster without
  the CRD.

Hooks for tests: every request is recorded (verb, path, bearer token, status, body) so a test can count
requests per (verb, path) and writes per client (each client gets its own token in its kubeconfig);
`inject_conflict_once` makes another writer change an object just before a client's next write;
`inject_error`, `inject_delay`; `set_deployment_status`, `set_status` (any object's), `complete_rollout`, `auto_rollout`; `compact`,
`close_watches`; `unserve` an API version.

Use it from async tests (`async with FakeKube() as fake:`) or from sync code and scripts in a thread
of its own (`with FakeKube().in_thread() as fake:`); the hooks are safe to call from either side.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import json
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

JSON = dict[str, Any]
HOST = "127.0.0.1"
MAX_HTTPROUTE_WEIGHT = 1_000_000


@dataclass(frozen=True)
class Resource:
    """One served resource: its group, the versions served for it and how it behaves."""

    group: str
    versions: tuple[str, ...]
    plural: str
    kind: str
    strategic_merge: bool = False  # accepts application/strategic-merge-patch+json (built-in types)
    status_subresource: bool = False  # status is ignored on writes through the main resource
    subresources: tuple[str, ...] = ()


RESOURCES: tuple[Resource, ...] = (
    Resource(
        "apps", ("v1",), "deployments", "Deployment",
        strategic_merge=True, status_subresource=True, subresources=("scale", "status"),
    ),
    Resource("coordination.k8s.io", ("v1",), "leases", "Lease", strategic_merge=True),
    Resource("networking.istio.io", ("v1", "v1beta1"), "virtualservices", "VirtualService"),
    Resource(
        "split.smi-spec.io", ("v1alpha4", "v1alpha3", "v1alpha2", "v1alpha1"), "trafficsplits", "TrafficSplit"
    ),
    Resource("gateway.networking.k8s.io", ("v1", "v1beta1"), "httproutes", "HTTPRoute"),
    # canaryd's own CRD (deploy/crd/canaries.canaryd.io.yaml), with its status subresource
    Resource("canaryd.io", ("v1alpha1",), "canaries", "Canary", status_subresource=True, subresources=("status",)),
    Resource("events.k8s.io", ("v1",), "events", "Event", strategic_merge=True),
    # batch/v1 jobs (gates run as Jobs) and core v1 pods (/api/v1, group ""): the canary's pods
    Resource("batch", ("v1",), "jobs", "Job", strategic_merge=True, status_subresource=True, subresources=("status",)),
    Resource("", ("v1",), "pods", "Pod", strategic_merge=True),
)


def _api_version(group: str, version: str) -> str:
    return f"{group}/{version}" if group else version

WRITE_VERBS = frozenset({"create", "update", "patch", "delete"})


# --------------------------------------------------------------------------------------------- errors
class ApiError(Exception):
    """An error answered as a `Status` body, the way kube-apiserver answers it."""

    def __init__(self, code: int, reason: str, message: str, details: JSON | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> JSON:
        return status_body(self.code, self.reason, self.message, self.details)

    def response(self) -> web.Response:
        return web.json_response(self.status(), status=self.code)


def status_body(code: int, reason: str, message: str, details: JSON | None = None) -> JSON:
    body: JSON = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success" if code < 400 else "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details is not None:
        body["details"] = details
    return body


def _not_served() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def _object_details(res: Resource, name: str) -> JSON:
    return {"name": name, "group": res.group, "kind": res.plural}


def _qualified(res: Resource) -> str:
    return f"{res.plural}.{res.group}"


def _not_found(res: Resource, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{_qualified(res)} "{name}" not found', _object_details(res, name))


def _conflict(res: Resource, name: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_qualified(res)} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        _object_details(res, name),
    )


def _invalid(res: Resource, name: str, message: str) -> ApiError:
    return ApiError(422, "Invalid", f'{res.kind}.{res.group} "{name}" is invalid: {message}',
                    _object_details(res, name))


# ------------------------------------------------------------------------------------- patch algebra
class PatchError(ValueError):
    """A patch that cannot be applied (answered 422 Invalid, as kube-apiserver does)."""


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}: must start with '/'")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _index(token: str, size: int, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return size
    if not token.isdigit() or (len(token) > 1 and token[0] == "0"):
        raise PatchError(f"invalid array index {token!r}")
    i = int(token)
    if i > size or (i == size and not allow_end):
        raise PatchError(f"array index {i} out of range (length {size})")
    return i


def _walk(doc: Any, tokens: Sequence[str], path: str) -> Any:
    node = doc
    for t in tokens:
        if isinstance(node, dict):
            if t not in node:
                raise PatchError(f"path {path!r} does not exist (missing key {t!r})")
            node = node[t]
        elif isinstance(node, list):
            node = node[_index(t, len(node), allow_end=False)]
        else:
            raise PatchError(f"path {path!r} does not exist")
    return node


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but true != 1 (Python's == says otherwise)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def apply_json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 on a deep copy of `doc`. Raises PatchError naming the failing operation."""
    if not isinstance(ops, list):
        raise PatchError("a JSON patch must be a JSON array of operations")
    doc = copy.deepcopy(doc)

    def add(doc: Any, path: str, value: Any) -> Any:
        tokens = _pointer(path)
        if not tokens:
            return value
        parent = _walk(doc, tokens[:-1], path)
        last = tokens[-1]
        if isinstance(parent, dict):
            parent[last] = value
        elif isinstance(parent, list):
            parent.insert(_index(last, len(parent), allow_end=True), value)
        else:
            raise PatchError(f"path {path!r}: parent is not an object or array")
        return doc

    def remove(doc: Any, path: str) -> tuple[Any, Any]:
        tokens = _pointer(path)
        if not tokens:
            raise PatchError("cannot remove the whole document")
        parent = _walk(doc, tokens[:-1], path)
        last = tokens[-1]
        if isinstance(parent, dict):
            if last not in parent:
                raise PatchError(f"path {path!r} does not exist (missing key {last!r})")
            return doc, parent.pop(last)
        if isinstance(parent, list):
            return doc, parent.pop(_index(last, len(parent), allow_end=False))
        raise PatchError(f"path {path!r} does not exist")

    for n, op in enumerate(ops):
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"operation {n} must be an object with 'op' and 'path'")
        kind, path = op["op"], op["path"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"operation {n} ({kind} {path}) has no 'value'")
        if kind == "add":
            doc = add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            doc, _ = remove(doc, path)
        elif kind == "replace":
            _walk(doc, _pointer(path), path)  # must exist
            if _pointer(path):
                doc, _ = remove(doc, path)
            doc = add(doc, path, copy.deepcopy(op["value"]))
        elif kind in ("move", "copy"):
            src = op.get("from")
            if not isinstance(src, str):
                raise PatchError(f"operation {n} ({kind} {path}) has no 'from'")
            if kind == "move":
                if path.startswith(src + "/"):
                    raise PatchError(f"cannot move {src!r} into its own child {path!r}")
                doc, value = remove(doc, src)
            else:
                value = copy.deepcopy(_walk(doc, _pointer(src), src))
            doc = add(doc, path, value)
        elif kind == "test":
            found = _walk(doc, _pointer(path), path)
            if not json_equal(found, op["value"]):
                raise PatchError(
                    f"testing value {path} failed: test failed "
                    f"(expected {json.dumps(op['value'])}, found {json.dumps(found)})"
                )
        else:
            raise PatchError(f"operation {n}: unknown op {kind!r}")
    return doc


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


def _named_list(items: Any) -> bool:
    return isinstance(items, list) and all(isinstance(i, dict) and "name" in i for i in items)


def apply_strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A merge patch in which lists of named items (containers, env) merge by `name`.

    This is the part of Kubernetes' strategic merge that canaryd uses (`kubectl set image`, scale);
    `$patch` directives are not supported.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        current = result.get(key)
        if value is None:
            result.pop(key, None)
        elif _named_list(value) and _named_list(current) and current:
            merged = [copy.deepcopy(item) for item in current]
            for item in value:
                at = next((i for i, c in enumerate(merged) if c["name"] == item["name"]), None)
                if at is None:
                    merged.append(copy.deepcopy(item))
                else:
                    merged[at] = apply_strategic_merge_patch(merged[at], item)
            result[key] = merged
        else:
            result[key] = apply_strategic_merge_patch(current, value)
    return result


# ----------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class RequestRecord:
    """One request the fake answered. `verb` is Kubernetes' (get, list, watch, create, update, ...)."""

    verb: str
    method: str
    path: str
    query: str
    token: str | None
    user_agent: str
    content_type: str
    resource: str | None  # plural, e.g. "virtualservices"; None for discovery
    namespace: str | None
    name: str | None
    subresource: str | None
    status: int
    body: Any = None  # the decoded JSON body of a write, for assertions
    received_at: float = 0.0  # time.monotonic() when the request arrived (for latency benchmarks)

    @property
    def is_write(self) -> bool:
        return self.verb in WRITE_VERBS


@dataclass(frozen=True)
class _Event:
    rv: int
    group: str
    plural: str
    namespace: str
    name: str
    type: str
    obj: JSON


@dataclass(eq=False)
class _Watcher:
    res: Resource
    version: str
    namespace: str | None
    name: str | None
    queue: asyncio.Queue[_Event | None] = field(default_factory=asyncio.Queue)

    def wants(self, ev: _Event) -> bool:
        return (
            (ev.group, ev.plural) == (self.res.group, self.res.plural)
            and (self.namespace is None or ev.namespace == self.namespace)
            and (self.name is None or ev.name == self.name)
        )


@dataclass
class _Injected:
    status: int
    reason: str
    verb: str | None
    resource: str | None
    name: str | None
    remaining: int


@dataclass(frozen=True)
class _Target:
    res: Resource
    version: str
    namespace: str | None
    name: str | None
    subresource: str | None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.capitalize() for p in rest)


def write_kubeconfig(path: str | Path, server_url: str, token: str, *, name: str = "fake") -> Path:
    """Write a kubeconfig whose current context talks to `server_url` with bearer `token`."""
    path = Path(path)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server_url}}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": "default"}}],
        "current-context": name,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# -------------------------------------------------------------------------------------- the server
class FakeKube:
    """The fake API server. `await start()` binds a free loopback port; `url` is its address."""

    def __init__(self, *, port: int = 0, tokens: Sequence[str] | None = None) -> None:
        self._port = port
        self.tokens: frozenset[str] | None = frozenset(tokens) if tokens is not None else None
        self.requests: list[RequestRecord] = []
        # called with each RequestRecord as it is recorded (on the server's loop thread)
        self.on_request: Callable[[RequestRecord], None] | None = None
        # seconds after a spec change at which the deployment "rolls out" by itself; None: never
        self.auto_rollout: float | None = None
        self._resources = {(r.group, r.plural): r for r in RESOURCES}
        self._served = {(r.group, v) for r in RESOURCES for v in r.versions}
        self._objects: dict[tuple[str, str], dict[tuple[str, str], JSON]] = {
            key: {} for key in self._resources
        }
        self._rv = 0
        self._compacted = 0
        self._history: list[_Event] = []
        self._watchers: set[_Watcher] = set()
        self._conflicts: dict[tuple[str, str, str], list[Callable[[JSON], None] | None]] = {}
        self._errors: list[_Injected] = []
        self._delays: list[_Injected] = []  # status holds the delay in milliseconds
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._url = ""

    # ---------------------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        if not self._url:
            raise RuntimeError("FakeKube is not started")
        return self._url

    async def start(self) -> str:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a watch whose client went away ends at once, not at its next event
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0, handler_cancellation=True)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, self._port))
        self._port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        self._loop = asyncio.get_running_loop()
        self._url = f"http://{HOST}:{self._port}"
        return self._url

    async def stop(self) -> None:
        self._close_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeKube:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @contextlib.contextmanager
    def in_thread(self) -> Iterator[FakeKube]:
        """Run the server on an event loop in a thread of its own (for sync tests and scripts)."""
        started = threading.Event()
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start())
            started.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-kube", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("FakeKube did not start within 10 s")
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(10)
            self._thread = None

    def _on_loop(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a state change on the server's loop thread (directly when already there)."""
        if self._thread is None or threading.current_thread() is self._thread or self._loop is None:
            return fn(*args, **kwargs)
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn(*args, **kwargs))
            except BaseException as e:  # noqa: BLE001 - handed back to the calling thread
                done.set_exception(e)

        self._loop.call_soon_threadsafe(run)
        return done.result(timeout=10)

    def kubeconfig(self, directory: str | Path, client: str = "test") -> Path:
        """A kubeconfig for one client; its token is `client`, so requests are counted per client."""
        return write_kubeconfig(Path(directory) / f"kubeconfig-{client}", self.url, client)

    # ------------------------------------------------------------------------- test hooks
    @property
    def resource_version(self) -> int:
        return self._rv

    @property
    def watch_count(self) -> int:
        """How many watch streams are open now."""
        return len(self._watchers)

    def open_watches(self, plural: str) -> list[str | None]:
        """The namespaces (None: all) of the watch streams on `plural` open now."""
        return [w.namespace for w in list(self._watchers) if w.res.plural == plural]

    def resource(self, name: str) -> Resource:
        """A served resource by plural or kind, case-insensitive ("virtualservices", "VirtualService")."""
        for r in RESOURCES:
            if name.lower() in (r.plural, r.kind.lower()):
                return r
        raise KeyError(f"unknown resource {name!r}; known: {', '.join(r.plural for r in RESOURCES)}")

    def add(self, obj: Mapping[str, Any]) -> JSON:
        """Store an object as if created (kind/apiVersion pick the resource). Returns the stored copy."""
        return copy.deepcopy(self._on_loop(self._add, copy.deepcopy(dict(obj))))

    def get_object(self, resource: str, namespace: str, name: str) -> JSON | None:
        res = self.resource(resource)
        obj = self._objects[(res.group, res.plural)].get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def remove(self, resource: str, namespace: str, name: str) -> None:
        res = self.resource(resource)
        self._on_loop(self._delete, res, namespace, name)

    def set_deployment_status(self, namespace: str, name: str, **fields: Any) -> JSON:
        """Merge status fields (snake_case: observed_generation, replicas, updated_replicas,
        available_replicas, ready_replicas, conditions) into a deployment's status, as a write."""
        status = {_camel(k): v for k, v in fields.items()}
        return copy.deepcopy(self._on_loop(self._set_status, namespace, name, status))

    def set_status(self, resource: str, namespace: str, name: str, status: JSON) -> JSON:
        """Merge `status` (the API's camelCase) into any object's status, as its controller would (a Job's
        succeeded/failed and conditions, a pod's containerStatuses)."""
        def run() -> JSON:
            res = self.resource(resource)
            current = self._store(res).get((namespace, name))
            if current is None:
                raise _not_found(res, name)
            new = copy.deepcopy(current)
            new["status"] = apply_merge_patch(new.get("status") or {}, status)
            return self._replace(res, current, new, main_resource=False)
        return copy.deepcopy(self._on_loop(run))  # type: ignore[no-any-return]

    def complete_rollout(self, namespace: str, name: str) -> JSON:
        """What the deployment controller does once the new pods are available."""
        return copy.deepcopy(self._on_loop(self._complete_rollout, namespace, name))

    def inject_conflict(
        self,
        resource: str,
        namespace: str,
        name: str,
        *,
        times: int = 1,
        mutate: Callable[[JSON], None] | None = None,
    ) -> None:
        """Before each of the next `times` writes to the object, another writer changes it first.

        `mutate(obj)` edits the stored object in place; by default it sets an annotation, which is
        enough to bump resourceVersion and fail a `test` on it or a replace with the old one.
        """
        res = self.resource(resource)
        key = (res.plural, namespace, name)
        self._on_loop(lambda: self._conflicts.setdefault(key, []).extend([mutate] * times))

    def inject_conflict_once(
        self, resource: str, namespace: str, name: str, mutate: Callable[[JSON], None] | None = None
    ) -> None:
        self.inject_conflict(resource, namespace, name, times=1, mutate=mutate)

    def inject_error(
        self,
        status: int,
        *,
        verb: str | None = None,
        resource: str | None = None,
        name: str | None = None,
        times: int = 1,
        reason: str = "InternalError",
    ) -> None:
        """Answer the next `times` matching requests with `status` and a Status body."""
        plural = self.resource(resource).plural if resource else None
        self._on_loop(self._errors.append, _Injected(status, reason, verb, plural, name, times))

    def inject_delay(
        self,
        seconds: float,
        *,
        verb: str | None = None,
        resource: str | None = None,
        name: str | None = None,
        times: int = 1,
    ) -> None:
        """Hold the next `times` matching requests for `seconds` before answering (a hung server)."""
        plural = self.resource(resource).plural if resource else None
        self._on_loop(self._delays.append, _Injected(int(seconds * 1000), "", verb, plural, name, times))

    def compact(self, at: int | None = None) -> None:
        """Forget history before `at` (default: now); watches from older versions get 410 Gone."""
        self._on_loop(self._compact, self._rv if at is None else at)

    def close_watches(self) -> None:
        """End every open watch stream, as an API server does on timeout or restart."""
        self._on_loop(self._close_watches)

    def unserve(self, group: str, version: str) -> None:
        """Stop serving one API version (requests to it get the real server's 404)."""
        self._on_loop(self._served.discard, (group, version))

    def serve(self, group: str, version: str) -> None:
        self._on_loop(self._served.add, (group, version))

    # ------------------------------------------------------------------------ request log
    def count(
        self,
        verb: str | None = None,
        *,
        path: str | None = None,
        token: str | None = None,
        resource: str | None = None,
        name: str | None = None,
    ) -> int:
        plural = self.resource(resource).plural if resource else None
        return sum(
            1
            for r in list(self.requests)
            if (verb is None or r.verb == verb)
            and (path is None or r.path == path)
            and (token is None or r.token == token)
            and (plural is None or r.resource == plural)
            and (name is None or r.name == name)
        )

    def writes(
        self, token: str | None = None, *, resource: str | None = None, exclude: Sequence[str] = ()
    ) -> list[RequestRecord]:
        """Write requests (create, update, patch, delete; answered or refused), optionally by one
        client's token, one resource, or excluding resources (e.g. `exclude=("leases",)`)."""
        plural = self.resource(resource).plural if resource else None
        skip = {self.resource(x).plural for x in exclude}
        return [
            r
            for r in list(self.requests)
            if r.is_write
            and (token is None or r.token == token)
            and (plural is None or r.resource == plural)
            and r.resource not in skip
        ]

    async def wait_for_request(
        self, predicate: Callable[[RequestRecord], bool], *, timeout: float = 5.0
    ) -> RequestRecord:
        """The first recorded request matching `predicate`, waiting up to `timeout` seconds for it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for r in list(self.requests):
                if predicate(r):
                    return r
            if loop.time() >= deadline:
                raise TimeoutError(f"no matching request within {timeout}s ({len(self.requests)} seen)")
            await asyncio.sleep(0.005)

    def request_counts(self) -> Counter[tuple[str, str]]:
        """Requests per (verb, path)."""
        return Counter((r.verb, r.path) for r in list(self.requests))

    # ---------------------------------------------------------------------- store internals
    def _store(self, res: Resource) -> dict[tuple[str, str], JSON]:
        return self._objects[(res.group, res.plural)]

    def _resource_of(self, obj: Mapping[str, Any]) -> Resource:
        group = str(obj.get("apiVersion", "")).rpartition("/")[0]  # "v1": the core group ""
        for r in RESOURCES:
            if r.kind == obj.get("kind") and r.group == group:
                return r
        raise KeyError(f"no served resource for apiVersion={obj.get('apiVersion')!r} kind={obj.get('kind')!r}")

    def _add(self, obj: JSON) -> JSON:
        res = self._resource_of(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", "default")
        if res.plural == "deployments":
            obj.setdefault("spec", {}).setdefault("replicas", 1)
            obj.setdefault("status", {})
        return self._create(res, meta["namespace"], obj)

    def _create(self, res: Resource, namespace: str, obj: JSON) -> JSON:
        meta = obj.setdefault("metadata", {})
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            raise _invalid(res, "", "metadata.name: Required value: name is required")
        if (namespace, name) in self._store(res):
            raise ApiError(409, "AlreadyExists", f'{_qualified(res)} "{name}" already exists',
                           _object_details(res, name))
        meta.pop("resourceVersion", None)
        meta["namespace"] = namespace
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta["generation"] = 1
        obj["apiVersion"] = _api_version(res.group, res.versions[0])
        obj["kind"] = res.kind
        self._validate(res, obj)
        return self._commit(res, namespace, name, obj, "ADDED")

    def _commit(self, res: Resource, namespace: str, name: str, obj: JSON, kind: str) -> JSON:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        store = self._store(res)
        if kind == "DELETED":
            store.pop((namespace, name), None)
        else:
            store[(namespace, name)] = obj
        ev = _Event(self._rv, res.group, res.plural, namespace, name, kind, copy.deepcopy(obj))
        self._history.append(ev)
        for w in list(self._watchers):
            if w.wants(ev):
                w.queue.put_nowait(ev)
        return obj

    def _replace(self, res: Resource, current: JSON, new: JSON, *, main_resource: bool = True) -> JSON:
        """Store `new` in place of `current`, keeping what the server owns."""
        meta, old_meta = new.setdefault("metadata", {}), current["metadata"]
        for key in ("name", "namespace", "uid", "creationTimestamp"):
            meta[key] = old_meta[key]
        meta["generation"] = old_meta.get("generation", 1)
        if new.get("spec") != current.get("spec"):
            meta["generation"] += 1
        if res.status_subresource and main_resource:
            if "status" in current:
                new["status"] = copy.deepcopy(current["status"])
            else:
                new.pop("status", None)
        new["apiVersion"], new["kind"] = current["apiVersion"], res.kind
        self._validate(res, new)
        spec_changed = new.get("spec") != current.get("spec")
        stored = self._commit(res, meta["namespace"], meta["name"], new, "MODIFIED")
        if spec_changed and res.plural == "deployments" and self.auto_rollout is not None:
            self._schedule_rollout(meta["namespace"], meta["name"])
        return stored

    def _delete(self, res: Resource, namespace: str, name: str) -> JSON:
        current = self._store(res).get((namespace, name))
        if current is None:
            raise _not_found(res, name)
        return self._commit(res, namespace, name, copy.deepcopy(current), "DELETED")

    def _validate(self, res: Resource, obj: JSON) -> None:
        name = obj["metadata"].get("name", "")
        spec = obj.get("spec")
        if spec is not None and not isinstance(spec, dict):
            raise _invalid(res, name, "spec: Invalid value: must be an object")
        spec = spec or {}
        if res.plural == "deployments":
            replicas = spec.get("replicas", 1)
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise _invalid(res, name, f"spec.replicas: Invalid value: {replicas!r}: must be >= 0")
        elif res.plural == "httproutes":
            for i, rule in enumerate(spec.get("rules") or []):
                for j, ref in enumerate(rule.get("backendRefs") or []):
                    w = ref.get("weight", 1)
                    if not isinstance(w, int) or isinstance(w, bool) or not 0 <= w <= MAX_HTTPROUTE_WEIGHT:
                        raise _invalid(
                            res, name,
                            f"spec.rules[{i}].backendRefs[{j}].weight: Invalid value: {w!r}: "
                            f"must be an integer in 0..{MAX_HTTPROUTE_WEIGHT}",
                        )
        elif res.plural == "virtualservices":
            for i, route in enumerate(spec.get("http") or []):
                for j, dest in enumerate(route.get("route") or []):
                    w = dest.get("weight", 0)
                    if not isinstance(w, int) or isinstance(w, bool) or w < 0:
                        raise _invalid(res, name, f"spec.http[{i}].route[{j}].weight: Invalid value: {w!r}")

    def _set_status(self, namespace: str, name: str, status: JSON) -> JSON:
        res = self.resource("deployments")
        current = self._store(res).get((namespace, name))
        if current is None:
            raise _not_found(res, name)
        new = copy.deepcopy(current)
        new["status"] = {**new.get("status", {}), **status}
        return self._commit(res, namespace, name, new, "MODIFIED")

    def _complete_rollout(self, namespace: str, name: str) -> JSON:
        res = self.resource("deployments")
        current = self._store(res).get((namespace, name))
        if current is None:
            raise _not_found(res, name)
        replicas = current.get("spec", {}).get("replicas", 1)
        return self._set_status(
            namespace,
            name,
            {
                "observedGeneration": current["metadata"]["generation"],
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
            },
        )

    def _schedule_rollout(self, namespace: str, name: str) -> None:
        def complete() -> None:
            with contextlib.suppress(ApiError):
                self._complete_rollout(namespace, name)

        assert self._loop is not None and self.auto_rollout is not None
        if self.auto_rollout <= 0:
            complete()
        else:
            self._loop.call_later(self.auto_rollout, complete)

    def _compact(self, at: int) -> None:
        self._compacted = max(self._compacted, at)
        self._history = [e for e in self._history if e.rv > self._compacted]

    def _close_watches(self) -> None:
        for w in list(self._watchers):
            w.queue.put_nowait(None)

    def _before_write(self, res: Resource, namespace: str, name: str) -> None:
        """Play an injected conflicting write, if one is pending for this object."""
        pending = self._conflicts.get((res.plural, namespace, name))
        current = self._store(res).get((namespace, name))
        if not pending or current is None:
            return
        mutate = pending.pop(0)
        new = copy.deepcopy(current)
        if mutate is None:
            annotations = new["metadata"].setdefault("annotations", {})
            annotations["fake-kube/conflict"] = str(int(annotations.get("fake-kube/conflict", "0")) + 1)
        else:
            mutate(new)
        self._replace(res, current, new, main_resource=False)

    # ---------------------------------------------------------------------------- HTTP side
    def _served_object(self, obj: JSON, res: Resource, version: str) -> JSON:
        out = copy.deepcopy(obj)
        out["apiVersion"] = _api_version(res.group, version)
        out["kind"] = res.kind
        return out

    def _parse(self, path: str) -> _Target | web.Response:
        parts = [p for p in path.split("/") if p]
        if parts == ["version"]:
            return web.json_response({"major": "1", "minor": "31", "gitVersion": "v1.31.0-fake"})
        if parts == ["api"]:
            return web.json_response({"kind": "APIVersions", "versions": ["v1"]})
        if parts == ["api", "v1"]:
            return web.json_response(self._resource_list("", "v1"))
        if len(parts) > 2 and parts[:2] == ["api", "v1"]:
            return self._target("", "v1", parts[2:])
        if parts == ["apis"]:
            return web.json_response(
                {"kind": "APIGroupList", "apiVersion": "v1", "groups": [self._group(g) for g in self._groups()]}
            )
        if len(parts) < 2 or parts[0] != "apis":
            raise _not_served()
        group = parts[1]
        if group not in self._groups():
            raise _not_served()
        if len(parts) == 2:
            return web.json_response(self._group(group))
        version = parts[2]
        if (group, version) not in self._served:
            raise _not_served()
        if len(parts) == 3:
            return web.json_response(self._resource_list(group, version))
        return self._target(group, version, parts[3:])

    def _target(self, group: str, version: str, rest: list[str]) -> _Target:
        if (group, version) not in self._served:
            raise _not_served()
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        res = self._resources.get((group, rest[0]))
        if res is None or len(rest) > 3 or (namespace is None and len(rest) > 1):
            raise _not_served()
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and sub not in res.subresources:
            raise _not_served()
        return _Target(res, version, namespace, name, sub)

    def _groups(self) -> list[str]:
        return sorted({g for g, _ in self._served if g})  # the core group is /api, not /apis

    def _group(self, group: str) -> JSON:
        versions = [
            {"groupVersion": f"{group}/{v}", "version": v}
            for r in RESOURCES
            if r.group == group
            for v in r.versions
            if (group, v) in self._served
        ]
        return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": versions,
                "preferredVersion": versions[0]}

    def _resource_list(self, group: str, version: str) -> JSON:
        resources: list[JSON] = []
        for r in RESOURCES:
            if r.group != group:
                continue
            verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
            resources.append({"name": r.plural, "singularName": r.kind.lower(), "namespaced": True,
                              "kind": r.kind, "verbs": verbs})
            resources += [{"name": f"{r.plural}/{s}", "singularName": "", "namespaced": True,
                           "kind": "Scale" if s == "scale" else r.kind, "verbs": ["get", "patch", "update"]}
                          for s in r.subresources]
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": _api_version(group, version),
                "resources": resources}

    @staticmethod
    def _verb(method: str, target: _Target | None, query: Mapping[str, str]) -> str:
        if target is None:
            return "get" if method == "GET" else method.lower()  # discovery
        if target.name is None:
            if method == "GET":
                return "watch" if query.get("watch") in ("1", "t", "T", "true", "True", "TRUE") else "list"
            return {"POST": "create", "DELETE": "deletecollection"}.get(method, method.lower())
        return {"GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, method.lower())

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        target: _Target | None = None
        verb = request.method.lower()
        body: Any = None
        received_at = time.monotonic()

        def record(status: int) -> None:
            rec = RequestRecord(
                verb=verb, method=request.method, path=request.path, query=request.query_string,
                token=token, user_agent=request.headers.get("User-Agent", ""),
                content_type=content_type,
                resource=target.res.plural if target else None,
                namespace=target.namespace if target else None,
                name=target.name if target else None,
                subresource=target.subresource if target else None,
                status=status, body=body, received_at=received_at,
            )
            self.requests.append(rec)
            if self.on_request is not None:
                self.on_request(rec)

        try:
            parsed = self._parse(request.path)
            if isinstance(parsed, _Target):
                target = parsed
            verb = self._verb(request.method, target, request.query)
            if request.method in ("POST", "PUT", "PATCH"):
                raw = await request.read()
                try:
                    body = json.loads(raw) if raw else None
                except ValueError as e:
                    raise ApiError(400, "BadRequest", f"the request body is not JSON: {e}") from e
            if token is None or (self.tokens is not None and token not in self.tokens):
                raise ApiError(401, "Unauthorized", "Unauthorized")
            if isinstance(parsed, web.Response):
                record(parsed.status)
                return parsed
            assert target is not None
            delay = self._take(self._delays, verb, target)
            if delay is not None:
                await asyncio.sleep(delay.status / 1000)
            injected = self._take(self._errors, verb, target)
            if injected is not None:
                raise ApiError(injected.status, injected.reason, f"injected error {injected.status} for {verb}")
            if verb == "watch":
                return await self._watch(request, target, record)
            response = self._dispatch(request.method, verb, target, content_type, body, request.query)
        except ApiError as e:
            response = e.response()
        record(response.status)
        return response

    @staticmethod
    def _take(pending: list[_Injected], verb: str, target: _Target) -> _Injected | None:
        for inj in pending:
            if (
                inj.remaining > 0
                and (inj.verb is None or inj.verb == verb)
                and (inj.resource is None or inj.resource == target.res.plural)
                and (inj.name is None or inj.name == target.name)
            ):
                inj.remaining -= 1
                return inj
        return None

    def _dispatch(
        self, method: str, verb: str, t: _Target, content_type: str, body: Any, query: Mapping[str, str]
    ) -> web.Response:
        res, ns = t.res, t.namespace
        if verb == "list":
            items = [
                self._served_object(o, res, t.version)
                for (o_ns, _), o in sorted(self._store(res).items(), key=lambda kv: kv[1]["metadata"]["name"])
                if ns is None or o_ns == ns
            ]
            items = [o for o in items if _field_match(o, query.get("fieldSelector"))
                     and _label_match(o, query.get("labelSelector"))]
            return web.json_response(
                {"kind": f"{res.kind}List", "apiVersion": _api_version(res.group, t.version),
                 "metadata": {"resourceVersion": str(self._rv)}, "items": items}
            )
        if verb == "create" and ns is not None:
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "the request body must be a JSON object")
            body_ns = (body.get("metadata") or {}).get("namespace")
            if body_ns not in (None, "", ns):
                raise ApiError(400, "BadRequest",
                               "the namespace of the provided object does not match the namespace sent on the request")
            if res.status_subresource:
                body.pop("status", None)
            created = self._create(res, ns, copy.deepcopy(body))
            return web.json_response(self._served_object(created, res, t.version), status=201)
        if ns is None or t.name is None:
            raise ApiError(405, "MethodNotAllowed", f"{verb} is not supported on {res.plural} collections here")
        name = t.name
        if verb in ("update", "patch", "delete"):
            self._before_write(res, ns, name)
        current = self._store(res).get((ns, name))
        if current is None:
            raise _not_found(res, name)
        if verb == "get":
            if t.subresource == "scale":
                return web.json_response(_scale_view(current))
            return web.json_response(self._served_object(current, res, t.version))
        if verb == "delete":
            self._delete(res, ns, name)
            return web.json_response(status_body(200, "", "", _object_details(res, name)))
        if verb == "update":
            return self._update(t, current, body)
        if verb == "patch":
            return self._patch(t, current, content_type, body)
        raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on the requested resource ({method})")

    def _update(self, t: _Target, current: JSON, body: Any) -> web.Response:
        res, name = t.res, current["metadata"]["name"]
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the request body must be a JSON object")
        meta = body.get("metadata") or {}
        if meta.get("name") not in (None, name):
            raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
        rv = meta.get("resourceVersion")
        if rv not in (None, "") and rv != current["metadata"]["resourceVersion"]:
            raise _conflict(res, name)
        if t.subresource == "scale":
            replicas = (body.get("spec") or {}).get("replicas", 0)
            return web.json_response(_scale_view(self._set_replicas(current, replicas)))
        new = copy.deepcopy(body)
        if t.subresource == "status":
            new = {**copy.deepcopy(current), "status": copy.deepcopy(body.get("status", {}))}
        stored = self._replace(res, current, new, main_resource=t.subresource is None)
        return web.json_response(self._served_object(stored, res, t.version))

    def _patch(self, t: _Target, current: JSON, content_type: str, body: Any) -> web.Response:
        res, name = t.res, current["metadata"]["name"]
        base = _scale_view(current) if t.subresource == "scale" else self._served_object(current, res, t.version)
        try:
            if content_type == "application/json-patch+json":
                if not isinstance(body, list):
                    raise ApiError(400, "BadRequest", "a JSON patch must be a JSON array")
                patched = apply_json_patch(base, body)
            elif content_type == "application/merge-patch+json":
                patched = apply_merge_patch(base, body)
            elif content_type == "application/strategic-merge-patch+json" and res.strategic_merge:
                patched = apply_strategic_merge_patch(base, body)
            else:
                raise ApiError(415, "UnsupportedMediaType",
                               f"the body of the request was in an unknown format - accepted media types include: "
                               f"application/json-patch+json, application/merge-patch+json"
                               f"{', application/strategic-merge-patch+json' if res.strategic_merge else ''}")
        except PatchError as e:
            raise ApiError(422, "Invalid", str(e), _object_details(res, name)) from e
        if not isinstance(patched, dict):
            raise ApiError(422, "Invalid", "the patched object is not a JSON object", _object_details(res, name))
        rv = (patched.get("metadata") or {}).get("resourceVersion")
        if rv not in (None, "") and rv != current["metadata"]["resourceVersion"]:
            raise _conflict(res, name)  # a resourceVersion in a patch is a precondition
        if t.subresource == "scale":
            replicas = (patched.get("spec") or {}).get("replicas", 0)
            return web.json_response(_scale_view(self._set_replicas(current, replicas)))
        if t.subresource == "status":
            patched = {**copy.deepcopy(current), "status": patched.get("status", {})}
        stored = self._replace(res, current, patched, main_resource=t.subresource is None)
        return web.json_response(self._served_object(stored, res, t.version))

    def _set_replicas(self, current: JSON, replicas: Any) -> JSON:
        new = copy.deepcopy(current)
        new.setdefault("spec", {})["replicas"] = replicas
        return self._replace(self.resource("deployments"), current, new)

    async def _watch(
        self, request: web.Request, t: _Target, record: Callable[[int], None]
    ) -> web.StreamResponse:
        rv_param = request.query.get("resourceVersion", "")
        try:
            since = int(rv_param) if rv_param not in ("", "0") else None
            timeout = float(request.query["timeoutSeconds"]) if "timeoutSeconds" in request.query else None
        except ValueError as e:
            raise ApiError(400, "BadRequest", f"invalid watch parameter: {e}") from e
        name = _field_name(request.query.get("fieldSelector"))
        watcher = _Watcher(t.res, t.version, t.namespace, name)
        initial: list[JSON] = []
        expired = since is not None and since < self._compacted
        if expired:
            initial.append({"type": "ERROR", "object": status_body(
                410, "Expired", f"too old resource version: {since} ({self._compacted})")})
        else:
            # subscribe before the first await, so no write falls between the replay and the stream
            self._watchers.add(watcher)
            if since is None:
                objs = [o for (o_ns, o_name), o in self._store(t.res).items()
                        if watcher.wants(_Event(0, t.res.group, t.res.plural, o_ns, o_name, "", o))]
                for o in sorted(objs, key=lambda o: int(o["metadata"]["resourceVersion"])):
                    initial.append({"type": "ADDED", "object": self._served_object(o, t.res, t.version)})
            else:
                for ev in self._history:
                    if ev.rv > since and watcher.wants(ev):
                        initial.append({"type": ev.type, "object": self._served_object(ev.obj, t.res, t.version)})
        record(200)
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        try:
            await response.prepare(request)
            for line in initial:
                await response.write(json.dumps(line).encode() + b"\n")
            if expired:
                return response
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout if timeout is not None else None
            while True:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    break
                try:
                    ev = await asyncio.wait_for(watcher.queue.get(), remaining)
                except TimeoutError:
                    break
                if ev is None:
                    break
                line = {"type": ev.type, "object": self._served_object(ev.obj, t.res, t.version)}
                await response.write(json.dumps(line).encode() + b"\n")
        except ConnectionError:
            pass  # the client went away
        finally:
            self._watchers.discard(watcher)
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response


def _field_name(selector: str | None) -> str | None:
    """The name from a `metadata.name=x` field selector (the only selector canaryd uses)."""
    for term in (selector or "").split(","):
        key, _, value = term.partition("=")
        if key.strip() == "metadata.name":
            return value.strip().lstrip("=")
    return None


def _label_match(obj: JSON, selector: str | None) -> bool:
    """Equality-based label selectors (`a=b,c!=d`, `a==b`, `a`, `!a`), as lists of pods use them."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in (selector or "").split(","):
        term = term.strip()
        if not term:
            continue
        if "!=" in term:
            key, value = (x.strip() for x in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (x.strip() for x in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _field_match(obj: JSON, selector: str | None) -> bool:
    name = _field_name(selector)
    return name is None or obj["metadata"]["name"] == name


def _scale_view(dep: JSON) -> JSON:
    meta = dep["metadata"]
    labels = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")},
        "spec": {"replicas": (dep.get("spec") or {}).get("replicas", 1)},
        "status": {
            "replicas": (dep.get("status") or {}).get("replicas", 0),
            "selector": ",".join(f"{k}={v}" for k, v in labels.items()),
        },
    }


# ---------------------------------------------------------------------------------------- objects
def deployment_object(name: str, image: str = "ghcr.io/orion/auth:v1", *, namespace: str = "orion",
                      replicas: int = 2, container: str = "auth-service", sidecar: bool = True) -> dict[str, Any]:
    """An apps/v1 Deployment as a test adds it: the app container (and an envoy sidecar, as a mesh has)."""
    containers: list[dict[str, Any]] = [{"name": container, "image": image, "ports": [{"containerPort": 8080}]}]
    if sidecar:
        containers.append({"name": "sidecar", "image": "envoy:1.30"})
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": containers}}}}


def weighted_virtual_service(name: str = "auth-service", stable: int = 95, canary: int = 5, *,
                             namespace: str = "orion", api: str = "v1") -> dict[str, Any]:
    """An Istio VirtualService with one weighted route over the subsets stable and canary."""
    return {"apiVersion": f"networking.istio.io/{api}", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"hosts": [name], "http": [{"route": [
                {"destination": {"host": name, "subset": "stable"}, "weight": stable},
                {"destination": {"host": name, "subset": "canary"}, "weight": canary},
            ]}]}}


# ---------------------------------------------------------------------------------------- fixtures
async def _fake_kube() -> AsyncIterator[FakeKube]:
    """A started FakeKube on a free loopback port (import `fake_kube` into a test module)."""
    async with FakeKube() as fake:
        yield fake


def _fake_kube_thread() -> Iterator[FakeKube]:
    """A FakeKube running in a thread of its own, for sync tests and subprocess-driven tests."""
    with FakeKube().in_thread() as fake:
        yield fake


# pytest is a test dependency only: scripts (bench/) import this module without it.
try:
    import pytest
except ImportError:  # pragma: no cover
    pass
else:
    fake_kube = pytest.fixture(_fake_kube, name="fake_kube")
    fake_kube_thread = pytest.fixture(_fake_kube_thread, name="fake_kube_thread")
