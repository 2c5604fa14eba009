"""The TEAMS body: a Microsoft Teams Workflows message carrying one Adaptive Card.

Teams retired Office 365 connectors for Workflows ("When a Teams webhook request is received"),
which take ``{"type": "message", "attachments": [{"contentType":
"application/vnd.microsoft.card.adaptive", "content": <card>}]}``. The card (schema version 1.5,
the newest Teams renders) says what the SLACK message says: a header coloured by outcome (a
Container style and a TextBlock colour from the schema's enums), the facts, the message, the
services, the last log lines of a failure, and the payload id.

Every piece of user text is Markdown-escaped (a backslash before each character Markdown acts
on), so a project named ``[x](https://evil)`` is shown, not linked, and ``**`` stays two stars.
Teams refuses messages above about 28 KB: each text is clipped, lists end with "and N more", and
if a card still does not fit, the log lines, the services and the message are left out in that
order (``MAX_BODY_BYTES``). Output is deterministic.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

from herald.models import DeploymentEvent, EventType, Service
from herald.payloads.base import SERVICE_TITLES, joined

__all__ = ["CARD_CONTENT_TYPE", "CARD_VERSION", "CONTENT_TYPE", "MAX_BODY_BYTES", "check_response", "render"]

CONTENT_TYPE = "application/json"
CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
CARD_VERSION = "1.5"
SCHEMA_URL = "http://adaptivecards.io/schemas/adaptive-card.json"
MAX_BODY_BYTES = 27 * 1024  # Teams' limit is about 28 KB for the whole message
TEXT_CHARS = 2000  # one TextBlock
FACT_CHARS = 300  # one fact value: seven of them always fit, whatever their characters
NAME_CHARS = 100
LOG_LINES = 5
LOG_LINE_CHARS = 500

_ELLIPSIS = "…"
# What Adaptive Card Markdown acts on (emphasis, links, images, code, headings, quotes, autolinks):
# each gets a backslash, which CommonMark allows before any ASCII punctuation.
_MARKDOWN = re.compile(r"([\\`*_~\[\]()#<>|!])")
_TAIL_ESCAPE = re.compile(r"(?<!\\)(\\\\)*\\$")  # a clip must not leave a lone escaping backslash


class _Look(NamedTuple):
    title: str
    style: str  # Container style
    color: str  # TextBlock color


_LOOKS: Mapping[EventType, _Look] = MappingProxyType(
    {
        EventType.DEPLOYMENT_STARTED: _Look("Deployment started", "accent", "Accent"),
        EventType.DEPLOYMENT_SUCCESSFUL: _Look("Deployment successful", "good", "Good"),
        EventType.DEPLOYMENT_FAILURE: _Look("Deployment failed", "attention", "Attention"),
        EventType.DEPLOYMENT_CANCELLED: _Look("Deployment cancelled", "warning", "Warning"),
        EventType.WEBHOOK_TEST: _Look("Test notification", "emphasis", "Default"),
    }
)


def _escape(text: str) -> str:
    return _MARKDOWN.sub(r"\\\1", text)


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return _TAIL_ESCAPE.sub(lambda m: m.group(0)[:-1], text[: limit - len(_ELLIPSIS)]) + _ELLIPSIS


def _text(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": _clip(text, TEXT_CHARS), "wrap": True, **style}


def _names(services: Sequence[Service], limit: int) -> str:
    return joined([_clip(_escape(service.name), NAME_CHARS) for service in services], limit)


def _facts(event: DeploymentEvent) -> dict[str, Any]:
    deployment = event.deployment
    environment = event.environment
    pairs = (
        ("Project", _escape(event.project.name)),
        ("Environment", f"{_escape(environment.name)} in {_escape(environment.namespace)}"),
        ("Type", environment.type.value),
        ("Cluster", _escape(environment.cluster_name) if environment.cluster_name else None),
        ("Deployment", _escape(deployment.id)),
        ("Status", deployment.current_status.value),
        ("Triggered by", _escape(deployment.triggered_by) if deployment.triggered_by else None),
    )
    return {
        "type": "FactSet",
        "facts": [{"title": title, "value": _clip(value, FACT_CHARS)} for title, value in pairs if value],
    }


def _card(event: DeploymentEvent, *, message: bool, services: bool, logs: bool) -> dict[str, Any]:
    look = _LOOKS[event.event_type]
    deployment = event.deployment
    where = f"{_escape(event.project.name)} / {_escape(event.environment.name)}"
    body: list[dict[str, Any]] = [
        {
            "type": "Container",
            "style": look.style,
            "bleed": True,
            "items": [
                _text(look.title, size="Large", weight="Bolder", color=look.color),
                _text(f"{where} ({event.environment.type.value})", spacing="None", isSubtle=True),
            ],
        },
        _facts(event),
    ]
    if message and deployment.message:
        body.append(_text(f"**Message**: {_escape(deployment.message)}"))
    if services:
        for kind, title in SERVICE_TITLES:
            listed: tuple[Service, ...] = getattr(event, kind)
            if listed:
                heading = f"**{title}** ({len(listed)}): "
                body.append(_text(heading + _names(listed, TEXT_CHARS - len(heading))))
    if logs and event.event_type is EventType.DEPLOYMENT_FAILURE and deployment.logs:
        tail = [_clip(_escape(line), LOG_LINE_CHARS) for line in deployment.logs[-LOG_LINES:]]
        body.append(_text("**Last log lines**", spacing="Medium"))
        body.append(_text("\n\n".join(tail), fontType="Monospace", size="Small", spacing="None"))
    body.append(_text(f"Herald · payload {_escape(event.payload_id)}", size="Small", isSubtle=True))
    return {
        "$schema": SCHEMA_URL,
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "fallbackText": _clip(f"{look.title}: {where}", TEXT_CHARS),
        "body": body,
    }


def _message(card: dict[str, Any]) -> bytes:
    message = {
        "type": "message",
        "attachments": [{"contentType": CARD_CONTENT_TYPE, "contentUrl": None, "content": card}],
    }
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")


def render(event: DeploymentEvent) -> bytes:
    """The fullest card that fits ``MAX_BODY_BYTES``: logs go first, then services, then the message."""
    for parts in ((True, True, True), (True, True, False), (True, False, False), (False, False, False)):
        body = _message(_card(event, message=parts[0], services=parts[1], logs=parts[2]))
        if len(body) <= MAX_BODY_BYTES:
            return body
    return body  # the facts alone: seven values of FACT_CHARS, at most 4 bytes each, always fit


def check_response(status: int, body: bytes) -> str | None:
    """A Workflows trigger answers 202 and reports errors in the flow's run history, not to us."""
    return None
