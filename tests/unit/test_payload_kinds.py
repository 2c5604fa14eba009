"""CUSTOM, CLOUDEVENTS and TEAMS, checked with the receivers' own tools where they exist.

- CLOUDEVENTS: what Herald sends in both content modes is parsed by the CloudEvents Python SDK
  (``cloudevents`` on PyPI), as a receiver built on it would.
- TEAMS: no Python package ships the Adaptive Card schema, and the published schema
  (adaptivecards.io/schemas/1.5.0/adaptive-card.json, in microsoft/AdaptiveCards at
  schemas/1.5.0/adaptive-card.json) is not vendored here. ``CARD_SCHEMA`` below restates, for the
  elements Herald uses (AdaptiveCard, Container, TextBlock, FactSet, Fact), that schema's rules:
  the required properties, ``additionalProperties: false`` with the property names it lists, and
  its enums (case-insensitive, as its patterns make them). It is a justified subset, not the schema.
- CUSTOM: the sandbox, strict undefined names, errors with their line, the size cap, headers.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from cloudevents.core.bindings import http as ce_http
from hypothesis import given, settings
from hypothesis import strategies as st

from herald.models import DeploymentEvent, EventType, WebhookKind, WebhookSpec
from herald.payloads import RenderError, cloudevents, custom, format_for, sample, standard, teams
from tests.unit.test_payloads import events, failure, ping, spec_of, successful

# ---------------------------------------------------------------- CLOUDEVENTS


def cloud_event(event: DeploymentEvent, mode: str) -> Any:
    rendered = format_for(WebhookKind.CLOUDEVENTS).render(
        event, spec_of(WebhookKind.CLOUDEVENTS, cloudEvents={"mode": mode})
    )
    headers = {"content-type": rendered.content_type, **dict(rendered.headers)}
    return ce_http.from_http_event(ce_http.HTTPMessage(headers=headers, body=rendered.body))


@pytest.mark.parametrize("mode", ["structured", "binary"])
@pytest.mark.parametrize(
    ("build", "type_"),
    [
        (successful, "dev.herald.deployment.succeeded"),
        (failure, "dev.herald.deployment.failed"),
        (ping, "dev.herald.webhook.test"),
    ],
)
def test_the_sdk_reads_both_modes(mode: str, build: Any, type_: str) -> None:
    event = build()
    parsed = cloud_event(event, mode)
    assert parsed.get_id() == event.payload_id
    assert parsed.get_type() == type_
    assert parsed.get_specversion() == "1.0"
    env = event.environment
    assert (
        parsed.get_source() == f"/apis/herald.dev/v1alpha1/namespaces/{env.namespace}/environments/{env.name}"
    )
    assert parsed.get_subject() == f"{event.project.name}/{env.name}"
    assert parsed.get_time().isoformat() == event.created_at.isoformat()
    assert parsed.get_data() == json.loads(standard.render(event))


def test_every_event_type_has_a_cloudevents_type() -> None:
    assert set(cloudevents.TYPES) == set(EventType)
    assert len(set(cloudevents.TYPES.values())) == len(EventType)


def test_modes_differ_only_in_where_the_attributes_go() -> None:
    spec = spec_of(WebhookKind.CLOUDEVENTS)
    structured = format_for(WebhookKind.CLOUDEVENTS).render(successful(), spec)
    assert structured.content_type == cloudevents.STRUCTURED_CONTENT_TYPE
    assert structured.headers == ()
    binary = format_for(WebhookKind.CLOUDEVENTS).render(
        successful(), spec_of(WebhookKind.CLOUDEVENTS, cloudEvents={"mode": "binary"})
    )
    assert binary.content_type == "application/json"
    assert binary.body == standard.render(successful())
    attributes = json.loads(structured.body)
    assert {name.removeprefix("ce-") for name, _ in binary.headers} == set(attributes) - {
        "data",
        "datacontenttype",
    }


def test_binary_headers_percent_encode_what_a_header_cannot_carry() -> None:
    event = successful()
    odd = event.model_copy(update={"project": event.project.model_copy(update={"name": 'Café "100%" shop'})})
    rendered = format_for(WebhookKind.CLOUDEVENTS).render(
        odd, spec_of(WebhookKind.CLOUDEVENTS, cloudEvents={"mode": "binary"})
    )
    subject = dict(rendered.headers)["ce-subject"]
    assert subject == "Caf%C3%A9%20%22100%25%22%20shop/shop-prod"
    assert all("!" <= c <= "~" for _, value in rendered.headers for c in value)
    parsed = ce_http.from_http_event(
        ce_http.HTTPMessage(
            headers={"content-type": "application/json", **dict(rendered.headers)}, body=rendered.body
        )
    )
    assert parsed.get_subject() == 'Café "100%" shop/shop-prod'


# ---------------------------------------------------------------- TEAMS

_COMMON = {"spacing", "separator", "id", "isVisible", "height", "fallback", "requires"}


def _one_of(*values: str) -> dict[str, Any]:
    return {"type": "string", "pattern": f"(?i)^({'|'.join(values)})$"}


def _element(type_: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    props = {"type": {"enum": [type_]}, **{name: {} for name in _COMMON}, **properties}
    props["spacing"] = _one_of("default", "none", "small", "medium", "large", "extraLarge", "padding")
    return {
        "type": "object",
        "required": ["type", *required],
        "properties": props,
        "additionalProperties": False,
    }


_COLORS = _one_of("default", "dark", "light", "accent", "good", "warning", "attention")
_CONTAINER_STYLES = ("default", "emphasis", "good", "attention", "warning", "accent")
CARD_SCHEMA: dict[str, Any] = {
    "$defs": {
        "element": {
            "oneOf": [
                {"$ref": "#/$defs/TextBlock"},
                {"$ref": "#/$defs/FactSet"},
                {"$ref": "#/$defs/Container"},
            ]
        },
        "TextBlock": _element(
            "TextBlock",
            {
                "text": {"type": "string"},
                "color": _COLORS,
                "fontType": _one_of("default", "monospace"),
                "horizontalAlignment": _one_of("left", "center", "right"),
                "isSubtle": {"type": "boolean"},
                "maxLines": {"type": "number"},
                "size": _one_of("default", "small", "medium", "large", "extraLarge"),
                "weight": _one_of("default", "lighter", "bolder"),
                "wrap": {"type": "boolean"},
                "style": _one_of("default", "heading"),
            },
            ["text"],
        ),
        "FactSet": _element(
            "FactSet",
            {
                "facts": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["title", "value"],
                        "properties": {"title": {"type": "string"}, "value": {"type": "string"}},
                        "additionalProperties": False,
                    },
                }
            },
            ["facts"],
        ),
        "Container": _element(
            "Container",
            {
                "items": {"type": "array", "items": {"$ref": "#/$defs/element"}},
                "style": _one_of(*_CONTAINER_STYLES),
                "bleed": {"type": "boolean"},
                "minHeight": {"type": "string"},
                "verticalContentAlignment": _one_of("top", "center", "bottom"),
                "rtl": {"type": ["boolean", "null"]},
                "selectAction": {},
                "backgroundImage": {},
            },
            ["items"],
        ),
    },
    "type": "object",
    "required": ["type", "version"],
    "properties": {
        "type": {"enum": ["AdaptiveCard"]},
        "version": {"type": "string"},
        "$schema": {"type": "string"},
        "body": {"type": "array", "items": {"$ref": "#/$defs/element"}},
        "fallbackText": {"type": "string"},
        "speak": {"type": "string"},
        "lang": {"type": "string"},
        "minHeight": {"type": "string"},
        "rtl": {"type": ["boolean", "null"]},
        "actions": {"type": "array"},
        "selectAction": {},
        "backgroundImage": {},
        "verticalContentAlignment": {},
        "refresh": {},
        "authentication": {},
    },
    "additionalProperties": False,
}
CARD = jsonschema.Draft202012Validator(CARD_SCHEMA)


def card_of(event: DeploymentEvent) -> tuple[bytes, dict[str, Any]]:
    body = teams.render(event)
    message = json.loads(body)
    assert message["type"] == "message"
    [attachment] = message["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    return body, attachment["content"]


def texts(card: Any) -> list[str]:
    if isinstance(card, dict):
        found = [card[k] for k in ("text", "value", "fallbackText") if isinstance(card.get(k), str)]
        return found + [t for v in card.values() for t in texts(v)]
    if isinstance(card, list):
        return [t for v in card for t in texts(v)]
    return []


@pytest.mark.parametrize("build", [successful, failure, ping])
def test_cards_follow_the_adaptive_card_schema(build: Any) -> None:
    _, card = card_of(build())
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in CARD.iter_errors(card)]
    assert errors == []
    assert card["version"] == teams.CARD_VERSION


def test_the_subset_schema_can_fail() -> None:
    _, card = card_of(successful())
    card["body"][0]["style"] = "purple"
    card["body"].append({"type": "TextBlock"})
    assert len(list(CARD.iter_errors(card))) == 2


@pytest.mark.parametrize(
    ("event_type", "style"),
    [
        (EventType.DEPLOYMENT_STARTED, "accent"),
        (EventType.DEPLOYMENT_SUCCESSFUL, "good"),
        (EventType.DEPLOYMENT_FAILURE, "attention"),
        (EventType.DEPLOYMENT_CANCELLED, "warning"),
    ],
)
def test_cards_are_coloured_by_outcome(event_type: EventType, style: str) -> None:
    _, card = card_of(sample.sample_event(event_type))
    assert card["body"][0]["style"] == style


def test_user_text_is_shown_not_interpreted() -> None:
    event = successful()
    hostile = "[click](https://evil.example) **bold** <at>all</at> `x` # _y_"
    event = event.model_copy(
        update={
            "project": event.project.model_copy(update={"name": hostile}),
            "deployment": event.deployment.model_copy(update={"message": hostile, "triggered_by": hostile}),
        }
    )
    _, card = card_of(event)
    shown = [t for t in texts(card) if "click" in t]
    assert len(shown) >= 4
    for text in shown:
        assert "[click]" not in text
        assert "](" not in text
        assert "**bold**" not in text
        assert "<at>" not in text
        assert r"\[click\]\(https://evil.example\) \*\*bold\*\* \<at\>all\</at\> \`x\` \# \_y\_" in text


def test_a_huge_event_still_fits_teams_limit() -> None:
    event = failure()
    long = "é" * 100_000
    services = tuple(
        s.model_copy(update={"name": f"svc-{i}-{long[:60]}"})
        for i in range(500)
        for s in event.applications[:1]
    )
    event = event.model_copy(
        update={
            "applications": services,
            "deployment": event.deployment.model_copy(update={"message": long, "logs": (long,) * 50}),
        }
    )
    body, card = card_of(event)
    assert len(body) <= teams.MAX_BODY_BYTES
    assert list(CARD.iter_errors(card)) == []
    assert any("and " in t and " more" in t for t in texts(card))


@settings(max_examples=100, deadline=None)
@given(events())
def test_any_event_gives_a_valid_card_within_the_limit(event: DeploymentEvent) -> None:
    body, card = card_of(event)
    assert len(body) <= teams.MAX_BODY_BYTES
    assert list(CARD.iter_errors(card)) == []
    assert all(not t.endswith("\\") or t.endswith("\\\\") for t in texts(card))


# ---------------------------------------------------------------- CUSTOM


def custom_spec(body: str, **template: Any) -> WebhookSpec:
    return spec_of(WebhookKind.CUSTOM, template={"body": body, **template})


def test_the_template_sees_the_standard_envelope() -> None:
    body = "{{ standard | tojson }}"
    for build in (successful, failure, ping):
        event = build()
        rendered = custom.render(event, custom_spec(body))
        assert json.loads(rendered.body) == json.loads(standard.render(event))


def test_variables_are_the_envelope_keys() -> None:
    body = (
        '{"e": {{ event_type | tojson }}, "p": {{ payload.project.name | tojson }}, '
        '"id": {{ payload_id | tojson }}, "t": {{ payload_type | tojson }}, "c": {{ created_at | tojson }}}'
    )
    event = successful()
    assert json.loads(custom.render(event, custom_spec(body)).body) == {
        "e": "DEPLOYMENT_SUCCESSFUL",
        "p": "Shop",
        "id": event.payload_id,
        "t": "DEPLOYMENT",
        "c": "2026-01-01T12:00:00Z",
    }


def test_content_type_and_headers_are_sent_as_written() -> None:
    spec = custom_spec(
        "event={{ event_type }}", contentType="text/plain; charset=utf-8", headers={"X-Team": "shop"}
    )
    rendered = format_for(WebhookKind.CUSTOM).render(successful(), spec)
    assert rendered.body == b"event=DEPLOYMENT_SUCCESSFUL"
    assert rendered.content_type == "text/plain; charset=utf-8"
    assert rendered.headers == (("X-Team", "shop"),)


TEMPLATE_ERRORS = [
    ("syntax", '{"a": 1}\n{% if %}', "line 2: Expected an expression"),
    ("undefined name", "{{ nothing }}", "line 1: 'nothing' is undefined"),
    (
        "undefined key",
        '{\n"a": {{ payload.nope | tojson }}\n}',
        "line 2: 'dict object' has no attribute 'nope'",
    ),
    ("optional key read bare", "{{ payload.message | tojson }}", "on the bare sample"),
    ("sandbox", "{{ ().__class__.__bases__ }}", "unsafe"),
    ("runtime", '{"x": {{ 1 / 0 }}}', "line 1: division by zero"),
    ("not json", "event {{ event_type }}", "the body is not JSON, as contentType says"),
    ("too big", "{% for i in range(100000) %}{{ standard | tojson }}{% endfor %}", "larger than 256 KiB"),
]


@pytest.mark.parametrize(("case", "body", "expected"), TEMPLATE_ERRORS, ids=[c[0] for c in TEMPLATE_ERRORS])
def test_template_errors_name_the_line_and_the_reason(case: str, body: str, expected: str) -> None:
    error = custom.template_error(custom_spec(body))
    assert error is not None
    assert error.startswith("spec.template.body: ")
    assert expected in error


def test_a_template_that_handles_optional_keys_is_accepted() -> None:
    body = '{"m": {{ payload.message | default("") | tojson }}, "e": {{ event_type | tojson }}}'
    assert custom.template_error(custom_spec(body)) is None
    assert custom.template_error(custom_spec("plain {{ event_type }}", contentType="text/plain")) is None


def test_only_custom_webhooks_have_a_template_to_check() -> None:
    assert custom.template_error(spec_of(WebhookKind.STANDARD)) is None


def test_a_failure_on_a_real_event_is_a_render_error() -> None:
    spec = custom_spec(
        '{"m": {{ payload.message | default("") | tojson }}'
        '{% if payload.id == "dep-43" %}{{ boom }}{% endif %}}'
    )
    assert custom.template_error(spec) is None  # the samples pass...
    with pytest.raises(RenderError, match="'boom' is undefined"):
        custom.render(failure(), spec)  # ...this event does not


@given(st.text(max_size=200))
def test_any_text_in_a_template_gives_a_verdict_not_a_crash(body: str) -> None:
    if not body:
        return
    error = custom.template_error(custom_spec(body, contentType="text/plain"))
    assert error is None or error.startswith("spec.template.body: ")
