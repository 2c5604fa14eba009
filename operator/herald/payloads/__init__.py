"""One payload format per webhook ``kind``, chosen from a table keyed by the CRD's enum values.

As in Flux's notifier factory, the table is the only place that knows which kinds exist, so
API and code cannot drift (a test checks one entry per ``WebhookKind``), and an unknown kind
is an explicit error. Each format owns its quirks, including what a 2xx answer can still mean:
Slack answers some rejections with a 2xx and an error code, a STANDARD receiver never does.
Formats are pure: event in, bytes out, the same bytes for the same event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from herald.models import DeploymentEvent, WebhookKind
from herald.payloads import slack, standard

__all__ = ["FORMATS", "Format", "UnknownKind", "format_for"]


@dataclass(frozen=True)
class Format:
    """How to send an event to one kind of receiver."""

    render: Callable[[DeploymentEvent], bytes]
    content_type: str
    # (HTTP status, start of the body) of a 2xx answer -> why it is a failure after all, or None.
    check_response: Callable[[int, bytes], str | None]


class UnknownKind(LookupError):
    """A webhook kind no format is registered for."""


FORMATS: Mapping[WebhookKind, Format] = MappingProxyType(
    {
        WebhookKind.STANDARD: Format(
            render=standard.render, content_type=standard.CONTENT_TYPE, check_response=standard.check_response
        ),
        WebhookKind.SLACK: Format(
            render=slack.render, content_type=slack.CONTENT_TYPE, check_response=slack.check_response
        ),
    }
)


def format_for(kind: WebhookKind) -> Format:
    try:
        return FORMATS[kind]
    except KeyError:
        raise UnknownKind(f"no payload format for webhook kind {str(kind)[:64]!r}") from None
