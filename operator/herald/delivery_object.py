"""A delivery as the ``Delivery`` object ``kubectl`` shows: its name, labels, body and patches, and back.

One object per (webhook, event). Its name is derived from both, so storing a delivery twice (after
a restart, for an event derived again) finds the same object (409 on create), never makes a second.
A Webhook's deliveries live in its namespace, a ClusterWebhook's in Herald's own; each is owned by
its webhook, so deleting the webhook deletes its log. The notification's logs are trimmed to
``NOTIFICATION_LOG_CAP``, so one Delivery always fits in what etcd accepts for an object.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from herald.models import (
    Attempt,
    DeliveryOutcome,
    DeliveryRecord,
    DeploymentEvent,
    EventType,
    ObjectRef,
    PendingDelivery,
)

__all__ = [
    "FINISHED",
    "LABEL_ENVIRONMENT",
    "LABEL_ENVIRONMENT_NAMESPACE",
    "LABEL_EVENT",
    "LABEL_KIND",
    "LABEL_OUTCOME",
    "LABEL_WEBHOOK",
    "NOTIFICATION_LOG_CAP",
    "PLURAL",
    "REDELIVERED_ANNOTATION",
    "REDELIVER_ANNOTATION",
    "UNFINISHED",
    "Owner",
    "Stored",
    "delivery_name",
    "label_value",
    "owner_of",
    "parse_delivery",
    "parse_time",
    "record_status",
    "status_patch",
    "to_object",
    "trimmed",
]

PLURAL = "deliveries"
API_VERSION = "herald.dev/v1alpha1"
LABEL_WEBHOOK = "herald.dev/webhook"
LABEL_KIND = "herald.dev/webhook-kind"
LABEL_ENVIRONMENT = "herald.dev/environment"
LABEL_ENVIRONMENT_NAMESPACE = "herald.dev/environment-namespace"
LABEL_EVENT = "herald.dev/event"
LABEL_OUTCOME = "herald.dev/outcome"
REDELIVER_ANNOTATION = "herald.dev/redeliver"  # set by a person: send this delivery again
REDELIVERED_ANNOTATION = "herald.dev/redelivered"  # set by Herald: the redeliver value acted on
UNFINISHED = frozenset({DeliveryOutcome.PENDING, DeliveryOutcome.RETRYING})
FINISHED = frozenset({DeliveryOutcome.SUCCEEDED, DeliveryOutcome.FAILED})
# Deployment logs a stored notification keeps: a long log would otherwise make every Delivery of
# the event as large as the Environment, and one with 250 services and long logs past what etcd takes.
NOTIFICATION_LOG_CAP = 16 * 1024
_NAME_PREFIX = 40
_LABEL_MAX = 63

Kind = Literal["Webhook", "ClusterWebhook"]


@dataclass(frozen=True)
class Owner:
    """The webhook whose log a Delivery belongs to, and the namespace that log lives in."""

    kind: Kind
    ref: ObjectRef
    uid: str
    home: str  # the namespace of its Delivery objects

    @property
    def cluster(self) -> bool:
        return self.kind == "ClusterWebhook"

    def selector(self) -> str:
        """The label selector of this webhook's Delivery objects (in ``home``)."""
        return f"{LABEL_WEBHOOK}={label_value(self.ref.name)},{LABEL_KIND}={self.kind}"


def owner_of(ref: ObjectRef, *, uid: str, cluster: bool, home: str) -> Owner:
    """A webhook as the owner of its log: a Webhook's lives beside it, a ClusterWebhook's in ``home``."""
    if cluster:
        return Owner(kind="ClusterWebhook", ref=ref, uid=uid, home=home)
    return Owner(kind="Webhook", ref=ref, uid=uid, home=ref.namespace or home)


def _digest(text: str, length: int = 12) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def label_value(text: str) -> str:
    """``text`` as a label value: as it is when it fits, else a prefix and a digest of the whole."""
    if len(text) <= _LABEL_MAX:
        return text
    return f"{text[:50]}-{_digest(text)}"  # the contract's formula: valid for any object name


def delivery_name(owner: Owner, payload_id: str) -> str:
    """The object name of ``owner``'s delivery of ``payload_id``: readable, unique, at most 53 characters."""
    prefix = owner.ref.name[:_NAME_PREFIX].rstrip("-.")
    key = "/".join((owner.kind, owner.ref.namespace or "", owner.ref.name, payload_id))
    return f"{prefix}-{_digest(key)}"


def trimmed(event: DeploymentEvent, cap: int = NOTIFICATION_LOG_CAP) -> DeploymentEvent:
    """The notification as a Delivery stores it: the newest log lines that fit in ``cap`` bytes,
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
    marker = f"[herald] {len(logs) - len(kept)} earlier log lines were not kept on the Delivery"
    deployment = event.deployment.model_copy(update={"logs": (marker, *reversed(kept))})
    return event.model_copy(update={"deployment": deployment})


def _time(value: datetime.datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def record_status(record: DeliveryRecord) -> dict[str, Any]:
    """A Delivery's ``status``: every key present, so a merge patch clears what no longer applies."""
    attempted = record.attempts > 0
    return {
        "outcome": record.outcome.value,
        "attempts": record.attempts,
        "httpStatus": record.http_status,
        "error": record.error,
        "durationMs": record.duration_ms,
        "lastAttemptAt": _time(record.time) if attempted else None,
        "nextAttemptAt": _time(record.next_attempt_at) if record.outcome in UNFINISHED else None,
        "finishedAt": _time(record.time) if record.outcome in FINISHED else None,
        "attemptLog": [
            {
                k: v
                for k, v in a.model_dump(mode="json", by_alias=True).items()
                if v is not None  # the schema types httpStatus as an integer: absent, not null
            }
            for a in record.attempt_log
        ],
    }


def _labels(owner: Owner, delivery: PendingDelivery) -> dict[str, str]:
    env = delivery.notification.environment
    return {
        "app.kubernetes.io/managed-by": "herald",
        LABEL_WEBHOOK: label_value(owner.ref.name),
        LABEL_KIND: owner.kind,
        LABEL_ENVIRONMENT: label_value(env.name),
        LABEL_ENVIRONMENT_NAMESPACE: env.namespace,
        LABEL_EVENT: delivery.notification.event_type.value,
        LABEL_OUTCOME: delivery.record.outcome.value,
    }


def to_object(owner: Owner, delivery: PendingDelivery) -> dict[str, Any]:
    """The whole object to create, its outcome included (a prompt success is stored once)."""
    event = delivery.notification
    env = event.environment
    webhook: dict[str, Any] = {"kind": owner.kind, "name": owner.ref.name}
    if owner.ref.namespace:
        webhook["namespace"] = owner.ref.namespace
    status = {k: v for k, v in record_status(delivery.record).items() if v is not None}
    return {
        "apiVersion": API_VERSION,
        "kind": "Delivery",
        "metadata": {
            "name": delivery_name(owner, event.payload_id),
            "namespace": owner.home,
            "labels": _labels(owner, delivery),
            "ownerReferences": [
                {"apiVersion": API_VERSION, "kind": owner.kind, "name": owner.ref.name, "uid": owner.uid}
            ],
        },
        "spec": {
            "webhook": webhook,
            "environment": {"namespace": env.namespace, "name": env.name, "uid": env.uid},
            "deploymentId": event.deployment.id,
            "event": event.event_type.value,
            "payloadId": event.payload_id,
            "createdAt": _time(event.created_at),
            "notification": trimmed(event).model_dump(mode="json", by_alias=True, exclude_none=True),
        },
        "status": status,
    }


def status_patch(record: DeliveryRecord, *, redelivered: str | None = None) -> dict[str, Any]:
    """The merge patch that moves an existing Delivery to ``record``: its status and outcome label."""
    metadata: dict[str, Any] = {"labels": {LABEL_OUTCOME: record.outcome.value}}
    if redelivered is not None:
        metadata["annotations"] = {REDELIVERED_ANNOTATION: redelivered}
    return {"metadata": metadata, "status": record_status(record)}


@dataclass(frozen=True)
class Stored:
    """A Delivery object read back: whose it is, what it sends, where it stands."""

    name: str
    namespace: str
    owner_kind: Kind
    owner: ObjectRef
    delivery: PendingDelivery
    redeliver: str | None  # a redeliver request not yet acted on


def parse_time(value: Any) -> datetime.datetime | None:
    """An API timestamp (RFC 3339, ``Z`` or an offset) as an aware datetime; None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=datetime.UTC)


def parse_delivery(obj: Mapping[str, Any]) -> Stored | None:
    """A Delivery object as Herald resumes it; None when it cannot be read (it is then left alone)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    if not all(isinstance(x, Mapping) for x in (meta, spec, status)):
        return None
    webhook = spec.get("webhook") or {}
    kind = webhook.get("kind") if isinstance(webhook, Mapping) else None
    if kind not in ("Webhook", "ClusterWebhook") or not isinstance(webhook.get("name"), str):
        return None
    try:
        notification = DeploymentEvent.model_validate(spec.get("notification"))
        outcome = DeliveryOutcome(status.get("outcome", DeliveryOutcome.PENDING.value))
        log = tuple(Attempt.model_validate(a) for a in status.get("attemptLog") or ())
        env = notification.environment
        created = notification.created_at
        record = DeliveryRecord(
            payload_id=notification.payload_id,
            event=EventType(notification.event_type),
            environment=f"{env.namespace}/{env.name}",
            deployment_id=notification.deployment.id,
            attempts=int(status.get("attempts") or 0),
            http_status=status.get("httpStatus"),
            error=status.get("error"),
            time=parse_time(status.get("finishedAt") or status.get("lastAttemptAt")) or created,
            outcome=outcome,
            duration_ms=status.get("durationMs"),
            next_attempt_at=parse_time(status.get("nextAttemptAt")) if outcome in UNFINISHED else None,
            attempt_log=log,
        )
    except (ValidationError, ValueError, TypeError):
        return None
    annotations = meta.get("annotations") or {}
    asked = annotations.get(REDELIVER_ANNOTATION) if isinstance(annotations, Mapping) else None
    handled = annotations.get(REDELIVERED_ANNOTATION) if isinstance(annotations, Mapping) else None
    namespace = webhook.get("namespace")
    return Stored(
        name=str(meta.get("name") or ""),
        namespace=str(meta.get("namespace") or ""),
        owner_kind=kind,
        owner=ObjectRef(
            namespace=str(namespace) if kind == "Webhook" and namespace else None, name=webhook["name"]
        ),
        delivery=PendingDelivery(record=record, notification=notification),
        redeliver=str(asked) if asked and asked != handled else None,
    )
