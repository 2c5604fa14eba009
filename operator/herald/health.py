"""Endpoint health: when a receiver that fails every attempt is disabled, as pure functions.

Like Svix, which disables an endpoint after five days of failures, Herald disables a webhook whose
every attempt has failed for ``spec.disableAfter`` (default 120 h): the run of failures starts at
the first failed attempt after a success and ends at the next success. Disabling pauses attempts
(pending deliveries are kept, and resume in order) until the spec changes or a person sets a new
``herald.dev/enable`` value, which also starts a fresh run, so the receiver gets a full
``disableAfter`` again before it can be disabled again.
"""

from __future__ import annotations

import datetime

__all__ = ["disabled_message", "failing_since", "should_disable"]


def failing_since(
    previous: datetime.datetime | None, *, succeeded: bool, now: datetime.datetime
) -> datetime.datetime | None:
    """When the current run of failures began, after one more attempt (None: the last one succeeded)."""
    if succeeded:
        return None
    return previous if previous is not None else now


def should_disable(
    since: datetime.datetime | None, *, now: datetime.datetime, disable_after: float | None
) -> bool:
    """Whether a webhook failing since ``since`` has failed long enough (``disable_after`` seconds;
    None never disables)."""
    if since is None or disable_after is None:
        return False
    return (now - since).total_seconds() >= disable_after


def disabled_message(since: datetime.datetime, *, disable_after: str, error: str) -> str:
    """The Ready message of a disabled webhook: what happened and the two ways out."""
    started = since.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f"Every attempt failed since {started} (disableAfter {disable_after}); last: {error}. "
        "Deliveries are paused and kept: fix the receiver, then change the spec or set a new "
        "herald.dev/enable annotation value"
    )
