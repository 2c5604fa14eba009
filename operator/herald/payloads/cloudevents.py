"""The CLOUDEVENTS body: a CloudEvents 1.0 event over HTTP, in structured or binary content mode.

Attributes: ``id`` is the ``payload_id`` (stable across retries and restarts, so a receiver
dedupes on ``source`` + ``id`` as the spec asks); ``type`` names the event
(``dev.herald.deployment.succeeded``...); ``source`` is the Environment's Kubernetes API path and
``subject`` its Qovery names (``project/environment``); ``time`` is when Herald saw the event;
``data`` is the STANDARD envelope, so a receiver of either kind reads the same fields.

Structured mode (the default) sends the event as one ``application/cloudevents+json`` document.
Binary mode sends ``data`` as the body and each attribute as a ``ce-`` header, percent-encoding
what a header value may not carry, as the HTTP protocol binding requires. Herald builds the event
itself (no SDK at run time: the bytes must be the same after a restart); the tests parse what it
sends with the CloudEvents Python SDK.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from herald.models import CloudEventsMode, DeploymentEvent, EventType, WebhookSpec
from herald.payloads import standard
from herald.payloads.base import Rendered

__all__ = ["SPEC_VERSION", "STRUCTURED_CONTENT_TYPE", "TYPES", "check_response", "render"]

SPEC_VERSION = "1.0"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
DATA_CONTENT_TYPE = "application/json"
TYPES: Mapping[EventType, str] = MappingProxyType(
    {
        EventType.DEPLOYMENT_STARTED: "dev.herald.deployment.started",
        EventType.DEPLOYMENT_SUCCESSFUL: "dev.herald.deployment.succeeded",
        EventType.DEPLOYMENT_FAILURE: "dev.herald.deployment.failed",
        EventType.DEPLOYMENT_CANCELLED: "dev.herald.deployment.cancelled",
        EventType.WEBHOOK_TEST: "dev.herald.webhook.test",
    }
)
_SOURCE = "/apis/herald.dev/v1alpha1/namespaces/{namespace}/environments/{name}"


def _attributes(event: DeploymentEvent, envelope: Mapping[str, Any]) -> dict[str, str]:
    environment = event.environment
    return {
        "specversion": SPEC_VERSION,
        "id": event.payload_id,
        "source": _SOURCE.format(namespace=environment.namespace, name=environment.name),
        "type": TYPES[event.event_type],
        "subject": f"{event.project.name}/{environment.name}",
        "time": envelope["created_at"],
        "datacontenttype": DATA_CONTENT_TYPE,
    }


def _header_value(text: str) -> str:
    """Percent-encode (UTF-8) space, ``"``, ``%`` and everything outside visible ASCII."""
    return "".join(
        char if "!" <= char <= "~" and char not in '"%' else "".join(f"%{b:02X}" for b in char.encode())
        for char in text
    )


def render(event: DeploymentEvent, spec: WebhookSpec) -> Rendered:
    envelope = standard.document(event)
    attributes = _attributes(event, envelope)
    mode = spec.cloud_events.mode if spec.cloud_events is not None else CloudEventsMode.STRUCTURED
    if mode is CloudEventsMode.BINARY:
        headers = tuple(
            (f"ce-{name}", _header_value(value))
            for name, value in attributes.items()
            if name != "datacontenttype"
        )
        return Rendered(body=standard.encode(envelope), content_type=DATA_CONTENT_TYPE, headers=headers)
    return Rendered(
        body=standard.encode({**attributes, "data": envelope}), content_type=STRUCTURED_CONTENT_TYPE
    )


def check_response(status: int, body: bytes) -> str | None:
    """The HTTP binding gives a 2xx no other meaning than accepted."""
    return None
