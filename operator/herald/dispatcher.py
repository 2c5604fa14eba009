"""Per-webhook queues and workers: where deliveries wait, retry, and become status.

Each webhook has one worker task and its own queue, so a receiver that hangs or is down delays
nobody else; a global semaphore bounds attempts in flight. A worker attempts its due deliveries
one at a time, oldest first, which keeps a deployment's STARTED ahead of its terminal event.

The worker's ``WebhookStatus`` is the truth; it is patched onto the status subresource at most
once per ``Settings.status_interval`` (the first patch after a quiet spell waits a short grace,
so a prompt delivery is recorded already finished, in one patch). ``submit`` queues at once and
hands back an awaitable that completes when the deliveries are persisted there, and raises
``NotPersisted`` if Herald stops before they are; only once it completes does the caller mark the
event as notified: after a crash, deliveries resume from the status (attempts and next attempt
time included) and an event notified twice is recognised by its ``payload_id``.

An attempt is counted only when Herald tried the receiver. Deliveries are held, not failed, while
the webhook is disabled (``enabled: false``) or its Secrets cannot be used (missing, not opted in,
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
from typing import Any, Protocol

from herald import health, ratelimit
from herald.delivery import AttemptResult, DeliveryClient, OutgoingRequest
from herald.events import ping_event
from herald.kube import ApiError, ApiNotFound, Secret
from herald.metrics import Metrics
from herald.models import (
    PREVIOUS_SIGNING_KEY,
    DeliveryOutcome,
    DeliveryRecord,
    DeploymentEvent,
    ObjectRef,
    PendingDelivery,
    SecretRef,
    WebhookSpec,
)
from herald.payloads import RenderError, format_for
from herald.redact import redact_url, scrub
from herald.retry import Verdict, next_delay
from herald.settings import Settings
from herald.signing import signing_key_error
from herald.status import (
    Pause,
    PauseReason,
    WebhookStatus,
    WebhookView,
    add_pending,
    condition,
    due,
    dump_pending,
    finish,
    log_cap,
    new_record,
    parse_status,
    record_attempt,
    set_condition,
    to_patch,
    update_pending,
)

__all__ = ["SECRET_LABEL", "Dispatcher", "EventPoster", "NotPersisted", "SecretProblem", "StatusSink"]

logger = logging.getLogger("herald.dispatcher")

# The first status patch after a quiet spell waits this long, so that a delivery answered
# promptly is persisted once, already finished, instead of once pending and once done.
FLUSH_GRACE = 0.2
# Herald reads only the Secrets that opt in with this label set to "true": whoever may create a
# webhook must not be able to have any Secret of a namespace sent to a URL of their choice.
SECRET_LABEL = "herald.dev/webhook-secret"
# Why a webhook's Secrets cannot be used; its deliveries wait (no attempt) until that is mended.
SECRET_REASONS = frozenset(
    {"SecretNotFound", "SecretKeyNotFound", "SecretNotAllowed", "SecretUnreadable", "InvalidSigningKey"}
)
# Failures a person fixes in a Secret or the spec; shown on Ready, not only on Degraded.
CONFIG_REASONS = SECRET_REASONS | {"InvalidCA", "InvalidSecret", "InvalidURL"}


class StatusSink(Protocol):
    async def patch_status(
        self, *, plural: str, namespace: str | None, name: str, status: Callable[[], Mapping[str, Any]]
    ) -> None: ...


class SecretSource(Protocol):
    async def read_secret(self, namespace: str, name: str) -> Secret | None: ...


# (object's apiVersion/kind/metadata, event type Normal|Warning, reason, message)
EventPoster = Callable[[Mapping[str, Any], str, str, str], None]


class SecretProblem(Exception):
    """A referenced Secret or key is missing or unusable; ``reason`` is the condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class NotPersisted(Exception):
    """Herald stopped before the deliveries of an event were stored: the event is not notified."""


@dataclasses.dataclass(frozen=True)
class _Target:
    url: str
    secret: str | None
    signing_keys: tuple[str, ...]
    ca_pem: str | None

    def secrets(self) -> tuple[str, ...]:
        values = (self.secret, *self.signing_keys, self.url)
        return tuple(v for v in values if v)


class _SecretCache:
    """Secrets read on demand and kept ``ttl`` seconds: rotation needs no restart, and the hot path
    makes no API call for a webhook delivered to recently."""

    def __init__(self, source: SecretSource, *, ttl: float, clock: Callable[[], float]) -> None:
        self._source = source
        self._ttl = ttl
        self._clock = clock
        # A Secret that does not opt in is kept without its data; a failed read is not kept.
        self._entries: dict[tuple[str, str], tuple[float, Secret | None]] = {}

    async def _read(self, namespace: str, name: str, field: str) -> Secret | None:
        try:
            secret = await self._source.read_secret(namespace, name)
        except ApiError as exc:  # the client already retried what was transient
            raise SecretProblem(
                "SecretUnreadable", f"{field}: cannot read Secret {namespace}/{name}: {exc}"
            ) from exc
        if secret is not None and secret.labels.get(SECRET_LABEL) != "true":
            secret = Secret(data={}, labels=secret.labels)
        return secret

    async def value(self, ref: SecretRef, *, namespace: str, field: str) -> str:
        key = (namespace, ref.name)
        now = self._clock()
        cached = self._entries.get(key)
        if cached is None or now - cached[0] > self._ttl:
            cached = (now, await self._read(namespace, ref.name, field))
            self._entries[key] = cached
            if len(self._entries) > 4096:  # bounded: drop the oldest half
                for old in sorted(self._entries, key=lambda k: self._entries[k][0])[:2048]:
                    del self._entries[old]
        secret = cached[1]
        if secret is None:
            raise SecretProblem("SecretNotFound", f"{field}: Secret {namespace}/{ref.name} not found")
        if secret.labels.get(SECRET_LABEL) != "true":
            raise SecretProblem(
                "SecretNotAllowed",
                f"{field}: Secret {namespace}/{ref.name} is not labelled {SECRET_LABEL}=true; Herald "
                f"reads only Secrets that opt in: kubectl label secret -n {namespace} {ref.name} "
                f"{SECRET_LABEL}=true",
            )
        data = secret.data
        if ref.key not in data:
            raise SecretProblem(
                "SecretKeyNotFound", f"{field}: Secret {namespace}/{ref.name} has no key {ref.key!r}"
            )
        # `echo value | kubectl create secret` leaves a newline no header or key may carry.
        return data[ref.key].strip()

    async def optional(self, ref: SecretRef, *, namespace: str, key: str) -> str | None:
        try:
            return await self.value(ref.model_copy(update={"key": key}), namespace=namespace, field="")
        except SecretProblem:
            return None


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
        self.status = parse_status(persisted)
        owner.metrics.pending.inc(len(self.status.pending))
        self._seq = 0
        self._flushed = 0
        self._last_flush = float("-inf")
        self._persisted = asyncio.Condition()
        self._closed = False  # no flush will happen any more
        self._gone = False  # the webhook was deleted: nothing is left to store
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._rendered: dict[int, tuple[PendingDelivery, int, dict[str, Any]]] = {}  # see _patch
        self._validated_generation: int | None = None
        self._bucket: ratelimit.Bucket | None = None  # this receiver's rate limit and Retry-After hold
        self._task = asyncio.create_task(self._run(), name=f"herald-worker-{view.ref}")
        self.observe(view)

    # ------------------------------------------------------------ state changes

    @property
    def plural(self) -> str:
        return "clusterwebhooks" if self.view.cluster else "webhooks"

    def _change(self, status: WebhookStatus) -> None:
        if status is self.status:
            return
        self.owner.metrics.pending.inc(len(status.pending) - len(self.status.pending))
        self.status = status
        self._seq += 1
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop(), name=f"herald-flush-{self.view.ref}")

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

    def observe(self, view: WebhookView) -> None:
        """A new version of the object: spec, generation, ping and redeliver requests."""
        self.view = view
        status = self.status
        if status.observed_generation != view.generation:
            status = status.model_copy(update={"observed_generation": view.generation})
        pause = status.pause
        enabled = view.enable is not None and view.enable != status.handled_enable
        if enabled:
            status = status.model_copy(update={"handled_enable": view.enable})
        if pause is not None and (
            pause.generation != view.generation
            or (pause.reason is PauseReason.EGRESS_DENIED and pause.policy != self.owner.policy)
            or (pause.reason is PauseReason.ENDPOINT_DISABLED and enabled)
        ):
            status = status.model_copy(update={"pause": None})
            if pause.reason is PauseReason.ENDPOINT_DISABLED:  # a fresh disableAfter starts now
                status = status.model_copy(update={"failing_since": None})
            self.owner.post(view, "Normal", "Resumed", f"Deliveries resume after {pause.reason.value}")
        self._change(status)
        if enabled and pause is not None and pause.reason is PauseReason.ENDPOINT_DISABLED and view.spec:
            self._condition("Ready", True, "Enabled", "Enabled again by herald.dev/enable; deliveries resume")
        if view.spec is None:
            self._condition("Ready", False, "InvalidSpec", view.spec_error or "the spec cannot be read")
            self._change(self.status.model_copy(update={"pause": self._pause(PauseReason.INVALID_SPEC)}))
        elif self._validated_generation != view.generation:
            self._validated_generation = view.generation
            self.owner.spawn(self._validate(view.spec), name=f"herald-validate-{view.ref}")
        if view.ping is not None and view.ping != self.status.handled_ping:
            self._ping(view.ping)
        if view.redeliver is not None and view.redeliver != self.status.handled_redeliver:
            self._redeliver(view.redeliver)
        # Each value is acted on once; removing the annotation forgets it, so the same value
        # (`failed`, a payload id) can be asked for again.
        forgotten = {
            name: None
            for name, asked, handled in (
                ("handled_ping", view.ping, self.status.handled_ping),
                ("handled_redeliver", view.redeliver, self.status.handled_redeliver),
                ("handled_enable", view.enable, self.status.handled_enable),
            )
            if asked is None and handled is not None
        }
        if forgotten:
            self._change(self.status.model_copy(update=forgotten))
        self._wake.set()

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

    def _ping(self, value: str) -> None:
        event = ping_event(webhook=self.view.ref, nonce=value, created_at=self.owner.now())
        self._enqueue(event, force=True)
        self._change(self.status.model_copy(update={"handled_ping": value}))
        self.owner.post(self.view, "Normal", "PingQueued", f"Test delivery {event.payload_id} queued")

    def _redeliver(self, value: str) -> None:
        if value == "failed":
            chosen = [r.payload_id for r in self.status.deliveries if r.outcome is DeliveryOutcome.FAILED]
        else:
            chosen = [value]
        found = {n.payload_id: n for n in self.status.sent}
        queued = [pid for pid in chosen if pid in found and self._enqueue(found[pid], force=True)]
        self._change(self.status.model_copy(update={"handled_redeliver": value}))
        missing = [pid for pid in chosen if pid not in found]
        message = f"Redelivery of {len(queued)} deliveries queued"
        if missing:
            message += f"; not in the recent history: {', '.join(missing[:5])}"
        self.owner.post(self.view, "Normal" if not missing else "Warning", "Redeliver", message)

    def _enqueue(self, event: DeploymentEvent, *, force: bool = False) -> bool:
        """Queue one delivery unless this payload is already queued or (without force) known."""
        status = self.status
        pending_ids = {p.record.payload_id for p in status.pending}
        if event.payload_id in pending_ids:
            return False
        if not force and any(r.payload_id == event.payload_id for r in status.deliveries):
            return False
        settings = self.owner.settings
        record = new_record(event, now=self.owner.now())
        if len(status.pending) >= settings.max_pending:
            failed = record.model_copy(
                update={
                    "outcome": DeliveryOutcome.FAILED,
                    "error": f"QueueFull: {settings.max_pending} deliveries already pending",
                    "next_attempt_at": None,
                }
            )
            status = finish(
                status,
                PendingDelivery(record=failed, notification=event),
                history_limit=settings.history_limit,
            )
            counters = status.counters.model_copy(update={"dropped": status.counters.dropped + 1})
            self._change(status.model_copy(update={"counters": counters}))
            self.owner.post(
                self.view, "Warning", "QueueFull", f"Delivery {event.payload_id} dropped: {failed.error}"
            )
            self.owner.log(logging.WARNING, "delivery dropped: queue full", self.view, event)
            return False
        self._change(
            add_pending(
                status,
                PendingDelivery(record=record, notification=event),
                history_limit=settings.history_limit,
            )
        )
        self._wake.set()
        return True

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
        if self.status.pause is not None or not self.status.pending or self._held():
            return None, None
        first = self.status.pending[0]  # pending is kept in due order
        due_at = due(first)[0]
        wait = (due_at - self.owner.now()).total_seconds()
        return (first, None) if wait <= 0 else (None, wait)

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
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
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
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
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
                self._apply(
                    due,
                    _unsent("InternalError", type(exc).__name__, verdict=Verdict.RETRY),
                    kind=spec.kind.value,
                )

    async def _target(self, spec: WebhookSpec) -> _Target:
        ns = self.view.ref.namespace
        cache = self.owner.secrets

        def where(ref: SecretRef) -> str:
            return ref.namespace if self.view.cluster and ref.namespace else (ns or "")

        url = spec.url
        if spec.url_secret_ref is not None:
            url = await cache.value(
                spec.url_secret_ref, namespace=where(spec.url_secret_ref), field="urlSecretRef"
            )
        secret = None
        if spec.secret_ref is not None:
            secret = await cache.value(spec.secret_ref, namespace=where(spec.secret_ref), field="secretRef")
        keys: tuple[str, ...] = ()
        if spec.signing_secret_ref is not None:
            ref = spec.signing_secret_ref
            current = await cache.value(ref, namespace=where(ref), field="signingSecretRef")
            previous = await cache.optional(ref, namespace=where(ref), key=PREVIOUS_SIGNING_KEY)
            keys = tuple(k for k in (current, previous) if k)
            for key_name, value in ((ref.key, current), (PREVIOUS_SIGNING_KEY, previous)):
                error = signing_key_error(value) if value else None
                if error is not None:
                    where_ = f"Secret {where(ref)}/{ref.name} key {key_name!r}"
                    raise SecretProblem("InvalidSigningKey", f"signingSecretRef: {where_}: {error}")
        ca = None
        if spec.ca_secret_ref is not None:
            ca = await cache.value(
                spec.ca_secret_ref, namespace=where(spec.ca_secret_ref), field="caSecretRef"
            )
        if url is None:  # excluded by the spec's validation; kept for the type checker
            raise SecretProblem("InvalidSpec", "no url")
        return _Target(url=url, secret=secret, signing_keys=keys, ca_pem=ca)

    async def _attempt(self, pending: PendingDelivery, spec: WebhookSpec, target: _Target) -> None:
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
        self._apply(pending, result, kind=spec.kind.value)

    def _apply(self, pending: PendingDelivery, result: AttemptResult, *, kind: str) -> None:
        owner = self.owner
        settings = owner.settings
        now = owner.now()
        record = pending.record
        event = pending.notification
        verdict = result.verdict
        pause: PauseReason | None = None
        next_at: datetime.datetime | None = None
        if verdict is Verdict.GONE:
            pause = PauseReason.GONE
        elif verdict is Verdict.PERMANENT and result.reason == "EgressDenied":
            pause = PauseReason.EGRESS_DENIED
        elif verdict is Verdict.RETRY:
            delay = next_delay(
                attempt=record.attempts + 1,
                settings=settings,
                retry_after=result.retry_after,
                rand=owner.rand(),
            )
            if delay is not None:
                next_at = now + datetime.timedelta(seconds=delay)
        failing = health.failing_since(
            self.status.failing_since, succeeded=verdict is Verdict.SUCCESS, now=now
        )
        spec = self.view.spec
        if (
            pause is None
            and spec is not None
            and health.should_disable(failing, now=now, disable_after=spec.disable_after_seconds)
        ):
            pause = PauseReason.ENDPOINT_DISABLED
            owner.metrics.endpoints_disabled.labels(kind=kind).inc()
        if verdict is Verdict.SUCCESS:
            outcome = DeliveryOutcome.SUCCEEDED
        elif pause is not None or next_at is not None:
            outcome = DeliveryOutcome.RETRYING
        else:
            outcome = DeliveryOutcome.FAILED
        record = record_attempt(
            record,
            now=now,
            http_status=result.http_status,
            error=result.error,
            duration_ms=result.duration_ms,
            outcome=outcome,
            next_attempt_at=next_at,
        )
        done = outcome is not DeliveryOutcome.RETRYING
        updated = PendingDelivery(record=record, notification=event)
        status = (
            finish(self.status, updated, history_limit=settings.history_limit)
            if done
            else update_pending(self.status, updated, history_limit=settings.history_limit)
        )
        failures = 0 if verdict is Verdict.SUCCESS else status.consecutive_failures + 1
        counters = status.counters
        if next_at is not None:
            counters = counters.model_copy(update={"retried": counters.retried + 1})
        status = status.model_copy(
            update={
                "consecutive_failures": failures,
                "failing_since": failing,
                "counters": counters,
                "pause": self._pause(pause) if pause is not None else status.pause,
            }
        )
        previous_failures = self.status.consecutive_failures
        self._change(status)
        if done:
            owner.metrics.deliveries.labels(
                kind=kind, event=event.event_type.value, outcome=outcome.value
            ).inc()
        self._report(record, event, verdict=verdict, pause=pause, previous_failures=previous_failures)

    def _report(
        self,
        record: DeliveryRecord,
        event: DeploymentEvent,
        *,
        verdict: Verdict,
        pause: PauseReason | None,
        previous_failures: int,
    ) -> None:
        """Conditions, Kubernetes Events and a log line for one attempt."""
        owner = self.owner
        view = self.view
        what = f"{event.event_type.value} {event.payload_id} for {record.environment}"
        if verdict is Verdict.SUCCESS:
            owner.log(
                logging.INFO, f"delivered (HTTP {record.http_status}, attempt {record.attempts})", view, event
            )
            self._condition(
                "Ready", True, "Delivered", f"Last delivery succeeded with HTTP {record.http_status}"
            )
            self._condition("Degraded", False, "Delivering", "Deliveries succeed")
            if previous_failures:
                owner.post(
                    view, "Normal", "Recovered", f"Delivered {what} after {previous_failures} failed attempts"
                )
            return
        error = record.error or f"HTTP {record.http_status}"
        owner.log(logging.WARNING, f"attempt {record.attempts} failed: {error}", view, event)
        self._condition(
            "Degraded",
            True,
            "DeliveryFailing",
            f"{self.status.consecutive_failures} consecutive failed attempts; last: {error}",
        )
        if pause is PauseReason.ENDPOINT_DISABLED and view.spec is not None:
            since = self.status.failing_since or record.time
            message = health.disabled_message(since, disable_after=view.spec.disable_after, error=error)
            self._condition("Ready", False, pause.value, message)
            owner.post(view, "Warning", pause.value, message)
        elif pause is not None:
            self._condition("Ready", False, pause.value, f"Deliveries paused until the spec changes: {error}")
            owner.post(view, "Warning", "Paused", f"Deliveries paused ({pause.value}): {error}")
        elif record.outcome is DeliveryOutcome.FAILED:
            reason = "RetriesExhausted" if verdict is Verdict.RETRY else "DeliveryFailed"
            owner.post(
                view, "Warning", reason, f"{what} failed for good after {record.attempts} attempts: {error}"
            )
        else:
            reason, _, detail = error.partition(":")
            if reason in CONFIG_REASONS:  # fixable by a person: say so on Ready, as _validate does
                self._condition("Ready", False, reason, detail.strip())
            if previous_failures == 0:
                owner.post(view, "Warning", "DeliveryFailed", f"{what}: {error}; will retry")

    # ------------------------------------------------------------ persistence

    async def persisted(self) -> None:
        """Wait until every change made so far is on the status subresource (or the webhook is
        gone); raise ``NotPersisted`` if the worker closes first."""
        target = self._seq
        async with self._persisted:
            await self._persisted.wait_for(lambda: self._flushed >= target or self._gone or self._closed)
        if self._flushed < target and not self._gone:
            raise NotPersisted(f"the status of {self.view.ref} was not stored before Herald stopped")

    def _patch(self, status: WebhookStatus) -> dict[str, Any]:
        """``to_patch``, rendering only the pending deliveries that changed since the last flush:
        a long queue is otherwise dumped whole on every flush, stalling the loop for all."""
        previous, rendered = self._rendered, {}

        def dump(pending: PendingDelivery, cap: int) -> dict[str, Any]:
            hit = previous.get(id(pending))
            if hit is not None and hit[0] is pending and hit[1] == cap:
                value = hit[2]
            else:
                value = dump_pending(pending, cap)
            rendered[id(pending)] = (pending, cap, value)
            return value

        settings = self.owner.settings
        cap = log_cap(max_pending=settings.max_pending, history_limit=settings.history_limit)
        patch = to_patch(status, cap=cap, dump=dump)
        self._rendered = rendered
        return patch

    async def _flush_loop(self) -> None:
        owner = self.owner
        while self._flushed < self._seq:
            clock = owner.clock()
            quiet = clock - self._last_flush > owner.settings.status_interval
            delay = FLUSH_GRACE if quiet else self._last_flush + owner.settings.status_interval - clock
            await asyncio.sleep(max(0.0, min(delay, owner.settings.status_interval)))
            ref = self.view.ref
            seq = self._seq

            def newest() -> dict[str, Any]:  # rendered for each try: a retry writes the newest
                nonlocal seq
                seq = self._seq
                return self._patch(self.status)

            try:  # the client retries transient failures until the status is stored
                await owner.sink.patch_status(
                    plural=self.plural, namespace=ref.namespace, name=ref.name, status=newest
                )
            except ApiNotFound:
                logger.info("webhook %s is gone; its status is not written", ref)
                self._gone = True
                seq = self._seq
            except ApiError as exc:  # refused for good (403, 422...): the next change tries again
                logger.warning(
                    "status of %s not stored: %s; it is written again with its next change", ref, exc
                )
                return
            else:
                owner.metrics.status_patches.inc()
            self._last_flush = owner.clock()
            self._flushed = seq
            async with self._persisted:
                self._persisted.notify_all()

    async def close(self, *, gone: bool = False) -> None:
        """Stop; ``gone``: the webhook was deleted, so what was not stored no longer matters."""
        self._gone = self._gone or gone
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self._flusher is not None and not self._flusher.done():
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._flusher, timeout=5)
        self._closed = True
        async with self._persisted:
            self._persisted.notify_all()


class Dispatcher:
    """Owns every webhook's worker; the kopf handlers only call ``observe``, ``forget`` and ``submit``."""

    def __init__(
        self,
        *,
        settings: Settings,
        client: DeliveryClient,
        sink: StatusSink,
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
        self.secrets = _SecretCache(secrets, ttl=settings.secret_cache_ttl, clock=clock)
        self.metrics = metrics
        self.clock = clock
        self._wallclock = wallclock
        self.rand = rand
        self.slots = asyncio.Semaphore(settings.max_concurrency)
        self.policy = policy_fingerprint(settings)
        self._post_event = post_event
        self._workers: dict[tuple[bool, ObjectRef], _Worker] = {}
        self._background: set[asyncio.Task[None]] = set()

    def now(self) -> datetime.datetime:
        return _utc(self._wallclock())

    def spawn(self, coro: Awaitable[None], *, name: str) -> None:
        async def run() -> None:
            try:
                await coro
            except NotPersisted as exc:  # stopping: the event is handled again after the restart
                logger.warning("%s; its events are not marked notified", exc)

        task = asyncio.create_task(run(), name=name)
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

    def observe(self, view: WebhookView, *, status: Any = None) -> None:
        """A webhook's latest version. ``status`` is what its status subresource holds: read only
        when the webhook's worker starts (a restart resumes from it), never kept."""
        worker = self._workers.get((view.cluster, view.ref))
        if worker is None:
            self._worker(view, status)
        else:
            worker.observe(view)

    async def forget(self, *, cluster: bool, ref: ObjectRef) -> None:
        worker = self._workers.pop((cluster, ref), None)
        if worker is not None:
            await worker.close(gone=True)
            self.metrics.pending.dec(len(worker.status.pending))

    def submit(self, deliveries: Iterable[tuple[WebhookView, DeploymentEvent]]) -> Awaitable[None]:
        """Queue deliveries now (their first attempts start at once); the returned awaitable
        completes when every one of them is persisted on its webhook's status, and raises
        ``NotPersisted`` if Herald stops before that."""
        touched: dict[int, _Worker] = {}
        for view, event in deliveries:
            worker = self._worker(view)
            worker._enqueue(event)
            touched[id(worker)] = worker

        async def persisted() -> None:
            await asyncio.gather(*(w.persisted() for w in touched.values()))

        return persisted()

    def status_of(self, *, cluster: bool, ref: ObjectRef) -> WebhookStatus | None:
        worker = self._workers.get((cluster, ref))
        return worker.status if worker is not None else None

    async def close(self) -> None:
        await asyncio.gather(*(w.close() for w in self._workers.values()))
        self._workers.clear()
        if self._background:  # let the last ledger writes land: they only wait for the flushes above
            await asyncio.wait(set(self._background), timeout=5)
        for task in list(self._background):
            task.cancel()
