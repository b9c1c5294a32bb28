"""canaryd's Kubernetes errors, and the mapping of every client failure onto them.

Each message names the object and the verb, e.g. ``VirtualService orion/auth-service patch failed: 404
NotFound: ...``; no ApiException or aiohttp error leaks out of the kube package.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp

from .lazy import kubernetes

if TYPE_CHECKING:
    from .lazy import ApiException


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


# HTTP code of an API error → our error type; any other code is a plain KubeError.
_ERROR_BY_CODE: dict[int, type[KubeError]] = {404: KubeNotFound, 409: KubeConflict}

# Failures without an answer from the API server, first match wins (TimeoutError is an OSError):
# (exception types, reason, what to say after "failed: ").
_TRANSPORT_ERRORS: tuple[tuple[tuple[type[BaseException], ...], str, Callable[[BaseException], str]], ...] = (
    ((asyncio.TimeoutError,), "Timeout", lambda e: "timed out"),
    ((aiohttp.ClientError, OSError), "Unreachable", lambda e: f"cannot reach the API server: {e}"),
)


def _status_of(e: ApiException) -> dict[str, Any]:
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


def _api_error(e: ApiException, failed: str, json_patch_test: bool) -> KubeError:
    """The error for an answer of the API server; `failed` is "<what> <verb> failed"."""
    status = _status_of(e)
    code = int(status.get("code") or e.status or 0)
    reason = str(status.get("reason") or e.reason or "")
    message = str(status.get("message") or e.reason or "").strip()
    text = f"{failed}: {code} {reason}: {message}" if code else f"{failed}: {message}"
    # A JSON patch whose `test` failed is answered 422: the object changed under us, like a 409.
    cls = KubeConflict if code == 422 and json_patch_test else _ERROR_BY_CODE.get(code, KubeError)
    if cls is KubeNotFound:
        details = status.get("details")
        api_missing = not (isinstance(details, dict) and details.get("name"))
        return KubeNotFound(text, status=code, reason=reason, api_missing=api_missing)
    return cls(text, status=code or None, reason=reason)


def map_error(e: BaseException, what: str, verb: str, *, json_patch_test: bool = False) -> KubeError:
    """Our error for a failed call on `what` ("VirtualService orion/auth-service") by `verb`."""
    if isinstance(e, KubeError):
        return e
    failed = f"{what} {verb} failed"
    if isinstance(e, kubernetes().ApiException):
        return _api_error(e, failed, json_patch_test)
    for types, reason, describe in _TRANSPORT_ERRORS:
        if isinstance(e, types):
            return KubeError(f"{failed}: {describe(e)}", reason=reason)
    return KubeError(f"{failed}: {type(e).__name__}: {e}")


def client_errors() -> tuple[type[BaseException], ...]:
    """What a kubernetes_asyncio call may raise, for `except` clauses that hand it to `map_error`."""
    return (kubernetes().ApiException, aiohttp.ClientError, OSError, asyncio.TimeoutError)
