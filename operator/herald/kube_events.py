"""The Kubernetes Events Herald posts, where `kubectl describe` looks for them.

An Event about a namespaced object (an Environment, a Webhook) lives in that object's
namespace. kopf would post one about a cluster-scoped object (a ClusterWebhook) into the
operator's own namespace and name that namespace in ``involvedObject`` as well, so
``kubectl describe clusterwebhook``, which asks for Events whose ``involvedObject.namespace``
is empty, would show none of them. Kubernetes itself posts Events about cluster-scoped objects
(Nodes, PersistentVolumes) into ``default`` with an ``involvedObject`` that has no namespace,
in the core/v1 form without ``eventTime``: that is the pairing the API server's Event
validation accepts (with ``eventTime`` set, it wants ``default`` or ``kube-system`` depending
on the version). Herald does the same, and posts every Event itself: through kopf's poster an
Environment's Event cost twice the CPU of a Delivery create (py-spy, a storm).
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from herald import background

__all__ = ["EVENT_NAMESPACE", "POSTS_IN_FLIGHT", "EventPoster", "object_event"]

logger = logging.getLogger("herald.events")

EVENT_NAMESPACE = "default"
MAX_MESSAGE = 1024  # what the API server accepts in an Event's message
POSTS_IN_FLIGHT = 128  # Events being posted at once; more are dropped (an Event is a courtesy)

_serial = itertools.count()


def object_event(
    meta: Mapping[str, Any],
    *,
    type_: str,
    reason: str,
    message: str,
    now: datetime.datetime,
    component: str,
) -> dict[str, Any]:
    """A core/v1 Event about the object ``meta`` (apiVersion, kind, metadata)."""
    metadata = meta.get("metadata") or {}
    namespace = metadata.get("namespace")
    involved = {
        "apiVersion": meta.get("apiVersion"),
        "kind": meta.get("kind"),
        "name": metadata.get("name"),
        "namespace": namespace,
        "uid": metadata.get("uid"),
    }
    stamp = now.isoformat().replace("+00:00", "Z")
    nanos = int(now.timestamp() * 1e9) + next(_serial)  # client-go names Events <object>.<hex time>
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{metadata.get('name')}.{nanos:x}", "namespace": namespace or EVENT_NAMESPACE},
        "involvedObject": {k: v for k, v in involved.items() if v},
        "type": type_,
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "source": {"component": component},
        "reportingComponent": component,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


class EventPoster:
    """Posts Events in the background, a bounded number at a time."""

    def __init__(
        self,
        create: Callable[[str, Mapping[str, Any]], Awaitable[None]],
        *,
        component: str,
        wallclock: Callable[[], datetime.datetime],
    ) -> None:
        self._create = create
        self._component = component
        self._wallclock = wallclock
        self._posting: set[asyncio.Task[None]] = set()

    def post(self, meta: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        if len(self._posting) >= POSTS_IN_FLIGHT:
            logger.warning("too many Events being posted; dropped %s %s: %s", reason, type_, message)
            return
        body = object_event(
            meta,
            type_=type_,
            reason=reason,
            message=message,
            now=self._wallclock(),
            component=self._component,
        )
        task = background.start(self._send(body), name="herald-cluster-event")
        self._posting.add(task)
        task.add_done_callback(self._posting.discard)

    async def _send(self, body: Mapping[str, Any]) -> None:
        try:
            await self._create(body["metadata"]["namespace"], body)
        except Exception as exc:  # an Event is a courtesy; say so and carry on, as kopf does
            logger.warning("could not post the Event %s: %s", body.get("reason"), exc)

    async def close(self) -> None:
        if self._posting:
            await asyncio.wait(set(self._posting), timeout=2)
        for task in list(self._posting):
            task.cancel()
