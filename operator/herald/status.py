"""A webhook's status as a value: a bounded summary of its deliveries, its conditions, its counters.

Each delivery is a ``Delivery`` object of its own (``delivery_object``); the status only sums them
up (the last delivery, how many are pending and since when), so it stays under ``STATUS_BUDGET``
bytes whatever the payloads. The dispatcher owns one ``WebhookStatus`` per webhook and replaces it
through these pure functions; what it patches is ``to_patch`` of that value. A Herald 0.1 status
carried its queue (``pending``, ``sent``, ``deliveries``): ``legacy_deliveries`` reads them once so
they become Delivery objects, and ``to_patch`` clears them.
"""

from __future__ import annotations

import datetime
import enum
import hashlib
import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from herald.models import (
    Condition,
    DeliveryOutcome,
    DeliveryRecord,
    DeploymentEvent,
    EventType,
    ObjectRef,
    PendingDelivery,
    WebhookSpec,
    first_error,
)
from herald.payloads import custom

__all__ = [
    "ENABLE_ANNOTATION",
    "LEGACY_FIELDS",
    "MESSAGE_LIMIT",
    "PING_ANNOTATION",
    "REDELIVER_ANNOTATION",
    "STATUS_BUDGET",
    "Counters",
    "LastDelivery",
    "Pause",
    "PauseReason",
    "WebhookStatus",
    "WebhookView",
    "condition",
    "handled_token",
    "last_delivery",
    "legacy_deliveries",
    "parse_status",
    "parse_webhook",
    "set_condition",
    "to_patch",
]

PING_ANNOTATION = "herald.dev/ping"
REDELIVER_ANNOTATION = "herald.dev/redeliver"
ENABLE_ANNOTATION = "herald.dev/enable"
# What a status may weigh, whatever the payloads and errors (a test holds every status to it).
STATUS_BUDGET = 8 * 1024
MESSAGE_LIMIT = 1024  # bytes of JSON a condition message or an error takes on the status
_TOKEN_LIMIT = 128  # an annotation value taking more is remembered by its digest
# Herald 0.1 kept its queue on the status; read once for migration, then cleared.
LEGACY_FIELDS = ("pending", "sent", "deliveries")


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
    deferred: int = 0  # events held back at the backlog bound, derived again later


class LastDelivery(_Model):
    name: str  # the Delivery object
    payload_id: str
    event: EventType
    environment: str  # namespace/name
    outcome: DeliveryOutcome
    attempts: int = 0
    http_status: int | None = None
    error: str | None = None
    time: datetime.datetime


class WebhookStatus(_Model):
    observed_generation: int | None = None
    conditions: tuple[Condition, ...] = ()
    last_delivery: LastDelivery | None = None
    counters: Counters = Field(default_factory=Counters)
    pending_deliveries: int = 0
    oldest_pending_at: datetime.datetime | None = None
    consecutive_failures: int = 0
    failing_since: datetime.datetime | None = None  # first failed attempt since the last success
    pause: Pause | None = None
    handled_ping: str | None = None
    handled_redeliver: str | None = None
    handled_enable: str | None = None


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
    fields: dict[str, Any] = {}
    for name, info in WebhookStatus.model_fields.items():
        alias = info.alias or name
        if alias not in raw:
            continue
        try:  # field by field, so one garbled value loses only itself
            WebhookStatus.model_validate({alias: raw[alias]})
        except ValidationError:
            if name == "conditions" and isinstance(raw[alias], list):
                fields[alias] = [c for c in raw[alias] if _valid(Condition, c)]
            continue
        fields[alias] = raw[alias]
    return WebhookStatus.model_validate(fields)


def _valid(model: type[BaseModel], value: Any) -> bool:
    try:
        model.model_validate(value)
    except ValidationError:
        return False
    return True


def legacy_deliveries(raw: Any) -> tuple[PendingDelivery, ...]:
    """The deliveries a Herald 0.1 status held: its pending queue, and the finished ones whose
    notification it kept (``sent``, matched with their ``deliveries`` records). Unreadable items
    are skipped; nothing else of a 0.1 status describes a delivery that could be sent again."""
    if not isinstance(raw, Mapping):
        return ()
    found: dict[str, PendingDelivery] = {}
    records: dict[str, DeliveryRecord] = {}
    for item in _items(raw, "deliveries"):
        try:
            record = DeliveryRecord.model_validate(item)
        except ValidationError:
            continue
        records.setdefault(record.payload_id, record)
    for item in _items(raw, "sent"):
        try:
            event = DeploymentEvent.model_validate(item)
        except ValidationError:
            continue
        kept = records.get(event.payload_id)
        if kept is not None and kept.outcome not in (DeliveryOutcome.PENDING, DeliveryOutcome.RETRYING):
            found[event.payload_id] = PendingDelivery(record=kept, notification=event)
    for item in _items(raw, "pending"):
        try:
            pending = PendingDelivery.model_validate(item)
        except ValidationError:
            continue
        found[pending.record.payload_id] = pending  # pending wins: it still has to be sent
    return tuple(found.values())


def _items(raw: Mapping[str, Any], key: str) -> list[Any]:
    """A legacy array; anything else that got into the status (a schema-less cluster) holds nothing."""
    value = raw.get(key)
    return value if isinstance(value, list) else []


def handled_token(value: str) -> str:
    """How the status remembers an annotation value it acted on: as it is, or by its digest."""
    if _json_size(value) <= _TOKEN_LIMIT:
        return value
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()


def _json_size(text: str) -> int:
    """Bytes ``text`` takes in JSON escaped to ASCII: the most any encoder writes (a character
    counts up to 12, a control character 6), so a bound on it holds however the status is sent."""
    return len(json.dumps(text)) - 2


def _clip(text: str) -> str:
    """``text`` cut to at most ``MESSAGE_LIMIT`` bytes of JSON, so the status stays in its budget."""
    if _json_size(text) <= MESSAGE_LIMIT:  # nearly always: one encoding, no walk
        return text
    size = 0
    for end, char in enumerate(text[:MESSAGE_LIMIT]):
        size += _json_size(char)
        if size > MESSAGE_LIMIT:
            return text[:end]
    return text[:MESSAGE_LIMIT]


def last_delivery(name: str, record: DeliveryRecord) -> LastDelivery:
    return LastDelivery(
        name=name,
        payload_id=record.payload_id,
        event=record.event,
        environment=record.environment,
        outcome=record.outcome,
        attempts=record.attempts,
        http_status=record.http_status,
        error=None if record.error is None else _clip(record.error),
        time=record.time,
    )


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
    message = _clip(message)
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


def to_patch(status: WebhookStatus) -> dict[str, Any]:
    """The status subresource's merge patch: every key present, so a cleared one is nulled (and
    a Herald 0.1 queue, once migrated, with them)."""
    dumped = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    patch: dict[str, Any] = {
        (info.alias or name): dumped.get(info.alias or name)
        for name, info in WebhookStatus.model_fields.items()
    }
    return patch | dict.fromkeys(LEGACY_FIELDS)
