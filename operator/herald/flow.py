"""The flow of a deployment event, without kopf: environment → events → deliveries → ledger.

``handlers`` translates kopf's callbacks (Webhooks, ClusterWebhooks) and Herald's own watch of
Environments (``listwatch``) into the few calls of ``Flow`` and does nothing else. An
Environment's watch event becomes the deployment events not notified yet (``events``), each
event the webhooks it goes to (``choose``), those deliveries the dispatcher's, and, once their
Delivery objects exist, the Environment's notified ledger.

What can go wrong leaves the Environment to be handled again: a failure (an API error, a
namespace whose labels cannot be read, a bug) is caught, logged and the Environment re-handled
from Herald's own retry queue with backoff, until it succeeds or a newer version of the object
is handled.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import datetime
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from herald import background
from herald.delivery_object import parse_time
from herald.dispatcher import Submission
from herald.events import (
    LEDGER_ANNOTATION,
    BadEnvironment,
    BadLedger,
    build_event,
    derive_events,
    nothing_new,
    parse_environment,
    parse_ledger,
    record_events,
)
from herald.index import WebhookIndex
from herald.kube import ApiNotFound
from herald.ledger import Ledgers
from herald.matching import matches, selector_matches
from herald.metrics import Metrics
from herald.models import DeploymentEvent, EventType, NotifiedLedger, ObjectRef
from herald.settings import Settings
from herald.status import WebhookView
from herald.status_writer import StatusSink

__all__ = [
    "Choice",
    "Cluster",
    "Deliveries",
    "Flow",
    "GoneWebhooks",
    "LedgerQueue",
    "NamespaceLabels",
    "NamespaceUnreadable",
    "Retries",
    "choose",
    "needs_labels",
]

logger = logging.getLogger("herald.flow")

RELIST_INTERVAL = 5.0  # seconds between listings while the webhooks that exist are not all known
NAMESPACE_MEMORY = 10_000  # namespaces whose labels are kept
NAMESPACE_READ_TIMEOUT = 10.0  # seconds one read of a namespace's labels may take
# Delays before re-handling an Environment whose handling failed, then the last one, forever.
RETRY_DELAYS: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
EVENT_REASONS = {
    EventType.DEPLOYMENT_STARTED: "DeploymentStarted",
    EventType.DEPLOYMENT_SUCCESSFUL: "DeploymentSuccessful",
    EventType.DEPLOYMENT_CANCELLED: "DeploymentCancelled",
    EventType.DEPLOYMENT_FAILURE: "DeploymentFailure",
}

Announce = Callable[[Mapping[str, Any], str, str], None]  # (Environment body, reason, message)


class Cluster(Protocol):
    """The reads the flow makes itself (``kube.KubeClient``)."""

    async def list_uids(self, plural: str, namespace: str | None) -> set[str]: ...

    async def read_namespace_labels(self, name: str) -> dict[str, str] | None: ...


class Deliveries(Protocol):
    """Where deliveries go (``dispatcher.Dispatcher``): one worker per webhook."""

    def now(self) -> datetime.datetime: ...

    def observe(self, view: WebhookView, *, status: Any = None) -> None: ...

    async def forget(self, *, cluster: bool, ref: ObjectRef) -> None: ...

    def submit(
        self, deliveries: Iterable[tuple[WebhookView, DeploymentEvent]], *, verify: bool = False
    ) -> Submission:
        """Queue now; ``Submission.stored`` completes once their Delivery objects exist."""
        ...

    def spawn(self, coro: Awaitable[None], *, name: str) -> None: ...

    def post(self, view: WebhookView, type_: str, reason: str, message: str) -> None: ...


class LedgerQueue(Protocol):
    """Writes an Environment's newest notified ledger (``ledger.LedgerWriter``)."""

    def enqueue(self, uid: str, namespace: str, name: str, stored: NotifiedLedger) -> None: ...


# ---------------------------------------------------------------- which webhooks (pure)


class NamespaceUnreadable(Exception):
    """A namespace's labels could not be read: selectors on it can be decided neither way."""

    def __init__(self, namespace: str, cause: BaseException) -> None:
        super().__init__(
            f"cannot read the labels of namespace {namespace}: {str(cause) or type(cause).__name__}"
        )
        self.namespace = namespace


class Undecided(Exception):
    """Some webhooks could not be decided for an Environment's events; it is handled again later."""


class Deferred(Exception):
    """Some webhooks were at their backlog bound; the Environment is handled again later."""


def needs_labels(view: WebhookView) -> bool:
    """Whether deciding this webhook reads the Environment's namespace labels."""
    selector = view.spec.namespace_selector if view.spec is not None else None
    return selector is not None and bool(selector.match_labels or selector.match_expressions)


@dataclass(frozen=True)
class Choice:
    chosen: tuple[WebhookView, ...]
    undecided: tuple[WebhookView, ...]  # ClusterWebhooks whose namespaceSelector needs unreadable labels


def choose(
    namespaced: Sequence[WebhookView],
    cluster: Sequence[WebhookView],
    event: DeploymentEvent,
    *,
    labels: Mapping[str, str] | None,
    readable: bool = True,
) -> Choice:
    """The webhooks ``event`` goes to: this namespace's Webhooks and the ClusterWebhooks whose
    filters and ``namespaceSelector`` take it. ``labels`` None means the namespace does not exist:
    a selector matches nothing then, and nothing at all when the labels could not be read
    (``readable`` false), where the ClusterWebhook is left undecided, never matched against ``{}``
    (a ``NotIn`` or ``DoesNotExist`` selector would take what it excludes)."""
    chosen = [v for v in namespaced if v.spec is not None and matches(v.spec, event)]
    undecided: list[WebhookView] = []
    for view in cluster:
        if view.spec is None or not matches(view.spec, event):
            continue
        if needs_labels(view):
            if not readable:
                undecided.append(view)
                continue
            if labels is None or not selector_matches(view.spec.namespace_selector, labels):
                continue
        chosen.append(view)
    return Choice(chosen=tuple(chosen), undecided=tuple(undecided))


# ---------------------------------------------------------------- what the flow keeps


class NamespaceLabels:
    """Namespace labels for ``namespaceSelector``, read on demand and kept ``ttl`` seconds.

    Only answers are kept: a failure is raised (``NamespaceUnreadable``) and the next call reads
    again, so an unreadable namespace is retried as soon as its Environment is.
    """

    def __init__(
        self,
        read: Callable[[str], Awaitable[dict[str, str] | None]],
        *,
        ttl: float,
        clock: Callable[[], float],
        limit: int = NAMESPACE_MEMORY,
    ) -> None:
        self._read = read
        self._ttl = ttl
        self._clock = clock
        self._limit = limit
        self._kept: collections.OrderedDict[str, tuple[float, dict[str, str]]] = collections.OrderedDict()

    async def get(self, namespace: str) -> dict[str, str] | None:
        """The namespace's labels; None when it does not exist (not kept: it may be re-created)."""
        kept = self._kept.get(namespace)
        if kept is not None and self._clock() - kept[0] <= self._ttl:
            return kept[1]
        try:
            async with asyncio.timeout(NAMESPACE_READ_TIMEOUT):
                labels = await self._read(namespace)
        except Exception as exc:  # 403, 429, 5xx, a timeout, a broken connection: all unreadable
            raise NamespaceUnreadable(namespace, exc) from exc
        if labels is None:
            self._kept.pop(namespace, None)
            return None
        self._kept[namespace] = (self._clock(), labels)
        self._kept.move_to_end(namespace)
        while len(self._kept) > self._limit:
            self._kept.popitem(last=False)
        return labels


@dataclass
class _Retry:
    body: Mapping[str, Any]
    attempt: int
    task: asyncio.Task[None] | None = None


class Retries:
    """Environments to handle again, one entry per uid holding its newest failed version."""

    def __init__(
        self, handle: Callable[[Mapping[str, Any]], Awaitable[None]], delays: Sequence[float] = RETRY_DELAYS
    ) -> None:
        self._handle = handle
        self._delays = tuple(delays)
        self._entries: dict[str, _Retry] = {}

    def __contains__(self, uid: str) -> bool:
        return uid in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def schedule(self, uid: str, body: Mapping[str, Any]) -> float:
        """Handle ``body`` again after a delay that grows with each failure; returns the delay."""
        previous = self._entries.get(uid)
        attempt = previous.attempt + 1 if previous is not None else 0
        self._stop(previous)
        delay = self._delays[min(attempt, len(self._delays) - 1)]
        entry = _Retry(body=copy.deepcopy(dict(body)), attempt=attempt)
        entry.task = background.start(self._later(entry, delay), name=f"herald-retry-{uid}")
        self._entries[uid] = entry
        return delay

    def done(self, uid: str) -> None:
        """This Environment was handled (or needs no handling): nothing to retry."""
        self._stop(self._entries.pop(uid, None))

    async def close(self) -> None:
        tasks = [e.task for e in self._entries.values() if e.task is not None]
        self._entries.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    def _stop(entry: _Retry | None) -> None:
        if entry is not None and entry.task is not None and entry.task is not asyncio.current_task():
            entry.task.cancel()

    async def _later(self, entry: _Retry, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._handle(entry.body)


class _Serial:
    """One handling at a time per Environment, in the order they asked (an asyncio.Lock wakes its
    waiters first come, first served): the watch's versions and the retries' alike."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class GoneWebhooks:
    """The status sink the dispatcher writes through: a 404 on a webhook's status means the
    webhook was deleted, perhaps while a watch was down and kopf never said so, and ``gone`` is
    told at once rather than at the next reconciliation. The error is raised on unchanged."""

    def __init__(
        self, sink: StatusSink, *, index: WebhookIndex, gone: Callable[[bool, ObjectRef, str], None]
    ) -> None:
        self._sink = sink
        self._index = index
        self._gone = gone

    async def patch_status(
        self, *, plural: str, namespace: str | None, name: str, status: Callable[[], Mapping[str, Any]]
    ) -> None:
        cluster, ref = plural == "clusterwebhooks", ObjectRef(namespace=namespace, name=name)
        held = self._index.get(cluster=cluster, ref=ref)  # before: one re-created meanwhile stays
        try:
            await self._sink.patch_status(plural=plural, namespace=namespace, name=name, status=status)
        except ApiNotFound:
            if held is not None:
                self._gone(cluster, ref, held.uid)
            raise


def _created(body: Mapping[str, Any]) -> datetime.datetime:
    """When the object was created (long ago when it does not say)."""
    created = parse_time((body.get("metadata") or {}).get("creationTimestamp"))
    return created or datetime.datetime.min.replace(tzinfo=datetime.UTC)


# ---------------------------------------------------------------- the flow


class Flow:
    """Webhooks in, Environments in, deliveries and ledgers out."""

    def __init__(
        self,
        *,
        settings: Settings,
        index: WebhookIndex,
        cluster: Cluster,
        dispatcher: Deliveries,
        ledger_writer: LedgerQueue,
        ledgers: Ledgers,
        metrics: Metrics,
        announce: Announce,
        clock: Callable[[], float],
        retry_delays: Sequence[float] = RETRY_DELAYS,
    ) -> None:
        self.settings = settings
        self.index = index
        self.ledgers = ledgers
        self._cluster = cluster
        self._dispatcher = dispatcher
        self._ledger_writer = ledger_writer
        self._metrics = metrics
        self._announce = announce
        self.namespaces = NamespaceLabels(
            cluster.read_namespace_labels, ttl=settings.namespace_cache_ttl, clock=clock
        )
        self.retries = Retries(self.environment, retry_delays)
        self._serial = _Serial()
        self._handling: set[asyncio.Task[None]] = set()  # Environments being handled (environment_seen)
        # Environments created before this (to the second, as creationTimestamp says) may have
        # deliveries an earlier Herald stored.
        self._started = datetime.datetime.now(datetime.UTC).replace(microsecond=0)

    # ------------------------------------------------------------ webhooks

    def webhook_seen(self, view: WebhookView, *, status: Any) -> None:
        self.index.put(view)
        self._dispatcher.observe(view, status=status)

    def webhook_gone(self, cluster: bool, ref: ObjectRef, uid: str) -> None:
        """``webhook_deleted`` in the background (called from inside the webhook's own worker)."""
        self._dispatcher.spawn(
            self.webhook_deleted(cluster=cluster, ref=ref, uid=uid), name=f"herald-gone-{ref}"
        )

    async def webhook_deleted(self, *, cluster: bool, ref: ObjectRef, uid: str) -> None:
        """The webhook ``uid`` is gone (a DELETED event, a listing without it, a 404)."""
        if self.index.drop(cluster=cluster, ref=ref, uid=uid):
            await self._dispatcher.forget(cluster=cluster, ref=ref)

    async def _list_webhooks(self) -> set[str]:
        uids: set[str] = set()
        for namespace in self.settings.namespaces or (None,):
            uids |= await self._cluster.list_uids("webhooks", namespace)
        return uids | await self._cluster.list_uids("clusterwebhooks", None)

    async def learn_webhooks(self) -> None:
        """Hold deployment events until every webhook that exists has come through the watch."""
        while not self.index.ready:
            try:
                uids = await self._list_webhooks()
            except Exception as exc:  # the API answers later: deployment events keep waiting
                logger.warning("cannot list webhooks (%s); deployment events wait until Herald can", exc)
            else:
                self.index.expect(uids)
                if not self.index.ready:
                    logger.info(
                        "waiting for %d webhooks to arrive before handling deployment events", len(uids)
                    )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.index.wait_ready(), timeout=RELIST_INTERVAL)
        logger.info("%d webhooks known; handling deployment events", len(self.index))

    async def reconcile_webhooks(self) -> None:
        """Forget webhooks deleted while a watch was down, as often as kopf re-lists.

        After a watch ends with 410 Gone, kopf lists again but reports no DELETED event for what
        vanished meanwhile; a webhook known before a listing and absent from it was deleted.
        """
        while True:
            await asyncio.sleep(self.settings.watch_timeout)
            try:
                await self.reconcile_once()
            except Exception:  # a bug must not end the reconciliation: try again next round
                logger.exception("reconciling the webhook index failed")

    async def reconcile_once(self) -> None:
        known = self.index.views()  # before listing: what arrives meanwhile is not judged
        try:
            listed = await self._list_webhooks()
        except Exception as exc:  # the API answers later: try again at the next round
            logger.warning("cannot list webhooks to find deleted ones (%s); trying again later", exc)
            return
        for view in known:
            if view.uid not in listed:
                logger.info(
                    "webhook %s was deleted while the watch was down; it receives nothing more", view.ref
                )
                await self.webhook_deleted(cluster=view.cluster, ref=view.ref, uid=view.uid)

    # ------------------------------------------------------------ environments

    def environment_seen(self, kind: str, body: Mapping[str, Any]) -> None:
        """A version of an Environment, listed or watched (ADDED, MODIFIED, DELETED). Each is handled
        in a task of its own, so one that waits (for a namespace's labels, for its object's previous
        version) holds up no other; versions of one object are handled in the order they came."""
        if kind == "DELETED":
            self.environment_deleted(body)
        elif not self._settled(body):
            task = background.start(self.environment(body), name="herald-environment")
            self._handling.add(task)
            task.add_done_callback(self._handling.discard)

    def _settled(self, body: Mapping[str, Any]) -> bool:
        """Handled as it is already (the ledger's watch echo): half the watch events of a deployment."""
        uid = str((body.get("metadata") or {}).get("uid", ""))
        remembered = self.ledgers.get(uid)
        return remembered is not None and uid not in self.retries and nothing_new(body, remembered)

    async def environment(self, body: Mapping[str, Any]) -> None:
        """Handle one version of an Environment; on failure, it is handled again later."""
        if self._settled(body):
            return
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid", ""))
        where = f"{meta.get('namespace')}/{meta.get('name')}"
        async with self._serial.hold(uid):
            try:
                await self._handle(body, where=where, first=uid not in self.retries)
            except BadEnvironment as exc:  # nothing to retry: the object has to change
                self.retries.done(uid)
                logger.warning("Environment %s skipped: %s", where, exc)
            except Exception as exc:
                delay = self.retries.schedule(uid, body)
                if isinstance(exc, Undecided | Deferred):
                    logger.warning("Environment %s: %s; handled again in %ss", where, exc, delay)
                else:
                    logger.exception(
                        "Environment %s could not be handled; handled again in %ss", where, delay
                    )
            else:
                self.retries.done(uid)

    def environment_deleted(self, body: Mapping[str, Any]) -> None:
        self.retries.done(str((body.get("metadata") or {}).get("uid", "")))

    async def _handle(self, body: Mapping[str, Any], *, where: str, first: bool) -> None:
        await self.index.wait_ready()
        environment, spec, deployment = parse_environment(body)
        raw_ledger = (body.get("metadata") or {}).get("annotations", {}).get(LEDGER_ANNOTATION)
        try:
            persisted = parse_ledger(raw_ledger)
        except BadLedger as exc:
            logger.warning(
                "Environment %s: unreadable %s annotation (%s); starting afresh",
                where,
                LEDGER_ANNOTATION,
                exc,
            )
            persisted = NotifiedLedger()
        uid = environment.uid
        ledger = self.ledgers.merged(uid, persisted)
        new_events = derive_events(deployment, ledger) if deployment is not None else ()
        if deployment is None or not new_events:
            if self.ledgers.get(uid) is None:
                # Seen with nothing to notify: whatever it derives later happened in this
                # process's watch, so no earlier Herald can have stored it (no lookup then).
                self.ledgers.remember(uid, ledger)
            return
        now = self._dispatcher.now()
        notifications = [
            build_event(
                event_type=e, environment=environment, spec=spec, deployment=deployment, created_at=now
            )
            for e in new_events
        ]
        # The webhooks are read again after the one await (the namespace's labels), and used with
        # no await in between: one created or deleted meanwhile is neither missed nor sent to.
        labels: dict[str, str] | None = None
        unreadable: NamespaceUnreadable | None = None
        fetched = False
        while True:
            namespaced, cluster = self.index.namespaced(environment.namespace), self.index.cluster()
            if fetched or not any(
                needs_labels(v) and v.spec is not None and matches(v.spec, n)
                for v in cluster
                for n in notifications
            ):
                break
            fetched = True
            try:
                labels = await self.namespaces.get(environment.namespace)
            except NamespaceUnreadable as exc:
                unreadable = exc
        deliveries: list[tuple[WebhookView, DeploymentEvent]] = []
        undecided: dict[ObjectRef, WebhookView] = {}
        for notification in notifications:
            choice = choose(namespaced, cluster, notification, labels=labels, readable=unreadable is None)
            deliveries.extend((view, notification) for view in choice.chosen)
            undecided.update((view.ref, view) for view in choice.undecided)
        # Events derived again (a retry, or the first sight since Herald started of an Environment
        # that predates it) may have stored deliveries: the dispatcher looks them up first.
        verify = not first or (self.ledgers.get(uid) is None and _created(body) < self._started)
        submission = self._dispatcher.submit(deliveries, verify=verify) if deliveries else None
        held = submission.deferred if submission is not None else ()
        if undecided or held:
            # What was queued stays queued (a retry finds it by its payload_id); nothing is
            # recorded, so the events are derived again until every webhook has taken them.
            if submission is not None:  # no ledger waits on it; consumed so it is not left unawaited
                self._dispatcher.spawn(submission.stored, name=f"herald-queued-{uid}")
            if held:
                raise Deferred(f"{len(held)} webhooks are at their backlog bound")
            message = f"{unreadable}; deliveries of Environment {where} to this ClusterWebhook wait"
            if first:
                for view in undecided.values():
                    self._dispatcher.post(view, "Warning", "NamespaceUnreadable", message)
            raise Undecided(f"{unreadable}; {len(undecided)} ClusterWebhooks undecided")
        self.ledgers.remember(uid, record_events(ledger, deployment.id, new_events))
        for event_type in new_events:
            self._metrics.deployment_events.labels(event=event_type.value).inc()
        if submission is None:
            # Nobody listens: no ledger write and no Event on an object Herald does not own. After a
            # restart these events are derived once more, and go to the webhooks that match then.
            logger.debug(
                "Environment %s deployment %s: no webhook takes %s", where, deployment.id, new_events
            )
            return
        # The workers just woken send first: what follows (the ledger's task, the Event, the log
        # line) is not on the way to the receiver.
        await asyncio.sleep(0)
        # What the write may name: the object's own ledger and these events, never what another
        # handling remembered but has not stored yet.
        stored = record_events(persisted, deployment.id, new_events)
        self._dispatcher.spawn(
            self._write_ledger(environment.namespace, environment.name, uid, submission.stored, stored),
            name=f"herald-ledger-{uid}",
        )
        for event_type in new_events:
            count = sum(1 for _, n in deliveries if n.event_type is event_type)
            if count:
                self._announce(
                    body,
                    EVENT_REASONS[event_type],
                    f"Deployment {deployment.id} {deployment.current_status.value}: "
                    f"{event_type.value} queued for {count} webhooks",
                )
        logger.info(
            "Environment %s deployment %s: %s to %d deliveries",
            where,
            deployment.id,
            ",".join(e.value for e in new_events),
            len(deliveries),
        )

    async def _write_ledger(
        self, namespace: str, name: str, uid: str, queued: Awaitable[None], stored: NotifiedLedger
    ) -> None:
        """Mark events notified on the Environment once their Delivery objects exist."""
        await queued
        self._ledger_writer.enqueue(uid, namespace, name, stored)

    async def close(self) -> None:
        for task in list(self._handling):
            task.cancel()
        await asyncio.gather(*self._handling, return_exceptions=True)
        await self.retries.close()
