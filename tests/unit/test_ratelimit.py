"""herald.ratelimit: the token bucket and the Retry-After hold, over a clock the test moves."""

from __future__ import annotations

import pytest

from herald.models import RateLimit, WebhookKind, WebhookSpec
from herald.ratelimit import DEFAULTS, Bucket, hold, limit_of, take

ONE_A_SECOND = RateLimit(per_second=1.0, burst=1)
BURSTY = RateLimit(per_second=2.0, burst=3)


def waits(limit: RateLimit | None, times: list[float], bucket: Bucket | None = None) -> list[float]:
    """The wait ``take`` asks for at each time; a delivery is attempted only when it is 0."""
    out = []
    for now in times:
        bucket, wait = take(bucket, limit=limit, now=now)
        out.append(round(wait, 6))
    return out


@pytest.mark.parametrize(
    ("limit", "times", "expected"),
    [
        (ONE_A_SECOND, [0.0, 0.0, 0.5, 1.0, 1.0, 2.5], [0, 1, 0.5, 0, 1, 0]),
        (BURSTY, [0.0, 0.0, 0.0, 0.0, 0.25, 0.5], [0, 0, 0, 0.5, 0.25, 0]),
        (BURSTY, [0.0, 10.0, 10.0, 10.0, 10.0], [0, 0, 0, 0, 0.5]),  # refills to burst, never past it
        (RateLimit(per_second=0.1, burst=1), [0.0, 1.0, 10.0], [0, 9, 0]),
        (None, [0.0, 0.0, 0.0], [0, 0, 0]),
    ],
)
def test_token_bucket(limit: RateLimit | None, times: list[float], expected: list[float]) -> None:
    assert waits(limit, times) == expected


def test_waiting_takes_no_token() -> None:
    bucket, wait = take(None, limit=ONE_A_SECOND, now=0.0)
    assert wait == 0
    for _ in range(5):  # asking again and again while waiting never pushes the next slot back
        bucket, wait = take(bucket, limit=ONE_A_SECOND, now=0.5)
        assert wait == 0.5
    assert take(bucket, limit=ONE_A_SECOND, now=1.0)[1] == 0


@pytest.mark.parametrize(
    ("limit", "held_until", "times", "expected"),
    [
        (None, 30.0, [10.0, 29.0, 30.0, 30.0], [20, 1, 0, 0]),
        (ONE_A_SECOND, 30.0, [10.0, 30.0, 30.0, 31.0], [20, 0, 1, 0]),
        (BURSTY, 5.0, [0.0, 5.0, 5.0], [5, 0, 0.5]),  # after a hold, one goes, then the rate
    ],
)
def test_a_hold_stops_the_webhook_until_then(
    limit: RateLimit | None, held_until: float, times: list[float], expected: list[float]
) -> None:
    assert waits(limit, times, hold(None, until=held_until)) == expected


def test_a_shorter_hold_does_not_cut_a_longer_one() -> None:
    bucket = hold(hold(None, until=60.0), until=10.0)
    assert take(bucket, limit=None, now=20.0)[1] == 40


def spec(kind: WebhookKind, **fields: object) -> WebhookSpec:
    extra = {"template": {"body": "{}"}} if kind is WebhookKind.CUSTOM else {}
    return WebhookSpec.model_validate(
        {"kind": kind.value, "url": "https://r.example/", "events": ["DEPLOYMENT_STARTED"], **extra, **fields}
    )


@pytest.mark.parametrize("kind", list(WebhookKind))
def test_chat_kinds_default_to_one_a_second(kind: WebhookKind) -> None:
    expected = ONE_A_SECOND if kind in (WebhookKind.SLACK, WebhookKind.TEAMS) else None
    assert limit_of(spec(kind)) == expected
    own = {"perSecond": 5, "burst": 2}
    assert limit_of(spec(kind, rateLimit=own)) == RateLimit(per_second=5, burst=2)
    assert set(DEFAULTS) == {WebhookKind.SLACK, WebhookKind.TEAMS}
