"""Herald's STANDARD body: Qovery's webhook envelope (DESIGN.md), as compact UTF-8 JSON.

Bounded to ``MAX_BODY_BYTES`` so no receiver or proxy refuses it for size. When an event does
not fit, the oldest log lines go first (the newest explain a failure) and the payload says so
with ``logs_truncated: true`` and ``logs_omitted: <lines dropped>``; both keys appear only when
something was cut, so an ordinary body is exactly the documented envelope. If the rest alone is
still too big (a huge ``message`` or service list, which a real Environment hardly carries), the
message is cut next (``message_truncated``), then the service lists are capped
(``services_truncated``, ``services_omitted``). What remains are single names and ids: the
Environment CRD's ``maxLength`` on them is what makes the bound absolute.

Output is deterministic: fixed key order, service extras sorted by key, so the body sent after
an operator restart (from the event persisted on the webhook's status, whose maps the API server
re-serialises in its own order) is byte for byte the body sent before.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from itertools import accumulate
from typing import Any

from herald.models import DeploymentEvent, EventType, Named, Service

__all__ = ["CONTENT_TYPE", "MAX_BODY_BYTES", "check_response", "document", "encode", "render"]

CONTENT_TYPE = "application/json"
MAX_BODY_BYTES = 256 * 1024
_SERVICE_KINDS = ("applications", "databases", "containers", "jobs")
_TRUNCATION_MARK = "…"


def encode(value: Any) -> bytes:
    """Compact UTF-8 JSON, as every JSON format of Herald sends it."""
    # "replace" only matters for lone surrogates in pass-through service fields: never crash on them.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")


def _timestamp(moment: datetime.datetime) -> str:
    if moment.tzinfo is None:  # naive times are taken as UTC, Herald's only clock
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _named(named: Named) -> dict[str, Any]:
    return {"id": named.id, "name": named.name}


def _service(service: Service) -> dict[str, Any]:
    extras = service.model_extra or {}
    return {"id": service.id, "name": service.name, **{key: extras[key] for key in sorted(extras)}}


def _document(event: DeploymentEvent) -> dict[str, Any]:
    deployment = event.deployment
    environment = event.environment
    payload: dict[str, Any] = {
        "id": deployment.id,
        "current_status": deployment.current_status.value,
        "desired_status": deployment.desired_status.value if deployment.desired_status else None,
        "organization": _named(event.organization),
        "project": _named(event.project),
        "environment": {
            "id": environment.uid,
            "name": environment.name,
            "namespace": environment.namespace,
            "type": environment.type.value,
            "cluster_name": environment.cluster_name,
        },
        **{kind: [_service(s) for s in getattr(event, kind)] for kind in _SERVICE_KINDS},
        "logs": list(deployment.logs),
    }
    optional = {
        "message": deployment.message,
        "triggered_by": deployment.triggered_by,
        "started_at": deployment.started_at,
        "finished_at": deployment.finished_at,
    }
    payload.update({key: value for key, value in optional.items() if value is not None})
    return {
        "created_at": _timestamp(event.created_at),
        "event_type": event.event_type.value,
        "payload_type": "TEST" if event.event_type is EventType.WEBHOOK_TEST else "DEPLOYMENT",
        "payload_id": event.payload_id,
        "payload": payload,
    }


def _drop_oldest_logs(document: dict[str, Any]) -> None:
    """Drop the fewest oldest lines that make the body fit (all of them if nothing else does).

    Sizes are added up rather than re-encoded, so 100,000 lines cost one pass.
    """
    payload = document["payload"]
    logs: list[str] = payload["logs"]
    payload.update(logs=[], logs_truncated=True, logs_omitted=0)
    base = len(encode(document))  # no lines, a one-digit count
    total = len(logs)
    # tail[i]: bytes of the newest i lines as list items, the commas between them included
    tail = [0, *accumulate(len(encode(line)) + 1 for line in reversed(logs))]
    dropped = next(
        (k for k in range(1, total) if base + len(str(k)) - 1 + tail[total - k] - 1 <= MAX_BODY_BYTES),
        total,
    )
    payload.update(logs=logs[dropped:], logs_omitted=dropped)


def _largest_fitting(build: Callable[[int], bytes], upper: int) -> bytes:
    """The body for the largest n in [0, upper] that fits, or for 0; size must grow with n."""
    low, high = 0, upper
    while low < high:
        middle = (low + high + 1) // 2
        if len(build(middle)) <= MAX_BODY_BYTES:
            low = middle
        else:
            high = middle - 1
    return build(low)


def render(event: DeploymentEvent) -> bytes:
    return _fitted(event)[1]


def document(event: DeploymentEvent) -> dict[str, Any]:
    """The STANDARD envelope as data, already cut to fit: what CLOUDEVENTS carries as ``data`` and
    what a CUSTOM template sees."""
    return _fitted(event)[0]


def _fitted(event: DeploymentEvent) -> tuple[dict[str, Any], bytes]:
    document = _document(event)
    body = encode(document)
    payload = document["payload"]
    if len(body) > MAX_BODY_BYTES and payload["logs"]:
        _drop_oldest_logs(document)
        body = encode(document)
    message = payload.get("message")
    if len(body) > MAX_BODY_BYTES and message:

        def with_message(chars: int) -> bytes:
            payload.update(message=message[:chars] + _TRUNCATION_MARK, message_truncated=True)
            return encode(document)

        body = _largest_fitting(with_message, len(message) - 1)
    services: dict[str, list[Any]] = {kind: payload[kind] for kind in _SERVICE_KINDS}
    count = sum(len(listed) for listed in services.values())
    if len(body) > MAX_BODY_BYTES and count:

        def with_services(cap: int) -> bytes:
            payload.update({kind: listed[:cap] for kind, listed in services.items()})
            omitted = count - sum(len(payload[kind]) for kind in _SERVICE_KINDS)
            payload.update(services_truncated=True, services_omitted=omitted)
            return encode(document)

        body = _largest_fitting(with_services, max(len(listed) for listed in services.values()) - 1)
    return document, body


def check_response(status: int, body: bytes) -> str | None:
    """A STANDARD receiver's 2xx is a success, whatever it says."""
    return None
