"""The Delivery objects: written as deliveries change, read back after a restart, pruned, watched.

``DeliveryStore.put`` takes the newest state of a delivery and writes it in the background, a few
writes in flight at once. A new delivery waits ``FLUSH_GRACE`` before it is created, so one whose
first attempt is answered promptly is stored once, with its outcome (one API write); a later
change is a merge patch, and changes made while a write is in flight coalesce into the next one.
``stored`` lets the flow wait until the objects of an event exist before it names the event in the
Environment's ledger. A finished delivery leaves memory once written: Herald keeps the pending
ones, not the history.

``Retention`` keeps each webhook's finished deliveries to ``Settings.retain`` and
``Settings.retain_for``: a webhook is swept after every few finished deliveries, and everything
once at startup and then every ``SCAN_INTERVAL``. Pending deliveries are never pruned.

``RedeliverWatch`` follows Delivery objects' metadata for ``herald.dev/redeliver`` requests, from
the current resourceVersion (never an initial listing of every Delivery); a request made while
Herald was not watching is found by the next scan.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from herald import background
from herald.delivery_object import (
    FINISHED,
    LABEL_KIND,
    LABEL_OUTCOME,
    LABEL_WEBHOOK,
    PLURAL,
    REDELIVER_ANNOTATION,
    REDELIVERED_ANNOTATION,
    Owner,
    Stored,
    delivery_name,
    parse_delivery,
    parse_time,
    status_patch,
    to_object,
)
from herald.kube import UNTIL_STORED, ApiConflict, ApiError, ApiNotFound, Backoff
from herald.listwatch import ListWatch, WatchApi
from herald.metrics import Metrics
from herald.models import DeliveryOutcome, PendingDelivery
from herald.settings import Settings

__all__ = [
    "FLUSH_GRACE",
    "DeliveryApi",
    "DeliveryStore",
    "Key",
    "NotPersisted",
    "RedeliverWatch",
    "Retention",
    "sweep_slack",
]

logger = logging.getLogger("herald.deliveries")

# A new delivery is created this long after it is queued, so a prompt outcome is stored with it.
FLUSH_GRACE = 0.2
WRITERS = 8  # Delivery writes in flight at once
REFUSED_DELAY = 30.0  # seconds before a write the API server refused for good is tried again
SCAN_INTERVAL = 3600.0  # seconds between scans of every Delivery (retention by age, missed requests)
_SWEEP_SLACK_MIN = 10
# Seconds between two deletions of one sweep: pruning is never urgent, and ten deletes back to back
# held the event loop long enough to show in the next event's latency.
PRUNE_PACE = 0.005


def sweep_slack(retain: int) -> int:
    """Finished deliveries of a webhook between two sweeps: the most it holds is ``retain`` + this."""
    return max(_SWEEP_SLACK_MIN, retain // 10)


class NotPersisted(Exception):
    """Herald stopped before the deliveries of an event were stored: the event is not notified."""


class DeliveryApi(WatchApi, Protocol):
    """The calls the store makes (``kube.KubeClient``): its lists and watches, and these."""

    async def create(
        self, plural: str, namespace: str | None, body: Mapping[str, Any], *, backoff: Backoff = ...
    ) -> None: ...

    async def get(
        self, plural: str, namespace: str | None, name: str, *, backoff: Backoff = ...
    ) -> dict[str, Any] | None: ...

    async def patch(
        self,
        plural: str,
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any],
        *,
        backoff: Backoff = ...,
    ) -> None: ...

    async def delete(
        self, plural: str, namespace: str | None, name: str, *, backoff: Backoff = ...
    ) -> bool: ...


Key = tuple[str, str]  # (namespace, name) of a Delivery object


@dataclass
class _Entry:
    owner: Owner
    delivery: PendingDelivery
    redelivered: str | None = None
    created: bool = False
    version: int = 0  # bumped by every put
    written: int = -1  # the version last stored
    queued: bool = False
    writing: bool = False  # a writer holds it: nobody else may write it meanwhile
    again: bool = False  # queued while being written: queue it once that write is over
    lost: bool = False  # Herald stopped before it was created
    retired: bool = False  # finished and outlived: its object is deleted, or never created
    stored: asyncio.Event = field(default_factory=asyncio.Event)  # set once settled


class DeliveryStore:
    def __init__(
        self,
        api: DeliveryApi,
        *,
        metrics: Metrics,
        finished: Callable[[Owner], None],
        gone: Callable[[Owner, str], None],
        grace: float = FLUSH_GRACE,
    ) -> None:
        self._api = api
        self._metrics = metrics
        self._finished = finished  # a finished delivery was written (retention counts it)
        self._gone = gone  # (owner, payload_id): its object was deleted, by a person or the GC
        self._grace = grace
        self._entries: dict[Key, _Entry] = {}
        # Each queued key wakes one writer (an Event would wake all of them for every write).
        self._ready: asyncio.Queue[Key] = asyncio.Queue()
        self._progress = asyncio.Event()  # set after each write
        self._closed = False
        self._writers = [
            asyncio.create_task(self._drain(), name=f"herald-delivery-writer-{n}") for n in range(WRITERS)
        ]

    @staticmethod
    def key(owner: Owner, payload_id: str) -> Key:
        return owner.home, delivery_name(owner, payload_id)

    def put(
        self,
        owner: Owner,
        delivery: PendingDelivery,
        *,
        exists: bool = False,
        write: bool = True,
        redelivered: str | None = None,
    ) -> None:
        """Store this state of a delivery. ``exists``: its object was read back (nothing to create);
        ``write`` False: and it holds this state already. ``redelivered``: the request acted on."""
        key = self.key(owner, delivery.record.payload_id)
        entry = self._entries.get(key)
        if entry is None:
            entry = _Entry(owner=owner, delivery=delivery, created=exists, redelivered=redelivered)
            self._entries[key] = entry
            if exists:
                entry.stored.set()
                entry.written = -1 if write else 0
            elif delivery.record.outcome is DeliveryOutcome.PENDING and self._grace > 0:
                asyncio.get_running_loop().call_later(self._grace, self._queue, key)
                return
        else:
            entry.delivery = delivery
            entry.version += 1
            if redelivered is not None:
                entry.redelivered = redelivered
            if not entry.created and delivery.record.outcome is DeliveryOutcome.PENDING:
                return  # its creation is already scheduled
        self._queue(key)

    def retire(self, owner: Owner, delivery: PendingDelivery) -> None:
        """A finished delivery that retention would prune as soon as the newer ones queued behind
        it finish: its object is deleted now (one write, not a patch and a later delete), or never
        created if it does not exist yet. Waiters on ``stored`` go on: nothing of it needs keeping."""
        key = self.key(owner, delivery.record.payload_id)
        entry = self._entries.get(key)
        if entry is None:  # read back from the API (a resumed delivery): its object exists
            entry = _Entry(owner=owner, delivery=delivery, created=True)
            self._entries[key] = entry
        entry.delivery, entry.retired = delivery, True
        entry.version += 1
        if not entry.created and not entry.writing:
            self._drop(key)  # its creation was still waiting out the grace
            return
        self._queue(key)

    def _queue(self, key: Key) -> None:
        entry = self._entries.get(key)
        if entry is None or entry.queued or entry.written >= entry.version:
            return
        if entry.writing:  # two writers at once could store an older state last
            entry.again = True
            return
        entry.queued = True
        self._ready.put_nowait(key)

    async def stored(self, keys: Iterable[Key]) -> None:
        """Wait until every one of these Delivery objects exists; NotPersisted if Herald stops first."""
        for key in keys:
            entry = self._entries.get(key)
            if entry is None or entry.stored.is_set():
                continue  # written and finished (or dropped: nothing is left to store)
            await entry.stored.wait()
            if entry.lost:
                raise NotPersisted(f"Delivery {key[0]}/{key[1]} was not stored before Herald stopped")

    def held(self, key: Key) -> tuple[Owner, str] | None:
        """Whose delivery (owner, payload_id) this object is, while the store holds it (unfinished)."""
        entry = self._entries.get(key)
        return None if entry is None else (entry.owner, entry.delivery.record.payload_id)

    def forget_one(self, key: Key) -> None:
        """The object is gone: nothing of it is written any more."""
        self._drop(key)

    def forget(self, owner: Owner) -> None:
        """The webhook is gone: its objects go with it (garbage collection); nothing is written."""
        for key in [
            k for k, e in self._entries.items() if e.owner.ref == owner.ref and e.owner.kind == owner.kind
        ]:
            self._drop(key)

    def _drop(self, key: Key) -> None:
        """Nothing is left to store (the webhook or the object is gone): waiters go on."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            entry.stored.set()

    async def close(self, timeout: float) -> None:
        """Let queued writes land for up to ``timeout`` seconds, then stop; waiters get NotPersisted."""
        for key in list(self._entries):  # nothing waits out its grace any more
            self._queue(key)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while any(e.written < e.version for e in self._entries.values()):
                    self._progress.clear()
                    await self._progress.wait()
        self._closed = True
        for task in self._writers:
            task.cancel()
        await asyncio.gather(*self._writers, return_exceptions=True)
        for entry in self._entries.values():
            entry.lost = not entry.created
            entry.stored.set()
        self._entries.clear()

    async def _drain(self) -> None:
        while True:
            key = await self._ready.get()
            entry = self._entries.get(key)
            if entry is None:
                continue
            entry.queued = False
            entry.writing = True
            try:
                await self._write(key, entry)
            except Exception:  # a bug must not stop the other deliveries' writes
                logger.exception("storing Delivery %s/%s failed", *key)
                self._retry_later(key)
            finally:
                entry.writing = False
                if entry.again:
                    entry.again = False
                    self._queue(key)
                self._progress.set()

    def _retry_later(self, key: Key) -> None:
        if not self._closed:
            asyncio.get_running_loop().call_later(REFUSED_DELAY, self._queue, key)

    async def _write(self, key: Key, entry: _Entry) -> None:
        namespace, name = key
        version, delivery, redelivered = entry.version, entry.delivery, entry.redelivered
        try:
            if entry.retired:
                if entry.created and await self._api.delete(PLURAL, namespace, name, backoff=UNTIL_STORED):
                    self._metrics.delivery_writes.labels(verb="delete").inc()
                    self._metrics.deliveries_pruned.inc()
                self._drop(key)
                return
            if not entry.created:
                body = to_object(entry.owner, delivery)
                try:
                    await self._api.create(PLURAL, namespace, body, backoff=UNTIL_STORED)
                    self._metrics.delivery_writes.labels(verb="create").inc()
                except ApiConflict:  # stored before (a restart, an event derived again): update it
                    self._metrics.delivery_writes.labels(verb="create").inc()
                    await self._api.patch(
                        PLURAL, namespace, name, status_patch(delivery.record), backoff=UNTIL_STORED
                    )
                    self._metrics.delivery_writes.labels(verb="patch").inc()
                entry.created = True
                entry.stored.set()
            elif entry.written < version:
                patch = status_patch(delivery.record, redelivered=redelivered)
                await self._api.patch(PLURAL, namespace, name, patch, backoff=UNTIL_STORED)
                self._metrics.delivery_writes.labels(verb="patch").inc()
        except ApiNotFound:  # deleted (a person, or the GC after its webhook), or its namespace is gone
            self._drop(key)
            self._gone(entry.owner, delivery.record.payload_id)
            return
        except ApiError as exc:  # refused for good (403, 422...): said once, tried again later
            logger.warning(
                "Delivery %s/%s not stored: %s; trying again in %.0fs", namespace, name, exc, REFUSED_DELAY
            )
            self._retry_later(key)
            return
        entry.written = version
        if entry.version != version:
            self._queue(key)  # changed while written
        elif delivery.record.outcome in FINISHED:
            self._entries.pop(key, None)  # finished and stored: history lives in the API server
            self._finished(entry.owner)

    async def read(self, owner: Owner, payload_id: str) -> Stored | None:
        """The stored Delivery of ``owner`` for ``payload_id``, if there is one."""
        namespace, name = self.key(owner, payload_id)
        body = await self._api.get(PLURAL, namespace, name)
        return parse_delivery(body) if body is not None else None


def _created(meta: Mapping[str, Any]) -> str:
    return str(meta.get("creationTimestamp") or "")


class Retention:
    """Prunes finished Delivery objects by count per webhook and by age; never a pending one."""

    def __init__(
        self,
        api: DeliveryApi,
        *,
        settings: Settings,
        metrics: Metrics,
        wallclock: Callable[[], datetime.datetime],
        namespaces: Callable[[], Iterable[str | None]],
        redeliver: Callable[[str, str, str], None],
    ) -> None:
        self._api = api
        self._settings = settings
        self._metrics = metrics
        self._now = wallclock
        self._namespaces = namespaces  # where Delivery objects live (None: all namespaces)
        self._redeliver = redeliver  # (namespace, name, value) of an unhandled request found in a scan
        self._counts: dict[tuple[str, str, str], int] = {}  # finished since the last sweep
        self._sweeping: set[tuple[str, str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.slack = sweep_slack(settings.retain)

    def finished(self, owner: Owner) -> None:
        """One more finished delivery of ``owner``: sweep it every ``slack`` of them."""
        key = (owner.home, owner.kind, owner.selector())
        self._counts[key] = self._counts.get(key, 0) + 1
        self._sweep_if_due(key)

    def _sweep_if_due(self, key: tuple[str, str, str]) -> None:
        """One sweep per webhook at a time; what finishes during a sweep is swept after it."""
        if self._counts.get(key, 0) >= self.slack and key not in self._sweeping and not self._closed:
            self._counts[key] = 0
            self._sweeping.add(key)
            self._spawn(self._sweep_guarded(key), name=f"herald-prune-{key[2]}")

    def _spawn(self, coro: Any, *, name: str) -> None:
        task = background.start(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sweep_guarded(self, key: tuple[str, str, str]) -> None:
        try:
            await self.sweep(*key)
        except Exception as exc:  # the next finished deliveries or the next scan try again
            logger.warning("pruning the deliveries of %s in %s failed: %s", key[2], key[0], exc)
        finally:
            self._sweeping.discard(key)
            self._sweep_if_due(key)

    def _expired(self, meta: Mapping[str, Any]) -> bool:
        created = parse_time(meta.get("creationTimestamp"))
        limit = datetime.timedelta(seconds=self._settings.retain_for)
        return created is not None and self._now() - created > limit

    async def sweep(self, namespace: str, kind: str, selector: str) -> int:
        """Delete this webhook's finished deliveries beyond the newest ``retain`` and past ``retain_for``."""
        wanted = dict(part.split("=", 1) for part in selector.split(","))
        finished: list[Mapping[str, Any]] = []
        labels_selector = f"{selector},{LABEL_OUTCOME} in (Succeeded,Failed)"
        async for page in self._api.pages(  # from the watch cache: what it misses, the next sweep sees
            PLURAL, namespace, label_selector=labels_selector, metadata_only=True, cached=True
        ):
            for item in page:
                meta = item.get("metadata") or {}
                labels = meta.get("labels") or {}
                if (
                    all(labels.get(k) == v for k, v in wanted.items())
                    and labels.get(LABEL_OUTCOME) in FINISHED
                ):
                    finished.append({"name": meta.get("name"), "creationTimestamp": _created(meta)})
        finished.sort(key=lambda m: (m["creationTimestamp"], m["name"]), reverse=True)
        doomed = [m for n, m in enumerate(finished) if n >= self._settings.retain or self._expired(m)]
        for n, meta in enumerate(doomed):
            if n:
                await asyncio.sleep(PRUNE_PACE)
            await self._delete(namespace, str(meta["name"]))
        return len(doomed)

    async def _delete(self, namespace: str, name: str) -> None:
        if await self._api.delete(PLURAL, namespace, name):
            self._metrics.delivery_writes.labels(verb="delete").inc()
            self._metrics.deliveries_pruned.inc()

    async def scan(self) -> None:
        """Every Delivery's metadata once: delete the expired finished ones, sweep webhooks over
        their count, and act on redeliver requests made while Herald was not watching."""
        over: dict[tuple[str, str, str], int] = {}
        for namespace in self._namespaces():
            async for page in self._api.pages(PLURAL, namespace, metadata_only=True):
                for item in page:
                    meta = item.get("metadata") or {}
                    labels = meta.get("labels") or {}
                    annotations = meta.get("annotations") or {}
                    where, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
                    asked = annotations.get(REDELIVER_ANNOTATION)
                    if asked and asked != annotations.get(REDELIVERED_ANNOTATION):
                        self._redeliver(where, name, str(asked))
                    if labels.get(LABEL_OUTCOME) not in FINISHED:
                        continue
                    if self._expired(meta):
                        await self._delete(where, name)
                        continue
                    key = (where, str(labels.get(LABEL_KIND)), f"{LABEL_WEBHOOK}={labels.get(LABEL_WEBHOOK)}")
                    over[key] = over.get(key, 0) + 1
        for (where, kind, webhook), count in over.items():
            if count > self._settings.retain:
                await self.sweep(where, kind, f"{webhook},{LABEL_KIND}={kind}")

    async def run(self) -> None:
        """Scan at startup, then every ``SCAN_INTERVAL``."""
        while True:
            try:
                await self.scan()
            except Exception as exc:  # the next scan tries again
                logger.warning("scanning Delivery objects for retention failed: %s", exc)
            await asyncio.sleep(min(SCAN_INTERVAL, self._settings.retain_for))

    async def close(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class RedeliverWatch:
    """Follows Delivery metadata for redeliver requests and deletions, from the current version
    (Retention's scan finds the requests made while Herald was not watching)."""

    def __init__(
        self,
        api: WatchApi,
        *,
        namespace: str | None,
        redeliver: Callable[[str, str, str], None],
        deleted: Callable[[str, str], None],
        timeout_seconds: int,
    ) -> None:
        self._redeliver = redeliver
        self._deleted = deleted
        self._watch = ListWatch(
            api,
            PLURAL,
            namespace,
            seen=self._seen,
            timeout_seconds=timeout_seconds,
            listing=False,
            metadata_only=True,
        )

    async def run(self) -> None:
        await self._watch.run()

    def _seen(self, kind: str, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        if kind == "DELETED":
            self._deleted(namespace, name)
        elif kind in ("ADDED", "MODIFIED"):
            annotations = meta.get("annotations") or {}
            asked = annotations.get(REDELIVER_ANNOTATION)
            if asked and asked != annotations.get(REDELIVERED_ANNOTATION):
                self._redeliver(namespace, name, str(asked))
