"""What an HTTP status means for a delivery, and how long to wait before the next attempt.

The schedule is ``Settings.retry_schedule``: delays before attempts 2, 3, … By default
(``settings.DEFAULT_RETRY_SCHEDULE``) the first attempt is immediate, then 5 s, 5 min,
30 min, 2 h, 5 h, 10 h, 10 h: 8 attempts spread over about 27.6 hours, so a receiver down
for a day still gets everything. Each delay is scaled by a random factor in
[1 - jitter, 1 + jitter] (jitter 0.2 by default) so receivers coming back up are not hit by
every operator at once. A ``Retry-After`` answer replaces the scheduled delay, clamped to
[``retry_after_min``, ``retry_after_max``] (1 s … 1 h) so a receiver cannot stall or spin us.
"""

from __future__ import annotations

import datetime
import email.utils
import enum
import re
from dataclasses import dataclass

from herald.settings import Settings

__all__ = ["AttemptResult", "Verdict", "classify_status", "max_attempts", "next_delay", "parse_retry_after"]

_SECONDS = re.compile(r"[0-9]+")
_RETRIED_STATUSES = frozenset({408, 429})


class Verdict(enum.StrEnum):
    SUCCESS = "SUCCESS"  # the receiver accepted the delivery
    RETRY = "RETRY"  # worth another attempt later
    PERMANENT = "PERMANENT"  # no attempt will do better
    GONE = "GONE"  # the receiver says it is gone for good: pause the webhook


@dataclass(frozen=True, kw_only=True)
class AttemptResult:
    """What one attempt came to, as the delivery client reports it and ``decision`` reads it."""

    verdict: Verdict
    http_status: int | None
    error: str | None  # scrubbed and short; None on success
    reason: str | None  # CamelCase, for conditions and metrics; None on success
    retry_after: float | None  # seconds the receiver asked us to wait (RETRY only)
    duration_ms: int
    response_excerpt: bytes  # the first max_response_bytes of the body, for per-kind checks


def classify_status(status: int) -> Verdict:
    """Only 2xx is success; a redirect is not followed, so it is a failure like other 4xx."""
    if 200 <= status <= 299:
        return Verdict.SUCCESS
    if status == 410:
        return Verdict.GONE
    if status in _RETRIED_STATUSES or 500 <= status <= 599:
        return Verdict.RETRY
    return Verdict.PERMANENT


def parse_retry_after(value: str | None, *, now: datetime.datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay-seconds or HTTP-date); None if unusable."""
    if value is None:
        return None
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    value = value.strip()
    if _SECONDS.fullmatch(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, (when - now).total_seconds())


def next_delay(*, attempt: int, settings: Settings, retry_after: float | None, rand: float) -> float | None:
    """Seconds before attempt ``attempt + 1`` once ``attempt`` attempts were made; None when exhausted.

    ``rand`` is uniform in [0, 1), passed in so the policy stays a pure function.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    if not 0.0 <= rand < 1.0:
        raise ValueError(f"rand must be in [0, 1), got {rand}")
    if attempt >= max_attempts(settings):
        return None
    if retry_after is not None:
        return min(max(retry_after, settings.retry_after_min), settings.retry_after_max)
    return settings.retry_schedule[attempt - 1] * (1 + settings.retry_jitter * (2 * rand - 1))


def max_attempts(settings: Settings) -> int:
    """The first attempt plus one per scheduled delay."""
    return len(settings.retry_schedule) + 1
