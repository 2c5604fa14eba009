"""herald.matching: globs, label selectors, and which webhooks want an event."""

from __future__ import annotations

import datetime
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herald.matching import glob_match, matches, selector_matches
from herald.models import (
    DeploymentEvent,
    DeploymentState,
    DeploymentStatus,
    EnvironmentRef,
    EnvironmentType,
    EventType,
    LabelSelector,
    Named,
    WebhookKind,
    WebhookSpec,
)

# ---------------------------------------------------------------- globs


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        pytest.param("shop", "shop", True, id="literal"),
        pytest.param("shop", "SHOP", True, id="case-name"),
        pytest.param("SHOP", "shop", True, id="case-pattern"),
        pytest.param("Shop-*", "shop-EU", True, id="case-with-star"),
        pytest.param("shop", "shop2", False, id="anchored-end"),
        pytest.param("shop", "my-shop", False, id="anchored-start"),
        pytest.param("shop*", "shop", True, id="star-empty-end"),
        pytest.param("*shop", "shop", True, id="star-empty-start"),
        pytest.param("sh*op", "shop", True, id="star-empty-middle"),
        pytest.param("*", "", True, id="star-matches-empty-name"),
        pytest.param("*", "anything at all", True, id="star-matches-all"),
        pytest.param("**", "x", True, id="double-star"),
        pytest.param("a*b*c", "abc", True, id="stars-empty"),
        pytest.param("a*b*c", "a-b-b-c", True, id="stars-runs"),
        pytest.param("a*b*c", "acb", False, id="stars-order"),
        pytest.param("a*a", "a", False, id="head-and-tail-do-not-overlap"),
        pytest.param("a*a", "aa", True, id="head-and-tail-touch"),
        pytest.param("*ab*ab*", "abab", True, id="middle-pieces-touch"),
        pytest.param("*ab*ab*", "aba", False, id="middle-pieces-do-not-overlap"),
        pytest.param("shop-?", "shop-1", True, id="question-one"),
        pytest.param("shop-?", "shop-", False, id="question-not-zero"),
        pytest.param("shop-?", "shop-12", False, id="question-not-two"),
        pytest.param("??", "ab", True, id="questions"),
        pytest.param("?*", "", False, id="question-then-star-empty"),
        pytest.param("?", "\n", True, id="question-newline"),
        pytest.param("*", "a\nb", True, id="star-newline"),
        pytest.param("[ab]", "a", False, id="bracket-is-literal"),
        pytest.param("[ab]", "[AB]", True, id="bracket-literal-match"),
        pytest.param("shop.eu", "shopxeu", False, id="dot-is-literal"),
        pytest.param("shop.eu", "shop.eu", True, id="dot-literal-match"),
        pytest.param("a\\b", "a\\b", True, id="backslash-literal"),
        pytest.param("a\\*", "a\\xyz", True, id="backslash-does-not-escape"),
        pytest.param("a+", "aa", False, id="plus-is-literal"),
        pytest.param("(a|b)", "(a|b)", True, id="regex-group-literal"),
        pytest.param("^a$", "^a$", True, id="anchors-literal"),
        pytest.param("", "", True, id="empty-pattern-empty-name"),
        pytest.param("", "shop", False, id="empty-pattern"),
        pytest.param("Ünïcode-*", "üNÏCODE-1", True, id="unicode-case"),
    ],
)
def test_glob_match(pattern: str, name: str, expected: bool) -> None:
    assert glob_match(pattern, name) is expected


def reference_glob(pattern: str, name: str) -> bool:
    """The obvious one-regex translation: correct, but open to catastrophic backtracking."""
    translated = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(translated, name, re.IGNORECASE | re.DOTALL) is not None


@settings(max_examples=500)
@given(st.text(alphabet="ab*?.[A", max_size=8), st.text(alphabet="abAB.[", max_size=10))
def test_glob_match_agrees_with_a_plain_regex(pattern: str, name: str) -> None:
    assert glob_match(pattern, name) is reference_glob(pattern, name)


def test_glob_has_no_catastrophic_backtracking() -> None:
    # A single regex would try ~253^12 ways before failing; this must return at once.
    assert glob_match("*a" * 12 + "*b", "a" * 253) is False


# ---------------------------------------------------------------- label selectors


def selector(**fields: Any) -> LabelSelector:
    return LabelSelector.model_validate(fields)


def expression(key: str, operator: str, *values: str) -> dict[str, Any]:
    return {"key": key, "operator": operator, "values": list(values)}


LABELS = {"team": "shop", "env": "prod"}


@pytest.mark.parametrize(
    ("chosen", "expected"),
    [
        pytest.param(None, True, id="none"),
        pytest.param(selector(), True, id="empty"),
        pytest.param(selector(matchLabels={"team": "shop"}), True, id="labels"),
        pytest.param(selector(matchLabels={"team": "shop", "env": "prod"}), True, id="labels-all"),
        pytest.param(selector(matchLabels={"team": "shop", "env": "dev"}), False, id="labels-one-differs"),
        pytest.param(selector(matchLabels={"missing": "x"}), False, id="labels-missing"),
        pytest.param(selector(matchExpressions=[expression("env", "In", "prod", "staging")]), True, id="in"),
        pytest.param(selector(matchExpressions=[expression("env", "In", "dev")]), False, id="in-other"),
        pytest.param(selector(matchExpressions=[expression("missing", "In", "x")]), False, id="in-missing"),
        pytest.param(selector(matchExpressions=[expression("env", "In")]), False, id="in-nothing"),
        pytest.param(selector(matchExpressions=[expression("env", "NotIn", "dev")]), True, id="notin"),
        pytest.param(
            selector(matchExpressions=[expression("env", "NotIn", "prod")]), False, id="notin-listed"
        ),
        pytest.param(
            selector(matchExpressions=[expression("missing", "NotIn", "x")]), True, id="notin-missing"
        ),
        pytest.param(selector(matchExpressions=[expression("env", "Exists")]), True, id="exists"),
        pytest.param(
            selector(matchExpressions=[expression("missing", "Exists")]), False, id="exists-missing"
        ),
        pytest.param(
            selector(matchExpressions=[expression("missing", "DoesNotExist")]), True, id="doesnotexist"
        ),
        pytest.param(
            selector(matchExpressions=[expression("env", "DoesNotExist")]), False, id="doesnotexist-there"
        ),
        pytest.param(
            selector(matchLabels={"team": "shop"}, matchExpressions=[expression("env", "In", "dev")]),
            False,
            id="labels-and-expressions",
        ),
        pytest.param(
            selector(matchExpressions=[expression("env", "Exists"), expression("team", "NotIn", "shop")]),
            False,
            id="expressions-and",
        ),
    ],
)
def test_selector_matches(chosen: LabelSelector | None, expected: bool) -> None:
    assert selector_matches(chosen, LABELS) is expected


def test_selector_on_no_labels() -> None:
    assert selector_matches(selector(matchExpressions=[expression("env", "DoesNotExist")]), {}) is True
    assert selector_matches(selector(matchLabels={"env": "prod"}), {}) is False


# ---------------------------------------------------------------- matches


def event(
    event_type: EventType = EventType.DEPLOYMENT_SUCCESSFUL,
    *,
    project: str = "Shop",
    type_: EnvironmentType = EnvironmentType.PRODUCTION,
) -> DeploymentEvent:
    return DeploymentEvent(
        event_type=event_type,
        payload_id="p",
        created_at=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        environment=EnvironmentRef(uid="u", name="shop-prod", namespace="shop", type=type_),
        organization=Named(name="Acme"),
        project=Named(name=project),
        deployment=DeploymentStatus(id="d1", current_status=DeploymentState.DEPLOYED),
    )


def spec(**fields: Any) -> WebhookSpec:
    return WebhookSpec.model_validate(
        {"url": "https://example.com/hook", "kind": WebhookKind.STANDARD, "events": DEPLOYMENT_EVENTS}
        | fields
    )


DEPLOYMENT_EVENTS = [
    "DEPLOYMENT_STARTED",
    "DEPLOYMENT_SUCCESSFUL",
    "DEPLOYMENT_CANCELLED",
    "DEPLOYMENT_FAILURE",
]
P, D, V = EnvironmentType.PRODUCTION, EnvironmentType.DEVELOPMENT, EnvironmentType.PREVIEW


@pytest.mark.parametrize(
    ("fields", "project", "type_", "expected"),
    [
        pytest.param({}, "Shop", P, True, id="no-filters"),
        pytest.param({"enabled": False}, "Shop", P, False, id="disabled"),
        pytest.param({"events": ["DEPLOYMENT_STARTED"]}, "Shop", P, False, id="event-not-listed"),
        pytest.param(
            {"events": ["DEPLOYMENT_FAILURE", "DEPLOYMENT_SUCCESSFUL"]}, "Shop", P, True, id="event-listed"
        ),
        pytest.param({"environmentTypesFilter": []}, "Shop", D, True, id="types-empty"),
        pytest.param({"environmentTypesFilter": ["PRODUCTION"]}, "Shop", P, True, id="type-in"),
        pytest.param({"environmentTypesFilter": ["PRODUCTION"]}, "Shop", D, False, id="type-out"),
        pytest.param({"environmentTypesFilter": ["STAGING", "PREVIEW"]}, "Shop", V, True, id="types-or"),
        pytest.param(
            {"environmentTypesFilter": ["STAGING", "PREVIEW"]}, "Shop", P, False, id="types-or-none"
        ),
        pytest.param({"projectNamesFilter": []}, "Shop", P, True, id="projects-empty"),
        pytest.param({"projectNamesFilter": ["shop"]}, "Shop", P, True, id="project-case"),
        pytest.param({"projectNamesFilter": ["sh*"]}, "Shop", P, True, id="project-glob"),
        pytest.param({"projectNamesFilter": ["blog", "sh?p"]}, "Shop", P, True, id="projects-or"),
        pytest.param({"projectNamesFilter": ["blog", "shop-*"]}, "Shop", P, False, id="projects-or-none"),
        pytest.param({"projectNamesFilter": ["shop"]}, "Shop Two", P, False, id="project-whole-name"),
        pytest.param(
            {"projectNamesFilter": ["sh*"], "environmentTypesFilter": ["PRODUCTION"]},
            "Shop",
            P,
            True,
            id="and",
        ),
        pytest.param(
            {"projectNamesFilter": ["sh*"], "environmentTypesFilter": ["STAGING"]},
            "Shop",
            P,
            False,
            id="and-type",
        ),
        pytest.param(
            {"projectNamesFilter": ["blog"], "environmentTypesFilter": ["PRODUCTION"]},
            "Shop",
            P,
            False,
            id="and-project",
        ),
        pytest.param(
            {"enabled": False, "projectNamesFilter": ["*"], "environmentTypesFilter": ["PRODUCTION"]},
            "Shop",
            P,
            False,
            id="disabled-beats-filters",
        ),
    ],
)
def test_matches(fields: dict[str, Any], project: str, type_: EnvironmentType, expected: bool) -> None:
    assert matches(spec(**fields), event(project=project, type_=type_)) is expected


@pytest.mark.parametrize("event_type", [e for e in EventType if e is not EventType.WEBHOOK_TEST])
def test_matches_each_event_only_when_listed(event_type: EventType) -> None:
    assert matches(spec(events=[event_type.value]), event(event_type)) is True
    others = [e for e in DEPLOYMENT_EVENTS if e != event_type.value]
    assert matches(spec(events=others), event(event_type)) is False
