"""One payload format per webhook ``kind``, chosen from a table keyed by the CRD's enum values.

As in Flux's notifier factory, the table is the only place that knows which kinds exist, so
API and code cannot drift (a test checks one entry per ``WebhookKind``), and an unknown kind
is an explicit error. Every format has one shape: event and webhook spec in, ``Rendered`` out
(body, content type, extra headers); the fixed kinds (STANDARD, SLACK, TEAMS) ignore the spec,
CUSTOM renders its template and CLOUDEVENTS picks its content mode from it. Each format owns its
quirks, including what a 2xx answer can still mean: Slack answers some rejections with a 2xx and
an error code, the others never do. Formats are pure: the same bytes for the same event; only
CUSTOM may raise (``RenderError``), when a template fails on an event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from herald.models import DeploymentEvent, WebhookKind, WebhookSpec
from herald.payloads import cloudevents, custom, slack, standard, teams
from herald.payloads.base import Rendered, RenderError

__all__ = ["FORMATS", "Format", "RenderError", "Rendered", "UnknownKind", "format_for"]


@dataclass(frozen=True)
class Format:
    """How to send an event to one kind of receiver."""

    render: Callable[[DeploymentEvent, WebhookSpec], Rendered]
    # (HTTP status, start of the body) of a 2xx answer -> why it is a failure after all, or None.
    check_response: Callable[[int, bytes], str | None]


class UnknownKind(LookupError):
    """A webhook kind no format is registered for."""


def _fixed(
    render: Callable[[DeploymentEvent], bytes], content_type: str
) -> Callable[[DeploymentEvent, WebhookSpec], Rendered]:
    """A kind with no per-webhook options: its body depends on the event alone."""

    def rendered(event: DeploymentEvent, spec: WebhookSpec) -> Rendered:
        return Rendered(body=render(event), content_type=content_type)

    return rendered


FORMATS: Mapping[WebhookKind, Format] = MappingProxyType(
    {
        WebhookKind.STANDARD: Format(
            render=_fixed(standard.render, standard.CONTENT_TYPE), check_response=standard.check_response
        ),
        WebhookKind.SLACK: Format(
            render=_fixed(slack.render, slack.CONTENT_TYPE), check_response=slack.check_response
        ),
        WebhookKind.CUSTOM: Format(render=custom.render, check_response=custom.check_response),
        WebhookKind.CLOUDEVENTS: Format(render=cloudevents.render, check_response=cloudevents.check_response),
        WebhookKind.TEAMS: Format(
            render=_fixed(teams.render, teams.CONTENT_TYPE), check_response=teams.check_response
        ),
    }
)


def format_for(kind: WebhookKind) -> Format:
    try:
        return FORMATS[kind]
    except KeyError:
        raise UnknownKind(f"no payload format for webhook kind {str(kind)[:64]!r}") from None
