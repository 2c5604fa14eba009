"""herald.payloads: the format table, the STANDARD envelope and the SLACK message (the newer kinds:
test_payload_kinds.py).

The golden files in ``golden/`` were written once from the events below and reviewed by hand;
the tests compare parsed JSON, so a change of either format shows up as a reviewed diff.
"""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herald.events import build_event, parse_environment, ping_event
from herald.models import (
    DeploymentEvent,
    DeploymentState,
    EnvironmentType,
    EventType,
    ObjectRef,
    WebhookKind,
    WebhookSpec,
)
from herald.payloads import FORMATS, Format, UnknownKind, format_for, slack, standard

GOLDEN = Path(__file__).parent / "golden"
NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
MAX = standard.MAX_BODY_BYTES


def environment(deployment: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"uid": "8d1c3d3e-0d55-4a44-9c5e-2f0f0c1a7b10", "name": "shop-prod", "namespace": "shop"},
        "spec": {
            "organization": {"id": "org-1", "name": "Acme"},
            "project": {"id": "proj-1", "name": "Shop"},
            "type": "PRODUCTION",
            "clusterName": "eu-west-1",
            "applications": [
                {
                    "id": "app-1",
                    "name": "api",
                    "gitRepository": {"url": "https://git.example/shop/api"},
                    "commitId": "4f2a9c1",
                },
                {"id": "app-2", "name": "web"},
            ],
            "databases": [{"id": "db-1", "name": "postgres", "version": "16"}],
            "containers": [{"name": "worker", "image": "registry.example/shop/worker:1.4.2"}],
            "jobs": [{"id": "job-1", "name": "migrate", "schedule": {"onStart": True}}],
            **spec,
        },
        "status": {"deployment": deployment},
    }


def event_of(
    body: dict[str, Any], event_type: EventType, created_at: datetime.datetime = NOW
) -> DeploymentEvent:
    ref, spec, deployment = parse_environment(body)
    if deployment is None:
        raise ValueError("test body without a deployment")
    return build_event(
        event_type=event_type, environment=ref, spec=spec, deployment=deployment, created_at=created_at
    )


def successful() -> DeploymentEvent:
    deployment = {
        "id": "dep-42",
        "currentStatus": "DEPLOYED",
        "desiredStatus": "DEPLOYED",
        "message": "Deployed 4f2a9c1 in 42s",
        "triggeredBy": "alice@example.com",
        "startedAt": "2026-01-01T11:59:18Z",
        "finishedAt": "2026-01-01T12:00:00Z",
    }
    return event_of(environment(deployment), EventType.DEPLOYMENT_SUCCESSFUL)


def failure() -> DeploymentEvent:
    deployment = {
        "id": "dep-43",
        "currentStatus": "DEPLOYMENT_ERROR",
        "desiredStatus": "DEPLOYED",
        "message": "Container api exited: OOMKilled",
        "triggeredBy": "bob@example.com",
        "logs": [
            "12:00:01 pulling registry.example/shop/api:4f2a9c1",
            "12:00:07 starting api (2 replicas)",
            "12:00:19 api-7d9c: OOMKilled (limit 256Mi)",
            "12:00:20 rollout failed: 0/2 replicas ready",
        ],
    }
    return event_of(environment(deployment), EventType.DEPLOYMENT_FAILURE)


def ping() -> DeploymentEvent:
    return ping_event(webhook=ObjectRef(namespace="shop", name="receiver"), nonce="1", created_at=NOW)


def spec_of(kind: WebhookKind, **fields: Any) -> WebhookSpec:
    """A webhook of ``kind`` (a CUSTOM one sends the STANDARD envelope and a one-line summary)."""
    template = {
        "body": '{"summary": {{ (event_type ~ " " ~ payload.project.name) | tojson }}, '
        '"standard": {{ standard | tojson }}}',
        "headers": {"X-Herald-Kind": "custom"},
    }
    defaults: dict[str, Any] = {"template": template} if kind is WebhookKind.CUSTOM else {}
    return WebhookSpec.model_validate(
        {
            "kind": kind.value,
            "url": "https://receiver.example/hooks",
            "events": ["DEPLOYMENT_STARTED"],
            **defaults,
            **fields,
        }
    )


def body_of(kind: WebhookKind, event: DeploymentEvent) -> bytes:
    return format_for(kind).render(event, spec_of(kind)).body


GOLDEN_CASES = {
    "standard_successful": (WebhookKind.STANDARD, successful),
    "standard_failure": (WebhookKind.STANDARD, failure),
    "standard_test": (WebhookKind.STANDARD, ping),
    "slack_successful": (WebhookKind.SLACK, successful),
    "slack_failure": (WebhookKind.SLACK, failure),
    "custom_failure": (WebhookKind.CUSTOM, failure),
    "cloudevents_successful": (WebhookKind.CLOUDEVENTS, successful),
    "teams_successful": (WebhookKind.TEAMS, successful),
    "teams_failure": (WebhookKind.TEAMS, failure),
    "teams_test": (WebhookKind.TEAMS, ping),
}


# ---------------------------------------------------------------- the table


def test_one_format_per_kind() -> None:
    assert set(FORMATS) == set(WebhookKind)
    for kind in WebhookKind:
        assert isinstance(format_for(kind), Format)
        assert format_for(kind).render(successful(), spec_of(kind)).content_type.startswith("application/")


def test_format_for_an_unknown_kind() -> None:
    with pytest.raises(UnknownKind, match="DISCORD"):
        format_for("DISCORD")  # type: ignore[arg-type]


def test_formats_accept_the_kind_as_plain_text() -> None:
    assert format_for("SLACK") is FORMATS[WebhookKind.SLACK]  # type: ignore[arg-type]


# ---------------------------------------------------------------- golden bodies


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_golden(name: str) -> None:
    kind, build = GOLDEN_CASES[name]
    body = body_of(kind, build())
    assert json.loads(body) == json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_rendering_is_deterministic(name: str) -> None:
    kind, build = GOLDEN_CASES[name]
    assert body_of(kind, build()) == body_of(kind, build())


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_rendering_survives_persistence(name: str) -> None:
    # A pending delivery is resumed from the event persisted on the webhook's status, whose maps
    # come back in the API server's order: the body must not change.
    kind, build = GOLDEN_CASES[name]
    event = build()
    dumped = json.loads(event.model_dump_json(by_alias=True))
    for kind_name in ("applications", "databases", "containers", "jobs"):
        dumped[kind_name] = [dict(reversed(service.items())) for service in dumped[kind_name]]
    resumed = DeploymentEvent.model_validate(dumped)
    assert body_of(kind, resumed) == body_of(kind, event)


# ---------------------------------------------------------------- STANDARD


def test_standard_is_compact_utf8() -> None:
    body = standard.render(
        event_of(
            environment({"id": "d", "currentStatus": "QUEUED"}, project={"name": "Café ☕"}),
            EventType.DEPLOYMENT_STARTED,
        )
    )
    assert "Café ☕".encode() in body
    assert b": " not in body
    assert b", " not in body


@pytest.mark.parametrize(
    ("created_at", "expected"),
    [
        pytest.param(NOW, "2026-01-01T12:00:00Z", id="utc"),
        pytest.param(
            datetime.datetime(2026, 1, 1, 12, 0, 0, 999_999, tzinfo=datetime.UTC),
            "2026-01-01T12:00:00Z",
            id="micro",
        ),
        pytest.param(
            datetime.datetime(2026, 1, 1, 13, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=1))),
            "2026-01-01T12:00:00Z",
            id="offset",
        ),
        pytest.param(datetime.datetime(2026, 1, 1, 12, 0), "2026-01-01T12:00:00Z", id="naive-is-utc"),
    ],
)
def test_standard_created_at(created_at: datetime.datetime, expected: str) -> None:
    body = json.loads(
        standard.render(
            event_of(
                environment({"id": "d", "currentStatus": "QUEUED"}), EventType.DEPLOYMENT_STARTED, created_at
            )
        )
    )
    assert body["created_at"] == expected


def test_standard_leaves_out_what_is_absent() -> None:
    bare = environment({"id": "d", "currentStatus": "QUEUED"})
    bare["spec"] = {"organization": {"name": "Acme"}, "project": {"name": "Shop"}, "type": "STAGING"}
    payload = json.loads(standard.render(event_of(bare, EventType.DEPLOYMENT_STARTED)))["payload"]
    assert payload == {
        "id": "d",
        "current_status": "QUEUED",
        "desired_status": None,
        "organization": {"id": None, "name": "Acme"},
        "project": {"id": None, "name": "Shop"},
        "environment": {
            "id": "8d1c3d3e-0d55-4a44-9c5e-2f0f0c1a7b10",
            "name": "shop-prod",
            "namespace": "shop",
            "type": "STAGING",
            "cluster_name": None,
        },
        "applications": [],
        "databases": [],
        "containers": [],
        "jobs": [],
        "logs": [],
    }


def long_logs(count: int, line: str) -> DeploymentEvent:
    logs = [f"{number:06d} {line}" for number in range(count)]
    return event_of(
        environment({"id": "d", "currentStatus": "BUILD_ERROR", "logs": logs}), EventType.DEPLOYMENT_FAILURE
    )


@pytest.mark.parametrize("line", ["step done " * 3, "étape ☕ finie " * 2], ids=["ascii", "multibyte"])
def test_standard_cuts_the_oldest_logs(line: str) -> None:
    event = long_logs(100_000, line)
    logs = list(event.deployment.logs)
    body = standard.render(event)
    assert len(body) <= MAX
    payload = json.loads(body)["payload"]
    kept, omitted = payload["logs"], payload["logs_omitted"]
    assert payload["logs_truncated"] is True
    assert omitted == len(logs) - len(kept)
    assert kept == logs[omitted:]  # the newest lines, in order
    assert kept[-1] == logs[-1]
    # As few lines as possible were dropped: the next older one would not have fitted.
    assert len(body) + len(json.dumps(logs[omitted - 1], ensure_ascii=False).encode()) + 1 > MAX


def body_with_logs(*logs: str) -> bytes:
    return standard.render(
        event_of(
            environment({"id": "d", "currentStatus": "BUILD_ERROR", "logs": list(logs)}),
            EventType.DEPLOYMENT_FAILURE,
        )
    )


def test_standard_body_exactly_at_the_bound_is_untouched() -> None:
    fitting = MAX - len(body_with_logs("old", ""))
    body = body_with_logs("old", "x" * fitting)
    assert len(body) == MAX
    assert json.loads(body)["payload"]["logs"] == ["old", "x" * fitting]
    assert "logs_truncated" not in json.loads(body)["payload"]


def test_standard_cut_lands_exactly_on_the_bound() -> None:
    # Size the newest line so that dropping only the oldest gives exactly MAX bytes.
    oldest, probe = "o" * 5000, MAX - 3000  # the probe fits alone, not with the oldest
    newest = probe + MAX - len(body_with_logs(oldest, "x" * probe))
    body = body_with_logs(oldest, "x" * newest)
    payload = json.loads(body)["payload"]
    assert len(body) == MAX
    assert (payload["logs"], payload["logs_omitted"], payload["logs_truncated"]) == (["x" * newest], 1, True)
    assert json.loads(body_with_logs(oldest, "x" * (newest + 1)))["payload"]["logs_omitted"] == 2


def test_standard_drops_every_line_when_the_newest_alone_is_too_big() -> None:
    body = body_with_logs("a", "x" * MAX)
    payload = json.loads(body)["payload"]
    assert len(body) <= MAX
    assert (payload["logs"], payload["logs_omitted"], payload["logs_truncated"]) == ([], 2, True)


def test_standard_cuts_a_huge_message_after_the_logs() -> None:
    body = standard.render(
        event_of(
            environment({"id": "d", "currentStatus": "BUILD_ERROR", "message": "m" * 400_000, "logs": ["a"]}),
            EventType.DEPLOYMENT_FAILURE,
        )
    )
    payload = json.loads(body)["payload"]
    assert MAX - 10 <= len(body) <= MAX
    assert payload["message_truncated"] is True
    assert payload["message"].endswith("m…")
    assert payload["logs"] == []


def test_standard_caps_huge_service_lists_last() -> None:
    services = [{"name": f"service-{number}", "note": "n" * 100} for number in range(5000)]
    body = standard.render(
        event_of(
            environment({"id": "d", "currentStatus": "DEPLOYED"}, applications=services, jobs=services[:3]),
            EventType.DEPLOYMENT_SUCCESSFUL,
        )
    )
    payload = json.loads(body)["payload"]
    assert len(body) <= MAX
    assert payload["services_truncated"] is True
    assert payload["applications"] == [{"id": None, **s} for s in services[: len(payload["applications"])]]
    assert len(payload["jobs"]) == 3
    shown = sum(len(payload[kind]) for kind in ("applications", "databases", "containers", "jobs"))
    assert payload["services_omitted"] == 5000 + 3 + 1 + 1 - shown  # the fixture's database and container
    assert "message_truncated" not in payload


def test_standard_never_rejects_a_2xx() -> None:
    assert standard.check_response(200, b"invalid_payload") is None


# ---------------------------------------------------------------- SLACK


def slack_message(event: DeploymentEvent) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(slack.render(event))
    return message


def texts(message: dict[str, Any]) -> list[str]:
    """Every piece of text in the message, wherever it sits."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "text" and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(message)
    return found


HOSTILE = "<!channel> & <@U123|boss> <https://evil.example|click>"


def test_slack_escapes_user_text() -> None:
    deployment = {
        "id": "<!here>",
        "currentStatus": "DEPLOYMENT_ERROR",
        "message": HOSTILE,
        "triggeredBy": HOSTILE,
        "logs": [HOSTILE],
    }
    body = environment(
        deployment, project={"name": HOSTILE}, clusterName=HOSTILE, applications=[{"name": HOSTILE}]
    )
    body["metadata"] = {"uid": "u", "name": "env<!everyone>", "namespace": "shop"}
    message = slack_message(event_of(body, EventType.DEPLOYMENT_FAILURE))
    everything = "\n".join(texts(message))
    assert "<" not in everything
    assert ">" not in everything
    assert "&lt;!channel&gt; &amp; &lt;@U123|boss&gt;" in message["text"]
    assert "&lt;!here&gt;" in everything
    assert "env&lt;!everyone&gt;" in everything
    assert re.search(r"&(?!amp;|lt;|gt;)", everything) is None  # every & starts an entity


@pytest.mark.parametrize(
    ("event_type", "color", "start"),
    [
        (
            EventType.DEPLOYMENT_STARTED,
            "#1D9BD1",
            ":rocket: Deployment started: Shop / shop-prod (PRODUCTION)",
        ),
        (EventType.DEPLOYMENT_SUCCESSFUL, "#2EB67D", ":white_check_mark: Deployment successful: Shop"),
        (EventType.DEPLOYMENT_FAILURE, "#E01E5A", ":x: Deployment failed: Shop"),
        (EventType.DEPLOYMENT_CANCELLED, "#9E9E9E", ":no_entry_sign: Deployment cancelled: Shop"),
        (EventType.WEBHOOK_TEST, "#7C3AED", ":test_tube: Test notification: herald-test"),
    ],
)
def test_slack_colour_and_fallback_by_event(event_type: EventType, color: str, start: str) -> None:
    if event_type is EventType.WEBHOOK_TEST:
        event = ping()
    else:
        event = event_of(environment({"id": "d", "currentStatus": "QUEUED"}), event_type)
    message = slack_message(event)
    assert message["text"].startswith(start)
    assert message["attachments"][0]["color"] == color


def test_slack_respects_slack_limits() -> None:
    services = [{"name": f"service-{number:03d}"} for number in range(500)]
    deployment = {
        "id": "d" * 253,
        "currentStatus": "DEPLOYMENT_ERROR",
        "message": "m" * 10_000,
        "triggeredBy": "t" * 10_000,
        "logs": ["l" * 10_000] * 50,
    }
    body = environment(
        deployment,
        project={"name": "p&" * 5_000},
        clusterName="c" * 10_000,
        applications=services,
        databases=services,
        containers=services,
        jobs=services,
    )
    message = slack_message(event_of(body, EventType.DEPLOYMENT_FAILURE))
    blocks = message["attachments"][0]["blocks"]
    assert 0 < len(message["text"]) <= slack.MAX_TEXT_CHARS
    assert len(blocks) <= slack.MAX_BLOCKS
    for block in blocks:
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= slack.MAX_HEADER_CHARS
        if block["type"] == "section" and "text" in block:
            assert len(block["text"]["text"]) <= slack.MAX_SECTION_CHARS
        if block["type"] == "section" and "fields" in block:
            assert len(block["fields"]) <= 10
            assert all(len(field["text"]) <= slack.MAX_FIELD_CHARS for field in block["fields"])
    assert any(block.get("text", {}).get("text", "").endswith("m…") for block in blocks)
    assert re.search(r"&(?!amp;|lt;|gt;)", "\n".join(texts(message))) is None  # no entity cut in half
    lists = [
        block["text"]["text"]
        for block in blocks
        if block.get("text", {}).get("text", "").startswith("*Jobs*")
    ]
    assert len(lists) == 1
    shown = re.findall(r"`service-\d{3}`", lists[0])
    more = re.search(r", and (\d+) more$", lists[0])
    assert more is not None
    assert len(shown) + int(more.group(1)) == 500
    assert shown == [f"`service-{number:03d}`" for number in range(len(shown))]


def test_slack_lists_services_by_kind() -> None:
    blocks = slack_message(successful())["attachments"][0]["blocks"]
    sections = [b["text"]["text"] for b in blocks if b["type"] == "section" and "text" in b]
    assert "*Applications* (2)\n`api`, `web`" in sections
    assert "*Databases* (1)\n`postgres`" in sections
    assert "*Containers* (1)\n`worker`" in sections
    assert "*Jobs* (1)\n`migrate`" in sections


@pytest.mark.parametrize(
    ("status", "body", "rejected"),
    [
        pytest.param(200, b"ok", None, id="ok"),
        pytest.param(200, b"ok\n", None, id="ok-newline"),
        pytest.param(200, b"invalid_payload", "invalid_payload", id="invalid-payload"),
        pytest.param(200, b"no_text", "no_text", id="no-text"),
        pytest.param(204, b"channel_is_archived", "channel_is_archived", id="archived"),
        pytest.param(200, b'{"ok":false,"error":"channel_not_found"}', "channel_not_found", id="json-error"),
        pytest.param(
            200, b'{"ok":false,"error":"<script>alert(1)</script>"}', "unknown_error", id="json-odd-error"
        ),
        pytest.param(200, b'{"ok":false}', "unknown_error", id="json-no-error"),
        pytest.param(200, b'{"ok":true}', None, id="json-ok"),
        pytest.param(200, b'{"success":true}', None, id="rocket-chat"),
        pytest.param(200, b"", None, id="empty"),
        pytest.param(200, b"Accepted", None, id="other-word"),
        pytest.param(200, b"<html>fine</html>", None, id="html"),
        pytest.param(200, b"{" * 100_000, None, id="deep-json"),
        pytest.param(200, b"{not json", None, id="broken-json"),
        pytest.param(200, b"\xff\xfe", None, id="not-utf8"),
        pytest.param(200, ("x_" * 100).encode(), None, id="too-long-to-be-a-code"),
    ],
)
def test_slack_check_response(status: int, body: bytes, rejected: str | None) -> None:
    answer = slack.check_response(status, body)
    if rejected is None:
        assert answer is None
    else:
        assert answer == f"Slack rejected the message (HTTP {status}): {rejected}"


# ---------------------------------------------------------------- any event


names = st.text(min_size=1, max_size=300)


@st.composite
def events(draw: st.DrawFn) -> DeploymentEvent:
    deployment = {
        "id": draw(st.text(min_size=1, max_size=253)),
        "currentStatus": draw(st.sampled_from(list(DeploymentState))).value,
        "message": draw(st.none() | st.text(max_size=5000)),
        "triggeredBy": draw(st.none() | names),
        "logs": draw(st.lists(st.text(max_size=200), max_size=20)),
    }
    services = st.lists(
        st.fixed_dictionaries({"name": names}, optional={"id": names, "extra": st.text()}), max_size=60
    )
    body = environment(
        deployment,
        project={"name": draw(names)},
        organization={"name": draw(names)},
        type=draw(st.sampled_from(list(EnvironmentType))).value,
        clusterName=draw(st.none() | names),
        applications=draw(services),
        jobs=draw(services),
    )
    return event_of(body, draw(st.sampled_from(list(EventType))))


@settings(max_examples=150, deadline=None)
@given(events())
def test_every_format_renders_any_event(event: DeploymentEvent) -> None:
    for kind in FORMATS:
        body = body_of(kind, event)
        assert isinstance(json.loads(body), dict), kind
    assert len(standard.render(event)) <= MAX
    message = slack_message(event)
    assert message["text"]
    assert len(message["attachments"][0]["blocks"]) <= slack.MAX_BLOCKS
    assert all(len(text) <= slack.MAX_SECTION_CHARS for text in texts(message))
