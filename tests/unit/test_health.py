"""herald.health: when a receiver failing every attempt is disabled, over timestamps."""

from __future__ import annotations

import datetime

import pytest

from herald.health import disabled_message, failing_since, should_disable
from herald.models import WebhookSpec, parse_duration

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
HOUR = datetime.timedelta(hours=1)


def run(attempts: list[tuple[float, bool]], disable_after: float | None) -> list[bool]:
    """For each (hours after T0, succeeded), whether that attempt disables the webhook."""
    since = None
    out = []
    for hours, succeeded in attempts:
        now = T0 + hours * HOUR
        since = failing_since(since, succeeded=succeeded, now=now)
        out.append(should_disable(since, now=now, disable_after=disable_after))
    return out


H120 = 120 * 3600.0


@pytest.mark.parametrize(
    ("attempts", "disable_after", "expected"),
    [
        ([(0, False), (60, False), (119.9, False), (120, False)], H120, [False, False, False, True]),
        ([(0, False), (60, True), (61, False), (180, False), (181, False)], H120, [False] * 4 + [True]),
        ([(0, False), (200, True)], H120, [False, False]),  # a success after the window: no disable
        ([(0, False), (1000, False)], None, [False, False]),  # 0s: never
        ([(0, True), (500, True)], H120, [False, False]),
        ([(0, False), (0.5, False)], 1800.0, [False, True]),
    ],
)
def test_health_rule(
    attempts: list[tuple[float, bool]], disable_after: float | None, expected: list[bool]
) -> None:
    assert run(attempts, disable_after) == expected


def test_the_run_starts_at_the_first_failure() -> None:
    first = failing_since(None, succeeded=False, now=T0)
    assert failing_since(first, succeeded=False, now=T0 + HOUR) == T0
    assert failing_since(first, succeeded=True, now=T0 + HOUR) is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("120h", 432000.0), ("30m", 1800.0), ("1h30m", 5400.0), ("90s", 90.0), ("0s", 0.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5d", "1.5h", "-1h", "h", "120", "1h 30m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_spec_default_and_never() -> None:
    base = {"kind": "STANDARD", "url": "https://r.example/", "events": ["DEPLOYMENT_STARTED"]}
    assert WebhookSpec.model_validate(base).disable_after_seconds == H120
    assert WebhookSpec.model_validate({**base, "disableAfter": "0s"}).disable_after_seconds is None


def test_the_message_says_what_to_do() -> None:
    message = disabled_message(T0, disable_after="120h", error="HTTP 503")
    assert "2026-01-01T00:00:00Z" in message
    assert "120h" in message
    assert "HTTP 503" in message
    assert "herald.dev/enable" in message
