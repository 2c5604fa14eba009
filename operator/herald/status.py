"""A webhook's status as values: delivery records, pending deliveries, conditions, counters.

The dispatcher owns one ``WebhookStatus`` per webhook and replaces it through these pure
functions; what it patches onto the status subresource is ``to_patch`` of that value, and what
it resumes from after a restart is ``parse_status`` of what it patched before. Nothing here
holds a secret or a full URL: errors arrive already scrubbed.
"""

from __future__ import annotations

import bisect
import datetime
import enum
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from herald.models import (
    Attempt,
    Condition,
    DeliveryOutcome,
    DeliveryRecord,
    DeploymentEvent,
    ObjectRef,
    PendingDelivery,
    WebhookSpec,
    first_error,
)
from herald.payloads import custom

__all__ = [
    "ATTEMPT_LOG_LIMIT",
    "NOTIFICATION_LOG_CAP",
    "STATUS_LOG_BUDGET",
    "Counters",
    "Pause",
    "PauseReason",
    "WebhookStatus",
    "WebhookView",
    "add_pending",
    "condition",
    "due",
    "dump_pending",
    "finish",
    "log_cap",
    "new_record",
    "parse_status",
    "parse_webhook",
    "persisted",
    "record_attempt",
    "set_condition",
    "to_patch",
    "update_pending",
]

ATTEMPT_LOG_LIMIT = 10
PING_ANNOTATION = "herald.dev/ping"
REDELIVER_ANNOTATION = "herald.dev/redeliver"
ENABLE_ANNOTATION = "herald.dev/enable"


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")


class PauseReason(enum.StrEnum):
    """Why a webhook stopped attempting; each lifts when the spec changes (generation moves)."""

    GONE = "Gone"  # the receiver answered 410
    EGRESS_DENIED = "EgressDenied"  # also lifts when the egress policy changes
    INVALID_SPEC = "InvalidSpec"
    ENDPOINT_DISABLED = "EndpointDisabled"  # failed for spec.disableAfter; also lifts on herald.dev/enable


class Pause(_Model):
    reason: PauseReason
    generation: int
    policy: str = ""  # fingerprint of the egress policy in force when paused


class Counters(_Model):
    delivered: int = 0
    failed: int = 0
    retried: int = 0
    dropped: int = 0


class WebhookStatus(_Model):
    observed_generation: int | None = None
    conditions: tuple[Condition, ...] = ()
    last_delivery: DeliveryRecord | None = None
    deliveries: tuple[DeliveryRecord, ...] = ()  # newest first, bounded by Settings.history_limit
    # Due order (see ``due``), so the next attempt is always the first; bounded by Settings.max_pending.
    pending: tuple[PendingDelivery, ...] = ()
    # Notifications of finished deliveries still in ``deliveries``: what herald.dev/redeliver resends.
    sent: tuple[DeploymentEvent, ...] = ()
    counters: Counters = Field(default_factory=Counters)
    consecutive_failures: int = 0
    failing_since: datetime.datetime | None = None  # first failed attempt since the last success
    pause: Pause | None = None
    handled_ping: str | None = None
    handled_redeliver: str | None = None
    handled_enable: str | None = None

    @field_validator("pending")
    @classmethod
    def _in_due_order(cls, pending: tuple[PendingDelivery, ...]) -> tuple[PendingDelivery, ...]:
        return tuple(sorted(pending, key=due))


class WebhookView(_Model):
    """What Herald reads from a Webhook or ClusterWebhook object."""

    ref: ObjectRef
    uid: str
    generation: int
    cluster: bool
    spec: WebhookSpec | None
    spec_error: str | None
    ping: str | None
    redeliver: str | None
    enable: str | None = None
    body_meta: dict[str, Any]  # apiVersion/kind/metadata, enough to post a Kubernetes Event


def parse_status(raw: Any) -> WebhookStatus:
    """Resume from a persisted status; whatever cannot be read is dropped, never raised."""
    if not isinstance(raw, Mapping):
        return WebhookStatus()
    try:
        return WebhookStatus.model_validate(raw)
    except ValidationError:
        pass
    # Salvage what parses, item by item, so one garbled record loses only itself.
    fields: dict[str, Any] = {}
    for name, info in WebhookStatus.model_fields.items():
        alias = info.alias or name
        if alias not in raw:
            continue
        try:
            WebhookStatus.model_validate({alias: raw[alias]})
            fields[alias] = raw[alias]
        except ValidationError:
            value = raw[alias]
            if isinstance(value, list) and name in ("deliveries", "pending", "conditions"):
                fields[alias] = [v for v in value if _valid(_ITEM_TYPES[name], v)]
    return WebhookStatus.model_validate(fields)


_ITEM_TYPES: dict[str, type[BaseModel]] = {
    "deliveries": DeliveryRecord,
    "pending": PendingDelivery,
    "conditions": Condition,
}


def _valid(model: type[BaseModel], value: Any) -> bool:
    try:
        model.model_validate(value)
    except ValidationError:
        return False
    return True


def parse_webhook(body: Mapping[str, Any], *, cluster: bool) -> WebhookView:
    """Read a Webhook object; a spec that breaks Herald's rules becomes ``spec_error``, not an exception."""
    meta = body.get("metadata") or {}
    if not isinstance(meta, Mapping):
        meta = {}
    ref = ObjectRef(
        namespace=None if cluster else str(meta.get("namespace") or ""), name=str(meta.get("name"))
    )
    spec: WebhookSpec | None = None
    error: str | None = None
    raw_spec = body.get("spec")
    try:
        spec = WebhookSpec.model_validate(raw_spec if isinstance(raw_spec, Mapping) else {})
    except ValidationError as exc:
        error = first_error(exc)
    if spec is not None:
        error = _scope_error(spec, cluster=cluster, namespace=ref.namespace) or custom.template_error(spec)
        if error is not None:
            spec = None
    annotations = meta.get("annotations") or {}
    if not isinstance(annotations, Mapping):
        annotations = {}
    generation = meta.get("generation")
    return WebhookView(
        ref=ref,
        uid=str(meta.get("uid") or ""),
        generation=generation if isinstance(generation, int) else 0,
        cluster=cluster,
        spec=spec,
        spec_error=error,
        ping=_str_or_none(annotations.get(PING_ANNOTATION)),
        redeliver=_str_or_none(annotations.get(REDELIVER_ANNOTATION)),
        enable=_str_or_none(annotations.get(ENABLE_ANNOTATION)),
        body_meta={
            "apiVersion": body.get("apiVersion"),
            "kind": body.get("kind"),
            "metadata": {k: meta.get(k) for k in ("name", "namespace", "uid") if meta.get(k)},
        },
    )


def _str_or_none(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _scope_error(spec: WebhookSpec, *, cluster: bool, namespace: str | None) -> str | None:
    """Namespaced webhooks read Secrets of their own namespace; ClusterWebhooks must name one."""
    refs = {
        "secretRef": spec.secret_ref,
        "urlSecretRef": spec.url_secret_ref,
        "signingSecretRef": spec.signing_secret_ref,
        "caSecretRef": spec.ca_secret_ref,
    }
    for field, ref in refs.items():
        if ref is None:
            continue
        if cluster and not ref.namespace:
            return f"spec.{field}.namespace: a ClusterWebhook must name the Secret's namespace"
        if not cluster and ref.namespace not in (None, namespace):
            return f"spec.{field}.namespace: a Webhook may only reference Secrets in its own namespace"
    if not cluster and spec.namespace_selector is not None:
        return "spec.namespaceSelector: only a ClusterWebhook takes a namespaceSelector"
    return None


def new_record(event: DeploymentEvent, *, now: datetime.datetime) -> DeliveryRecord:
    env = event.environment
    return DeliveryRecord(
        payload_id=event.payload_id,
        event=event.event_type,
        environment=f"{env.namespace}/{env.name}",
        deployment_id=event.deployment.id,
        time=now,
        next_attempt_at=now,
    )


def record_attempt(
    record: DeliveryRecord,
    *,
    now: datetime.datetime,
    http_status: int | None,
    error: str | None,
    duration_ms: int,
    outcome: DeliveryOutcome,
    next_attempt_at: datetime.datetime | None,
) -> DeliveryRecord:
    number = record.attempts + 1
    attempt = Attempt(number=number, time=now, http_status=http_status, error=error, duration_ms=duration_ms)
    return record.model_copy(
        update={
            "attempts": number,
            "http_status": http_status,
            "error": error,
            "time": now,
            "outcome": outcome,
            "duration_ms": duration_ms,
            "next_attempt_at": next_attempt_at,
            "attempt_log": (*record.attempt_log, attempt)[-ATTEMPT_LOG_LIMIT:],
        }
    )


def _with_history(status: WebhookStatus, record: DeliveryRecord, *, limit: int) -> tuple[DeliveryRecord, ...]:
    others = tuple(r for r in status.deliveries if r.payload_id != record.payload_id)
    return (record, *others)[:limit]


def due(pending: PendingDelivery) -> tuple[datetime.datetime, datetime.datetime]:
    """When a pending delivery is due: its retry time, or at once; oldest first among equals."""
    record = pending.record
    return (record.next_attempt_at or record.time, record.time)


def _queued(queue: tuple[PendingDelivery, ...], pending: PendingDelivery) -> tuple[PendingDelivery, ...]:
    when = due(pending)
    if not queue or due(queue[-1]) <= when:  # the usual case: a new delivery, due now
        return (*queue, pending)
    at = bisect.bisect_right(queue, when, key=due)
    return (*queue[:at], pending, *queue[at:])


def _without(queue: tuple[PendingDelivery, ...], payload_id: str) -> tuple[PendingDelivery, ...]:
    # The delivery taken off is nearly always the first: the one just attempted.
    for at, queued in enumerate(queue):
        if queued.record.payload_id == payload_id:
            return (*queue[:at], *queue[at + 1 :])
    return queue


def add_pending(status: WebhookStatus, pending: PendingDelivery, *, history_limit: int) -> WebhookStatus:
    """Queue a delivery; the caller has already checked the bound (see ``Settings.max_pending``)."""
    return status.model_copy(
        update={
            "pending": _queued(status.pending, pending),
            "deliveries": _with_history(status, pending.record, limit=history_limit),
        }
    )


def update_pending(status: WebhookStatus, pending: PendingDelivery, *, history_limit: int) -> WebhookStatus:
    """Replace a pending delivery (same payload_id) after an attempt that will be retried."""
    return status.model_copy(
        update={
            "pending": _queued(_without(status.pending, pending.record.payload_id), pending),
            "deliveries": _with_history(status, pending.record, limit=history_limit),
            "last_delivery": pending.record,
        }
    )


def finish(status: WebhookStatus, pending: PendingDelivery, *, history_limit: int) -> WebhookStatus:
    """Take a delivery off the queue with its final record, count it, and keep it for redelivery."""
    record = pending.record
    counters = status.counters
    if record.outcome is DeliveryOutcome.SUCCEEDED:
        counters = counters.model_copy(update={"delivered": counters.delivered + 1})
    elif record.outcome is DeliveryOutcome.FAILED:
        counters = counters.model_copy(update={"failed": counters.failed + 1})
    history = _with_history(status, record, limit=history_limit)
    kept = {r.payload_id for r in history}
    sent = (pending.notification, *(n for n in status.sent if n.payload_id != record.payload_id))
    return status.model_copy(
        update={
            "pending": _without(status.pending, record.payload_id),
            "deliveries": history,
            "sent": tuple(n for n in sent if n.payload_id in kept),
            "last_delivery": record,
            "counters": counters,
        }
    )


def set_condition(
    status: WebhookStatus,
    *,
    type_: str,
    value: Literal["True", "False", "Unknown"],
    reason: str,
    message: str,
    now: datetime.datetime,
    generation: int | None,
) -> WebhookStatus:
    """Set one condition; ``lastTransitionTime`` moves only when the status value changes."""
    old = next((c for c in status.conditions if c.type == type_), None)
    if old is not None and (old.status, old.reason, old.message, old.observed_generation) == (
        value,
        reason,
        message,
        generation,
    ):
        return status
    since = old.last_transition_time if old is not None and old.status == value else now
    new = Condition(
        type=type_,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
    others = tuple(c for c in status.conditions if c.type != type_)
    return status.model_copy(update={"conditions": tuple(sorted((*others, new), key=lambda c: c.type))})


def condition(status: WebhookStatus, type_: str) -> Condition | None:
    return next((c for c in status.conditions if c.type == type_), None)


# Deployment logs a status keeps across all the notifications it persists (pending and sent), and
# at most per notification: without a bound, 100 pending deliveries with long logs outgrow the
# ~1.5 MiB etcd accepts for an object, the status can no longer be written, and what was
# delivered is no longer recorded. Only the persisted copy is trimmed (see ``persisted``).
STATUS_LOG_BUDGET = 512 * 1024
NOTIFICATION_LOG_CAP = 16 * 1024


def log_cap(*, max_pending: int, history_limit: int) -> int:
    """Bytes of logs each persisted notification may keep, so that a status holding as many
    notifications as the bounds allow (pending, plus sent ones for redelivery) stays in budget."""
    return min(NOTIFICATION_LOG_CAP, STATUS_LOG_BUDGET // max(1, max_pending + history_limit))


def persisted(event: DeploymentEvent, cap: int) -> DeploymentEvent:
    """The notification as the status keeps it: the newest log lines that fit in ``cap`` bytes,
    after a line saying how many were left out. A delivery resumed after a restart sends this."""
    logs = event.deployment.logs
    if sum(len(line.encode()) + 1 for line in logs) <= cap:
        return event
    budget = cap - 100  # room for the marker line
    kept: list[str] = []
    for line in reversed(logs):
        size = len(line.encode()) + 1
        if size > budget:
            break
        kept.append(line)
        budget -= size
    dropped = len(logs) - len(kept)
    marker = f"[herald] {dropped} earlier log lines were not kept on the webhook's status"
    deployment = event.deployment.model_copy(update={"logs": (marker, *reversed(kept))})
    return event.model_copy(update={"deployment": deployment})


def dump_pending(pending: PendingDelivery, cap: int) -> dict[str, Any]:
    trimmed = persisted(pending.notification, cap)
    if trimmed is not pending.notification:
        pending = pending.model_copy(update={"notification": trimmed})
    return _json(pending)


def _json(value: BaseModel) -> dict[str, Any]:
    return value.model_dump(mode="json", by_alias=True, exclude_none=True)


def to_patch(
    status: WebhookStatus,
    *,
    cap: int,
    dump: Callable[[PendingDelivery, int], dict[str, Any]] = dump_pending,
) -> dict[str, Any]:
    """The status subresource's merge patch: every top-level key present, so a cleared one is nulled.

    ``cap`` bounds each persisted notification's logs (``log_cap``). ``dump`` renders each pending
    delivery under it: a caller flushing the same long queue again and again passes one that
    remembers what it rendered (pending deliveries are immutable values).
    """
    dumped = status.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"pending", "sent"})
    dumped["pending"] = [dump(p, cap) for p in status.pending]
    dumped["sent"] = [_json(persisted(n, cap)) for n in status.sent]
    return {
        (info.alias or name): dumped.get(info.alias or name)
        for name, info in WebhookStatus.model_fields.items()
    }
