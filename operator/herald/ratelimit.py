"""Per-webhook rate limits: a token bucket over an injected monotonic clock, as pure functions.

A bucket holds up to ``burst`` tokens and gains ``per_second`` of them a second; a delivery takes
one. When none is left the worker waits for the next token instead of attempting: deliveries
keep their order and none is dropped. A receiver that answers with ``Retry-After`` (429 or 503)
holds its own bucket until then, so it slows down that webhook alone. Chat receivers cap their
rate (Slack about one message a second per channel), so SLACK and TEAMS default to one a second.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from herald.models import RateLimit, WebhookKind, WebhookSpec

__all__ = ["DEFAULTS", "Bucket", "hold", "limit_of", "take"]

DEFAULTS: Mapping[WebhookKind, RateLimit] = MappingProxyType(
    {
        WebhookKind.SLACK: RateLimit(per_second=1.0, burst=1),
        WebhookKind.TEAMS: RateLimit(per_second=1.0, burst=1),
    }
)


@dataclass(frozen=True)
class Bucket:
    """Tokens left at clock time ``at``; nothing may be taken before ``held_until``."""

    tokens: float
    at: float
    held_until: float = float("-inf")


def limit_of(spec: WebhookSpec) -> RateLimit | None:
    """The webhook's own limit, or its kind's default (None: unlimited)."""
    return spec.rate_limit if spec.rate_limit is not None else DEFAULTS.get(spec.kind)


def take(bucket: Bucket | None, *, limit: RateLimit | None, now: float) -> tuple[Bucket | None, float]:
    """Take one token: ``(bucket after, 0)``, or ``(bucket, seconds to wait)`` when there is none yet.

    A new bucket (None) starts full. Without a limit only a hold can make one wait.
    """
    if bucket is not None and now < bucket.held_until:
        return bucket, bucket.held_until - now
    if limit is None:
        return bucket, 0.0
    if bucket is None:
        bucket = Bucket(tokens=float(limit.burst), at=now)
    tokens = min(float(limit.burst), bucket.tokens + max(0.0, now - bucket.at) * limit.per_second)
    if tokens >= 1.0:
        return Bucket(tokens=tokens - 1.0, at=now, held_until=bucket.held_until), 0.0
    return Bucket(tokens=tokens, at=now, held_until=bucket.held_until), (1.0 - tokens) / limit.per_second


def hold(bucket: Bucket | None, *, until: float) -> Bucket:
    """Take nothing before ``until`` (a receiver's Retry-After); then one delivery may go at once,
    and the rate applies again after it."""
    held = max(until, bucket.held_until) if bucket is not None else until
    return Bucket(tokens=1.0, at=held, held_until=held)
