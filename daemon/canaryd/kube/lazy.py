"""kubernetes_asyncio, imported on first use: the one module of canaryd that imports it.

It costs ~0.6 s and ~30 MB, and a dry-run daemon never needs it, so nothing imports it at module level.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for annotations elsewhere in the package; `x as x` marks a re-export
    from kubernetes_asyncio import client as client
    from kubernetes_asyncio.client.exceptions import ApiException as ApiException


@functools.cache
def kubernetes() -> SimpleNamespace:
    """The parts of kubernetes_asyncio canaryd uses, imported by the first call."""
    from kubernetes_asyncio import client, config, watch
    from kubernetes_asyncio.client.exceptions import ApiException
    from kubernetes_asyncio.leaderelection import electionconfig, leaderelection
    from kubernetes_asyncio.leaderelection.resourcelock.leaselock import LeaseLock

    return SimpleNamespace(client=client, config=config, watch=watch, ApiException=ApiException,
                           electionconfig=electionconfig, leaderelection=leaderelection, LeaseLock=LeaseLock)
