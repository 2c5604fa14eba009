"""Herald's webhook index: Webhooks by namespace and ClusterWebhooks, kept from watch events.

It takes the place of kopf's in-memory indices. kopf holds every object's handlers until all
indexed objects are indexed, and wakes every held handler each time one more object is indexed:
a startup cost that grows with the square of the cluster (5,000 Webhooks with 5,000 Environments
did not settle in 90 s; see bench/RESULTS.md). Herald needs the same guarantee, that no
deployment event is matched before the webhooks that existed at startup are known, and gets it
with one gate: the webhooks listed once at startup, each ticked off as its first watch event
arrives, then the gate opens for every waiting handler at once.

Reads return snapshots (tuples), never live views: a caller that awaits between reading and
using them must not see the index change under it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from herald.models import ObjectRef
from herald.status import WebhookView

__all__ = ["WebhookIndex"]


class WebhookIndex:
    def __init__(self) -> None:
        self._namespaced: dict[str, dict[str, WebhookView]] = {}
        self._cluster: dict[str, WebhookView] = {}
        self._seen: set[str] | None = set()  # uids with a watch event; None once the gate is open
        self._awaited: set[str] | None = None  # listed uids not yet seen; None until listed
        self._open = asyncio.Event()

    def put(self, view: WebhookView) -> None:
        if view.cluster:
            self._cluster[view.ref.name] = view
        else:
            self._namespaced.setdefault(view.ref.namespace or "", {})[view.ref.name] = view
        self._tick(view.uid)

    def drop(self, *, cluster: bool, ref: ObjectRef, uid: str) -> bool:
        """Forget the webhook ``uid`` at ``ref``; False when ``ref`` now holds another object (one
        re-created under the same name), which stays."""
        self._tick(uid)
        views = self._cluster if cluster else self._namespaced.get(ref.namespace or "", {})
        held = views.get(ref.name)
        if held is not None and held.uid != uid:
            return False
        views.pop(ref.name, None)
        if not cluster and not views:
            self._namespaced.pop(ref.namespace or "", None)
        return True

    def get(self, *, cluster: bool, ref: ObjectRef) -> WebhookView | None:
        views = self._cluster if cluster else self._namespaced.get(ref.namespace or "", {})
        return views.get(ref.name)

    def namespaced(self, namespace: str) -> tuple[WebhookView, ...]:
        return tuple(self._namespaced.get(namespace, {}).values())

    def cluster(self) -> tuple[WebhookView, ...]:
        return tuple(self._cluster.values())

    def views(self) -> tuple[WebhookView, ...]:
        """Every webhook known now."""
        return (*self._cluster.values(), *(v for views in self._namespaced.values() for v in views.values()))

    def __len__(self) -> int:
        return len(self._cluster) + sum(len(views) for views in self._namespaced.values())

    def expect(self, uids: Iterable[str]) -> None:
        """The webhooks that exist now, by uid: the gate opens once each has been seen.

        Called again with a fresh listing, it forgets the ones deleted in between, whose
        deletion the watch may never report (they were gone before it listed).
        """
        if self._seen is None:
            return
        self._awaited = set(uids) - self._seen
        self._maybe_open()

    @property
    def ready(self) -> bool:
        return self._open.is_set()

    async def wait_ready(self) -> None:
        await self._open.wait()

    def _tick(self, uid: str) -> None:
        if self._seen is None:
            return
        self._seen.add(uid)
        if self._awaited is not None:
            self._awaited.discard(uid)
            self._maybe_open()

    def _maybe_open(self) -> None:
        if self._awaited is not None and not self._awaited:
            self._seen = None
            self._awaited = None
            self._open.set()
