"""The SLACK body: an incoming-webhook message people read in a channel.

A top-level ``text`` is always present (it is what notifications and old clients show), and one
attachment carries the colour of the outcome and the blocks. Every piece of user text is escaped
for mrkdwn (``&``, ``<``, ``>``), so a project named ``<!channel>`` pings nobody and cannot forge
a link. Slack's limits hold by construction: at most 9 blocks (of 50), section text clipped to
3,000 characters, field text to 2,000, header text to 150, long service lists ending with
"and N more". Output is deterministic.

Slack's quirk stays here, as Flux keeps it in its Slack notifier: a 2xx answer can still carry
an error code (``invalid_payload``, ``no_text``...), which ``check_response`` turns into a failure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

from herald.models import DeploymentEvent, EventType, Service
from herald.payloads.base import SERVICE_TITLES, joined

__all__ = [
    "CONTENT_TYPE",
    "MAX_BLOCKS",
    "MAX_FIELD_CHARS",
    "MAX_HEADER_CHARS",
    "MAX_SECTION_CHARS",
    "MAX_TEXT_CHARS",
    "check_response",
    "render",
]

CONTENT_TYPE = "application/json"
# Slack's documented limits (Block Kit reference).
MAX_BLOCKS = 50
MAX_SECTION_CHARS = 3000
MAX_FIELD_CHARS = 2000
MAX_HEADER_CHARS = 150
MAX_TEXT_CHARS = 3000  # our own bound for the fallback line; Slack allows far more
LOG_LINES = 5  # the tail of the logs shown with a failure...
LOG_LINE_CHARS = 500  # ...each clipped, so the five always fit one section
NAME_CHARS = 100  # a service name in a list; Kubernetes names are 63

_ELLIPSIS = "…"
_ENTITY_TAIL = re.compile(r"&[a-z]{0,3}$")  # an entity cut in half by clipping
_SLACK_ERROR = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)+")


class _Look(NamedTuple):
    emoji: str
    title: str
    color: str


_LOOKS: Mapping[EventType, _Look] = MappingProxyType(
    {
        EventType.DEPLOYMENT_STARTED: _Look(":rocket:", "Deployment started", "#1D9BD1"),
        EventType.DEPLOYMENT_SUCCESSFUL: _Look(":white_check_mark:", "Deployment successful", "#2EB67D"),
        EventType.DEPLOYMENT_FAILURE: _Look(":x:", "Deployment failed", "#E01E5A"),
        EventType.DEPLOYMENT_CANCELLED: _Look(":no_entry_sign:", "Deployment cancelled", "#9E9E9E"),
        EventType.WEBHOOK_TEST: _Look(":test_tube:", "Test notification", "#7C3AED"),
    }
)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    """At most ``limit`` characters, marked with an ellipsis when cut, never mid-entity."""
    if len(text) <= limit:
        return text
    return _ENTITY_TAIL.sub("", text[: limit - len(_ELLIPSIS)]) + _ELLIPSIS


def _names(services: Sequence[Service], limit: int) -> str:
    return joined([f"`{_clip(_escape(service.name), NAME_CHARS)}`" for service in services], limit)


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, MAX_SECTION_CHARS)}}


def _fields(pairs: Iterable[tuple[str, str | None]]) -> dict[str, Any]:
    return {
        "type": "section",
        "fields": [
            {"type": "mrkdwn", "text": _clip(f"*{label}*\n{value}", MAX_FIELD_CHARS)}
            for label, value in pairs
            if value
        ],
    }


def _blocks(event: DeploymentEvent, look: _Look) -> list[dict[str, Any]]:
    deployment = event.deployment
    environment = event.environment
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": f"{look.emoji} {look.title}"[:MAX_HEADER_CHARS],
                "emoji": True,
            },
        },
        _fields(
            (
                ("Project", _escape(event.project.name)),
                ("Environment", f"{_escape(environment.name)} in `{_escape(environment.namespace)}`"),
                ("Type", environment.type.value),
                ("Cluster", _escape(environment.cluster_name) if environment.cluster_name else None),
                ("Deployment", f"`{_escape(deployment.id)}`"),
                ("Status", deployment.current_status.value),
                ("Triggered by", _escape(deployment.triggered_by) if deployment.triggered_by else None),
            )
        ),
    ]
    if deployment.message:
        blocks.append(_section(f"*Message*\n{_escape(deployment.message)}"))
    for kind, title in SERVICE_TITLES:
        services: tuple[Service, ...] = getattr(event, kind)
        if services:
            heading = f"*{title}* ({len(services)})\n"
            blocks.append(_section(heading + _names(services, MAX_SECTION_CHARS - len(heading))))
    if event.event_type is EventType.DEPLOYMENT_FAILURE and deployment.logs:
        tail = "\n".join(_clip(_escape(line), LOG_LINE_CHARS) for line in deployment.logs[-LOG_LINES:])
        blocks.append(_section(f"*Last log lines*\n```{tail}```"))
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": _clip(f"Herald · payload `{_escape(event.payload_id)}`", MAX_FIELD_CHARS),
                }
            ],
        }
    )
    return blocks


def render(event: DeploymentEvent) -> bytes:
    look = _LOOKS[event.event_type]
    where = f"{_escape(event.project.name)} / {_escape(event.environment.name)}"
    message = {
        "text": _clip(f"{look.emoji} {look.title}: {where} ({event.environment.type.value})", MAX_TEXT_CHARS),
        "attachments": [{"color": look.color, "blocks": _blocks(event, look)}],
    }
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")


def _error_code(value: object) -> str | None:
    if isinstance(value, str) and len(value) <= 64 and _SLACK_ERROR.fullmatch(value):
        return value
    return None


def check_response(status: int, body: bytes) -> str | None:
    """Slack's rejections that arrive with a 2xx: a bare error code, or ``{"ok": false, ...}``.

    Any other 2xx body counts as accepted: Slack-compatible receivers (Mattermost, Rocket.Chat,
    Discord's ``/slack`` endpoint) answer in their own words. Only a well-formed error code is
    quoted back, so the answer's text never reaches the status unchecked.
    """
    text = body.decode("utf-8", "replace").strip()
    code = _error_code(text)
    if code is None and text.startswith("{"):
        try:
            answer = json.loads(text)
        except (ValueError, RecursionError):
            return None
        if not isinstance(answer, dict) or answer.get("ok") is not False:
            return None
        code = _error_code(answer.get("error")) or "unknown_error"
    if code is None:
        return None
    return f"Slack rejected the message (HTTP {status}): {code}"
