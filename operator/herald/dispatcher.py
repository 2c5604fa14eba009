"""Per-webhook workers: where deliveries wait, are attempted, and become Delivery objects.

Each webhook has one worker task and its own backlog (``backlog.Backlog``: the due queue, the
lookups, what finished lately), so a receiver that hangs or is down delays nobody else; a global
semaphore bounds attempts in flight. A worker attempts its due deliveries one at a time, oldest
first, which keeps a deployment's STARTED ahead of its terminal event. What an attempt means is
decided by ``decision.decide`` (pure); the worker applies it: the delivery's new state goes to
the ``DeliveryStore`` (its Delivery object), the webhook's summary to its status, the notices to
conditions and Kubernetes Events. Data flows one way: environment →
events → deliveries → receiver → delivery status.

``submit`` queues at once (the first attempt starts without waiting for any write) and hands back
what could not be queued (a webhook at its ``max_pending`` bound: back-pressure, the flow derives
the event again later) and an awaitable that completes when the Delivery objects exist, and raises
``NotPersisted`` if Herald stops first; only then does the flow mark the event notified. A
delivery that may have been stored by an earlier Herald (``verify``) is looked up before it is
attempted, so an event derived again after a restart is not sent twice.

The webhook's summary status is patched at most once per ``Settings.status_interval``. An attempt
is counted only when Herald tried the receiver. Deliveries are held, not failed, while the webhook
is disabled (``enabled: false``) or its Secrets cannot be used (missing, not opted in,
unreadable): Ready says why, and they resume, attempts intact, once that is mended.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import hashlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from herald import background, ratelimit
from herald.backlog import Backlog
from herald.credentials import SecretCache, SecretProblem, SecretSource, Target
from herald.decision import SECRET_REASONS, FailureRun, Notice, SetCondition, decide, observe
from herald.delivery import DeliveryClient, OutgoingRequest
from herald.delivery_object import (
    PLURAL,
    Owner,
    Stored,
    owner_of,
    parse_delivery,
)
from herald.delivery_store import DeliveryApi, DeliveryStore, Key, NotPersisted, Retention
from herald.events import ping_event
from herald.kube import ApiError
from herald.metrics import Metrics
from herald.models import (
    DeliveryOutcome,
    DeploymentEvent,
    ObjectRef,
    PendingDelivery,
    WebhookSpec,
)
from herald.payloads import RenderError, format_for
from herald.redact import redact_url, scrub
from herald.retry import AttemptResult, Verdict
from herald.settings import Settings
from herald.status import (
    LEGACY_FIELDS,
    Pause,
    PauseReason,
    WebhookStatus,
    WebhookView,
    condition,
    last_delivery,
    legacy_deliveries,
    parse_status,
    set_condition,
)
from herald.status_writer import StatusSink, StatusWriter

__all__ = ["Dispatcher", "EventPoster", "NotPersisted", "Submission"]

logger = logging.getLogger("herald.dispatcher")

VERIFY_READS = 16  # lookups of possibly stored deliveries in flight, across all webhooks


# (object's apiVersion/kind/metadata, event type Normal|Warning, reason, message)
EventPoster = Callable[[Mapping[str, Any], str, str, str], None]


@dataclasses.dataclass(frozen=True)
class Submission:
    """What ``Dispatcher.submit`` did with an event's deliveries."""

    deferred: tuple[WebhookView, ...]  # at their backlog bound: nothing queued for them
    stored: Awaitable[None]  # completes once the queued ones' Delivery objects exist


def _unsent(reason: str, detail: str, *, verdict: Verdict) -> AttemptResult:
    """An attempt that failed in Herald before any byte left for the receiver."""
    return AttemptResult(
        verdict=verdict,
        http_status=None,
        error=f"{reason}: {detail}",
        reason=reason,
        retry_after=None,
        duration_ms=0,
        response_excerpt=b"",
    )


def _utc(ts: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC)


def policy_fingerprint(settings: Settings) -> str:
    """Identifies the egress policy, so a pause for EgressDenied lifts when the policy changes."""
    text = (
        f"{sorted(map(str, settings.egress_allow))}|{settings.egress_deny_private}|{settings.require_https}"
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class _Worker:
    def __init__(self, owner: Dispatcher, view: WebhookView, persisted: Any) -> None:
        self.owner = owner
        self.view = view
        self.summary = StatusWriter(
            owner.sink,
            plural="clusterwebhooks" if view.cluster else "webhooks",
            ref=view.ref,
            status=parse_status(persisted),
            interval=owner.settings.status_interval,
            clock=owner.clock,
            metrics=owner.metrics,
        )
        self._wake = asyncio.Event()
        self.backlog = Backlog(
            owner.store,
            lambda: self.delivery_owner,
            now=owner.now,
            clock=owner.clock,
            spawn=owner.spawn,
            lookups=owner.verify_slots,
            changed=self._changed_backlog,
            name=str(view.ref),
        )
        self._full = False  # at the backlog bound (said once per spell)
        self._validated_generation: int | None = None
        self._bucket: ratelimit.Bucket | None = None  # this receiver's rate limit and Retry-After hold
        self._task = background.start(self._run(), name=f"herald-worker-{view.ref}")
        self._migrate(persisted)
        self.observe(view)

    # ------------------------------------------------------------ state changes

    @property
    def status(self) -> WebhookStatus:
        return self.summary.status

    @property
    def delivery_owner(self) -> Owner:
        view = self.view
        return owner_of(
            view.ref, uid=view.uid, cluster=view.cluster, home=self.owner.settings.delivery_namespace
        )

    def _change(self, status: WebhookStatus) -> None:
        self.summary.change(status)

    def _condition(self, type_: str, value: bool, reason: str, message: str) -> None:
        self._change(
            set_condition(
                self.status,
                type_=type_,
                value="True" if value else "False",
                reason=reason,
                message=message,
                now=self.owner.now(),
                generation=self.view.generation,
            )
        )

    def _migrate(self, persisted: Any) -> None:
        """A Herald 0.1 status held its queue: each delivery becomes a Delivery object, the pending
        ones are queued again (attempts intact), and the status is cleared once they are stored."""
        if not isinstance(persisted, Mapping) or not any(persisted.get(f) for f in LEGACY_FIELDS):
            return
        found = legacy_deliveries(persisted)
        store, owner = self.owner.store, self.delivery_owner
        for delivery in found:
            if delivery.record.outcome in (DeliveryOutcome.PENDING, DeliveryOutcome.RETRYING):
                self.backlog.queue.put(delivery)
            store.put(owner, delivery)
        logger.info(
            "webhook %s: %d deliveries of a Herald 0.1 status become Delivery objects",
            self.view.ref,
            len(found),
        )
        self.summary.hold(store.stored([store.key(owner, d.record.payload_id) for d in found]))
        self._summary()

    def observe(self, view: WebhookView) -> None:
        """A new version of the object: spec, generation, ping and redeliver requests."""
        self.view = view
        seen = observe(self.status, view, policy=self.owner.policy)
        self._change(seen.status)
        self._notify(seen.notices)
        if view.spec is not None and self._validated_generation != view.generation:
            self._validated_generation = view.generation
            self.owner.spawn(self._validate(view.spec), name=f"herald-validate-{view.ref}")
        if seen.ping is not None:
            event = ping_event(webhook=view.ref, nonce=seen.ping, created_at=self.owner.now())
            self.enqueue(event, force=True)
            self.owner.post(view, "Normal", "PingQueued", f"Test delivery {event.payload_id} queued")
        if seen.redeliver is not None:
            self.owner.spawn(self._redeliver_asked(seen.redeliver), name=f"herald-redeliver-{view.ref}")
        self._wake.set()

    def _notify(self, notices: Iterable[Notice]) -> None:
        for notice in notices:
            if isinstance(notice, SetCondition):
                self._condition(notice.type, notice.value, notice.reason, notice.message)
            else:
                self.owner.post(self.view, notice.type, notice.reason, notice.message)

    def _pause(self, reason: PauseReason) -> Pause:
        return Pause(reason=reason, generation=self.view.generation, policy=self.owner.policy)

    async def _validate(self, spec: WebhookSpec) -> None:
        """Report a missing Secret or bad key on Ready before any delivery needs it."""
        try:
            await self._target(spec)
        except SecretProblem as problem:
            self._condition("Ready", False, problem.reason, problem.message)
            return
        ready = condition(self.status, "Ready")
        if ready is not None and ready.status == "True" and ready.observed_generation == self.view.generation:
            return  # already says so (a restart must not rewrite every webhook's status)
        if self.status.pause is None:
            message = (
                "Webhook is valid; deliveries are sent as events occur"
                if spec.enabled
                else "Webhook is valid and disabled (enabled: false); deliveries wait until it is enabled"
            )
            self._condition("Ready", True, "Ready", message)
            self._wake.set()  # deliveries held for a Secret go now

    async def _redeliver_asked(self, value: str) -> None:
        """``herald.dev/redeliver`` on the webhook: ``failed`` (its retained failed ones) or a payload id."""
        store, owner = self.owner.store, self.delivery_owner
        found: list[Stored] = []
        try:
            if value == "failed":
                async for page in self.owner.api.pages(
                    PLURAL, owner.home, label_selector=f"{owner.selector()},herald.dev/outcome=Failed"
                ):
                    found += [
                        s
                        for s in map(parse_delivery, page)
                        if s is not None
                        and (s.owner_kind, s.owner) == (owner.kind, owner.ref)
                        and s.delivery.record.outcome is DeliveryOutcome.FAILED
                    ]
            else:
                stored = await store.read(owner, value)
                found = [stored] if stored is not None else []
        except ApiError as exc:
            self.owner.post(
                self.view, "Warning", "Redeliver", f"Cannot read the deliveries to send again: {exc}"
            )
            return
        for stored in found:
            self.backlog.redeliver(stored, value, annotated=False)
        message = f"Redelivery of {len(found)} deliveries queued"
        if not found:
            message += (
                f"; no retained {'failed delivery' if value == 'failed' else 'delivery ' + value} found"
            )
        self.owner.post(self.view, "Normal" if found else "Warning", "Redeliver", message)

    def enqueue(self, event: DeploymentEvent, *, force: bool = False, verify: bool = False) -> Key | None:
        """Queue one delivery; its store key, or None at the backlog bound (back-pressure). A payload
        already in the backlog is not queued twice; ``verify``: see ``Backlog.add``."""
        backlog = self.backlog
        key = backlog.key(event.payload_id)
        if event.payload_id in backlog:
            return key
        if not force and len(backlog) >= self.owner.settings.max_pending:
            self._deferred(event)
            return None
        self._full = False
        backlog.add(event, verify=verify)
        return key

    def _changed_backlog(self) -> None:
        self._summary()
        self._wake.set()

    def _deferred(self, event: DeploymentEvent) -> None:
        counters = self.status.counters
        self._change(
            self.status.model_copy(
                update={"counters": counters.model_copy(update={"deferred": counters.deferred + 1})}
            )
        )
        self.owner.metrics.deferred.inc()
        if not self._full:
            self._full = True
            bound = self.owner.settings.max_pending
            message = (
                f"{len(self.backlog)} deliveries are pending (--max-pending {bound}); "
                "new events wait and are derived again once the backlog drains"
            )
            self.owner.post(self.view, "Warning", "BacklogFull", message)
            self.owner.log(logging.WARNING, "backlog full: event deferred", self.view, event)

    def _summary(self) -> None:
        """The pending count and the age of the oldest, as the status shows them."""
        count = len(self.backlog)
        oldest = self.backlog.queue.oldest()
        if (count, oldest) != (self.status.pending_deliveries, self.status.oldest_pending_at):
            self._change(
                self.status.model_copy(update={"pending_deliveries": count, "oldest_pending_at": oldest})
            )

    # ------------------------------------------------------------ attempts

    def _held(self) -> bool:
        """Disabled, or Ready=False because its Secrets cannot be used: no attempt is made."""
        spec = self.view.spec
        if spec is not None and not spec.enabled:
            return True
        ready = condition(self.status, "Ready")
        return ready is not None and ready.status == "False" and ready.reason in SECRET_REASONS

    def _next_due(self) -> tuple[PendingDelivery | None, float | None]:
        """The delivery to attempt now, or how long to wait for the next one (None: until woken)."""
        if self.status.pause is not None or self._held() or self.backlog.looking_up:
            return None, None
        first = self.backlog.queue.first()
        if first is None:
            return None, None
        wait = (first.record.next_attempt_at or first.record.time) - self.owner.now()
        seconds = wait.total_seconds()
        return (first, None) if seconds <= 0 else (None, seconds)

    def _recheck_in(self) -> float | None:
        """While Ready=False for a Secret, look again now and then: Ready recovers by itself."""
        ready = condition(self.status, "Ready")
        if (
            self.view.spec is None
            or ready is None
            or ready.status != "False"
            or ready.reason not in SECRET_REASONS
        ):
            return None
        return max(self.owner.settings.secret_cache_ttl, 1.0)

    async def _run(self) -> None:
        while True:
            try:
                await self._step()
            except Exception:  # a bug must not stop this webhook's deliveries for good
                logger.exception("worker of %s failed; continuing", self.view.ref)
                await asyncio.sleep(1)

    async def _step(self) -> None:
        """Attempt the next due delivery, or wait for one (or for a missing Secret to appear)."""
        self._wake.clear()
        due, wait = self._next_due()
        if due is None:
            recheck = self._recheck_in()
            timeout = recheck if wait is None else wait if recheck is None else min(wait, recheck)
            try:  # asyncio.timeout, not wait_for: no task of its own for each idle webhook
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                if recheck is not None and self.view.spec is not None:
                    await self._validate(self.view.spec)
            return
        spec = self.view.spec
        if spec is None:
            return
        limit = ratelimit.limit_of(spec)
        self._bucket, wait = ratelimit.take(self._bucket, limit=limit, now=self.owner.clock())
        if wait > 0:  # above this receiver's rate: wait, keeping the order (woken early by a change)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            return
        try:  # outside the slot: reading Secrets may wait out an API server's backoff
            target = await self._target(spec)
        except SecretProblem as problem:  # held, not attempted: Ready says why, _validate re-checks
            self._condition("Ready", False, problem.reason, problem.message)
            return
        async with self.owner.slots:
            try:
                await self._attempt(due, spec, target)
            except Exception as exc:  # recorded as a failed attempt and retried on schedule
                logger.exception("attempt for %s failed unexpectedly", self.view.ref)
                self._apply(due, _unsent("InternalError", type(exc).__name__, verdict=Verdict.RETRY), spec)

    async def _target(self, spec: WebhookSpec) -> Target:
        return await self.owner.secrets.target(
            spec, namespace=self.view.ref.namespace, cluster=self.view.cluster
        )

    async def _attempt(self, pending: PendingDelivery, spec: WebhookSpec, target: Target) -> None:
        owner = self.owner
        fmt = format_for(spec.kind)
        result: AttemptResult
        try:
            rendered = fmt.render(pending.notification, spec)
        except RenderError as exc:  # a template that passed the samples fails on this event
            result = _unsent("TemplateError", str(exc), verdict=Verdict.PERMANENT)
        else:
            request = OutgoingRequest(
                url=target.url,
                body=rendered.body,
                content_type=rendered.content_type,
                headers=rendered.headers,
                payload_id=pending.notification.payload_id,
                secret=target.secret,
                signing_keys=target.signing_keys,
                ca_pem=target.ca_pem,
            )
            result = await owner.client.send(request, now=owner.now())
            if result.verdict is Verdict.SUCCESS and result.http_status is not None:
                rejected = fmt.check_response(result.http_status, result.response_excerpt)
                if rejected is not None:
                    result = dataclasses.replace(
                        result, verdict=Verdict.PERMANENT, error=rejected, reason="ReceiverRejected"
                    )
        if result.error is not None:
            result = dataclasses.replace(result, error=scrub(result.error, target.secrets()))
        if result.retry_after is not None:  # the receiver asked this webhook, and only it, to wait
            wait = min(result.retry_after, owner.settings.retry_after_max)
            self._bucket = ratelimit.hold(self._bucket, until=owner.clock() + wait)
        owner.metrics.duration.observe(result.duration_ms / 1000)
        owner.metrics.attempts.labels(result=result.reason or result.verdict.value.lower()).inc()
        self._apply(pending, result, spec)

    def _apply(self, pending: PendingDelivery, result: AttemptResult, spec: WebhookSpec) -> None:
        owner = self.owner
        payload_id = pending.record.payload_id
        backlog = self.backlog
        if backlog.queue.get(payload_id) is not pending:
            return  # dropped or replaced (redelivered, its object deleted) while attempted
        status = self.status
        decision = decide(
            pending.record,
            result,
            run=FailureRun(consecutive=status.consecutive_failures, since=status.failing_since),
            settings=owner.settings,
            now=owner.now(),
            rand=owner.rand(),
            disable_after=spec.disable_after_seconds,
            disable_after_text=spec.disable_after,
        )
        record = decision.record
        updated = PendingDelivery(record=record, notification=pending.notification)
        if decision.finished:
            backlog.finish(payload_id)
        else:
            backlog.queue.put(updated)
        delivery_owner = self.delivery_owner
        if decision.finished and backlog.outlived(updated, retain=owner.settings.retain):
            owner.store.retire(delivery_owner, updated)
        else:
            owner.store.put(delivery_owner, updated)
        counters = status.counters
        if decision.retried:
            counters = counters.model_copy(update={"retried": counters.retried + 1})
        if record.outcome is DeliveryOutcome.SUCCEEDED:
            counters = counters.model_copy(update={"delivered": counters.delivered + 1})
        elif record.outcome is DeliveryOutcome.FAILED:
            counters = counters.model_copy(update={"failed": counters.failed + 1})
        if decision.pause is PauseReason.ENDPOINT_DISABLED and status.pause is None:
            owner.metrics.endpoints_disabled.labels(kind=spec.kind.value).inc()
        self._change(
            status.model_copy(
                update={
                    "consecutive_failures": decision.run.consecutive,
                    "failing_since": decision.run.since,
                    "counters": counters,
                    "pause": self._pause(decision.pause) if decision.pause is not None else status.pause,
                    "last_delivery": last_delivery(owner.store.key(delivery_owner, payload_id)[1], record),
                }
            )
        )
        self._summary()
        if decision.finished:
            owner.metrics.deliveries.labels(
                kind=spec.kind.value, event=record.event.value, outcome=record.outcome.value
            ).inc()
        event = pending.notification
        if result.verdict is Verdict.SUCCESS:
            owner.log(
                logging.INFO,
                f"delivered (HTTP {record.http_status}, attempt {record.attempts})",
                self.view,
                event,
            )
        else:
            error = record.error or f"HTTP {record.http_status}"
            owner.log(logging.WARNING, f"attempt {record.attempts} failed: {error}", self.view, event)
        self._notify(decision.notices)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.summary.close()
        self.backlog.close(str(self.view.ref))


class Dispatcher:
    """Owns every webhook's worker, the Delivery store and retention; the flow calls ``observe``,
    ``forget`` and ``submit``."""

    def __init__(
        self,
        *,
        settings: Settings,
        client: DeliveryClient,
        sink: StatusSink,
        api: DeliveryApi,
        secrets: SecretSource,
        post_event: EventPoster,
        metrics: Metrics,
        clock: Callable[[], float],
        wallclock: Callable[[], float],
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.client = client
        self.sink = sink
        self.api = api
        self.secrets = SecretCache(secrets, ttl=settings.secret_cache_ttl, clock=clock)
        self.metrics = metrics
        self.clock = clock
        self._wallclock = wallclock
        self.rand = rand
        self.slots = asyncio.Semaphore(settings.max_concurrency)
        self.verify_slots = asyncio.Semaphore(VERIFY_READS)
        self.policy = policy_fingerprint(settings)
        self._post_event = post_event
        self._workers: dict[tuple[bool, ObjectRef], _Worker] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.retention = Retention(
            api,
            settings=settings,
            metrics=metrics,
            wallclock=self.now,
            namespaces=self.delivery_namespaces,
            redeliver=self.redeliver_requested,
        )
        self.store = DeliveryStore(
            api, metrics=metrics, finished=self.retention.finished, gone=self._object_gone
        )
        metrics.pending.set_function(lambda: sum(len(w.backlog.queue) for w in self._workers.values()))

    def now(self) -> datetime.datetime:
        return _utc(self._wallclock())

    def delivery_namespaces(self) -> tuple[str | None, ...]:
        """Where Delivery objects live: everywhere, or the watched namespaces and Herald's own."""
        watched = self.settings.namespaces
        if watched is None:
            return (None,)
        return tuple(dict.fromkeys((*watched, self.settings.delivery_namespace)))

    def spawn(self, coro: Awaitable[None], *, name: str) -> None:
        async def run() -> None:
            try:
                await coro
            except NotPersisted as exc:  # stopping: the event is handled again after the restart
                logger.warning("%s; its events are not marked notified", exc)

        task = background.start(run(), name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def post(self, view: WebhookView, type_: str, reason: str, message: str) -> None:
        try:
            self._post_event(view.body_meta, type_, reason, message[:1000])
        except Exception:  # an Event is a courtesy; never let it break a delivery
            logger.exception("could not post a Kubernetes Event for %s", view.ref)

    def log(self, level: int, message: str, view: WebhookView, event: DeploymentEvent) -> None:
        if not logger.isEnabledFor(level):
            return
        env = event.environment
        url = redact_url(view.spec.url) if view.spec is not None and view.spec.url else "<from Secret>"
        logger.log(
            level,
            "%s: webhook=%s environment=%s/%s event=%s payload_id=%s receiver=%s",
            message,
            view.ref,
            env.namespace,
            env.name,
            event.event_type.value,
            event.payload_id,
            url,
            extra={
                "webhook": str(view.ref),
                "environment": f"{env.namespace}/{env.name}",
                "event": event.event_type.value,
                "payload_id": event.payload_id,
            },
        )

    def _worker(self, view: WebhookView, persisted: Any = None) -> _Worker:
        key = (view.cluster, view.ref)
        worker = self._workers.get(key)
        if worker is None:
            worker = _Worker(self, view, persisted)
            self._workers[key] = worker
        return worker

    def _find(self, kind: str, ref: ObjectRef) -> _Worker | None:
        return self._workers.get((kind == "ClusterWebhook", ref))

    def observe(self, view: WebhookView, *, status: Any = None) -> None:
        """A webhook's latest version. ``status`` is what its status subresource holds: read only
        when the webhook's worker starts (a restart resumes its summary, or migrates a 0.1 queue)."""
        worker = self._workers.get((view.cluster, view.ref))
        if worker is None:
            self._worker(view, status)
        else:
            worker.observe(view)

    async def forget(self, *, cluster: bool, ref: ObjectRef) -> None:
        worker = self._workers.pop((cluster, ref), None)
        if worker is not None:
            self.store.forget(worker.delivery_owner)
            await worker.close()

    def submit(
        self, deliveries: Iterable[tuple[WebhookView, DeploymentEvent]], *, verify: bool = False
    ) -> Submission:
        """Queue deliveries now (their first attempts start at once); see ``Submission``."""
        keys: list[Key] = []
        lookups: list[Awaitable[None]] = []
        deferred: dict[ObjectRef, WebhookView] = {}
        for view, event in deliveries:
            worker = self._worker(view)
            key = worker.enqueue(event, verify=verify)
            if key is None:
                deferred[view.ref] = view
                continue
            keys.append(key)
            lookup = worker.backlog.verified(event.payload_id)
            if lookup is not None:
                lookups.append(lookup)

        async def stored() -> None:
            await asyncio.gather(*lookups)
            await self.store.stored(keys)

        return Submission(deferred=tuple(deferred.values()), stored=stored())

    def status_of(self, *, cluster: bool, ref: ObjectRef) -> WebhookStatus | None:
        worker = self._workers.get((cluster, ref))
        return worker.status if worker is not None else None

    def pending_of(self, *, cluster: bool, ref: ObjectRef) -> tuple[PendingDelivery, ...]:
        worker = self._workers.get((cluster, ref))
        return tuple(worker.backlog) if worker is not None else ()

    async def resume(self) -> int:
        """Queue again every unfinished Delivery object (after a restart); returns how many."""
        count = 0
        for namespace in self.delivery_namespaces():
            async for page in self.api.pages(
                PLURAL, namespace, label_selector="herald.dev/outcome in (Pending,Retrying)"
            ):
                for item in page:
                    stored = parse_delivery(item)
                    worker = None if stored is None else self._find(stored.owner_kind, stored.owner)
                    if stored is None or worker is None:
                        continue  # unreadable, or its webhook is gone (the GC deletes it)
                    if stored.delivery.record.outcome in (DeliveryOutcome.PENDING, DeliveryOutcome.RETRYING):
                        worker.backlog.adopt(stored.delivery)
                        count += 1
        return count

    def redeliver_requested(self, namespace: str, name: str, value: str) -> None:
        """``herald.dev/redeliver`` on a Delivery object (from the watch or a scan)."""
        self.spawn(self._redeliver_object(namespace, name, value), name=f"herald-redeliver-{name}")

    async def _redeliver_object(self, namespace: str, name: str, value: str) -> None:
        try:
            body = await self.api.get(PLURAL, namespace, name)
        except ApiError as exc:
            logger.warning("cannot read Delivery %s/%s to send it again: %s", namespace, name, exc)
            return
        stored = parse_delivery(body) if body is not None else None
        worker = None if stored is None else self._find(stored.owner_kind, stored.owner)
        if stored is None or worker is None or stored.redeliver != value:
            return  # gone, unreadable, not ours to send, or already acted on
        worker.backlog.redeliver(stored, value, annotated=True)
        self.post(
            worker.view,
            "Normal",
            "Redeliver",
            f"Delivery {name} ({stored.delivery.record.payload_id}) queued again",
        )

    def object_deleted(self, namespace: str, name: str) -> None:
        """A Delivery object was deleted (retention, a person, the GC): stop sending it if pending."""
        held = self.store.held((namespace, name))
        if held is not None:
            self.store.forget_one((namespace, name))
            self._object_gone(*held)

    def _object_gone(self, owner: Owner, payload_id: str) -> None:
        worker = self._find(owner.kind, owner.ref)
        if worker is not None:
            worker.backlog.drop(payload_id)

    async def close(self) -> None:
        await asyncio.gather(*(w.close() for w in self._workers.values()))
        await self.store.close(timeout=5)
        await self.retention.close()
        self._workers.clear()
        if self._background:  # let the last ledger writes land: they only wait for the writes above
            await asyncio.wait(set(self._background), timeout=5)
        for task in list(self._background):
            task.cancel()
