"""What happens to a webhook means, as pure functions: an attempt, and a new version of it.

``decide`` takes a delivery's record, the attempt's result, the webhook's failure run and the
settings, and returns the record to store, whether to pause the webhook, and the notices to give
(conditions to set, Kubernetes Events to post). ``observe`` takes the webhook's status and its
new version, and returns the status (generation observed, a pause lifted or set, the requests of
its annotations acknowledged), the notices, and the requests to act on. The dispatcher applies
them; tests read them as tables.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Literal

from herald import health
from herald.models import Attempt, DeliveryOutcome, DeliveryRecord, DeploymentEvent
from herald.retry import AttemptResult, Verdict, next_delay
from herald.settings import Settings
from herald.status import Pause, PauseReason, WebhookStatus, WebhookView, handled_token

__all__ = [
    "ATTEMPT_LOG_LIMIT",
    "CONFIG_REASONS",
    "SECRET_REASONS",
    "Decision",
    "FailureRun",
    "Notice",
    "Observed",
    "PostEvent",
    "SetCondition",
    "decide",
    "new_record",
    "observe",
    "record_attempt",
]

ATTEMPT_LOG_LIMIT = 10
# Why a webhook's Secrets cannot be used; its deliveries wait (no attempt) until that is mended.
SECRET_REASONS = frozenset(
    {"SecretNotFound", "SecretKeyNotFound", "SecretNotAllowed", "SecretUnreadable", "InvalidSigningKey"}
)
# Failures a person fixes in a Secret or the spec; shown on Ready, not only on Degraded.
CONFIG_REASONS = SECRET_REASONS | {"InvalidCA", "InvalidSecret", "InvalidURL"}


@dataclass(frozen=True)
class SetCondition:
    type: str
    value: bool
    reason: str
    message: str


@dataclass(frozen=True)
class PostEvent:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


Notice = SetCondition | PostEvent


@dataclass(frozen=True)
class FailureRun:
    """The webhook's run of failed attempts since its last success."""

    consecutive: int = 0
    since: datetime.datetime | None = None


@dataclass(frozen=True)
class Decision:
    record: DeliveryRecord
    run: FailureRun  # the webhook's failure run after this attempt
    pause: PauseReason | None  # pause the webhook for this
    retried: bool  # another attempt is scheduled
    notices: tuple[Notice, ...]

    @property
    def finished(self) -> bool:
        return self.record.outcome in (DeliveryOutcome.SUCCEEDED, DeliveryOutcome.FAILED)


def new_record(event: DeploymentEvent, *, now: datetime.datetime) -> DeliveryRecord:
    env = event.environment
    return DeliveryRecord(
        payload_id=event.payload_id,
        event=event.event_type,
        environment=f"{env.namespace}/{env.name}",
        deployment_id=event.deployment.id,
        time=now,
        next_attempt_at=now,
    )


def record_attempt(
    record: DeliveryRecord,
    *,
    now: datetime.datetime,
    result: AttemptResult,
    outcome: DeliveryOutcome,
    next_attempt_at: datetime.datetime | None,
) -> DeliveryRecord:
    number = record.attempts + 1
    attempt = Attempt(
        number=number,
        time=now,
        http_status=result.http_status,
        error=result.error,
        duration_ms=result.duration_ms,
    )
    return record.model_copy(
        update={
            "attempts": number,
            "http_status": result.http_status,
            "error": result.error,
            "time": now,
            "outcome": outcome,
            "duration_ms": result.duration_ms,
            "next_attempt_at": next_attempt_at,
            "attempt_log": (*record.attempt_log, attempt)[-ATTEMPT_LOG_LIMIT:],
        }
    )


def decide(
    record: DeliveryRecord,
    result: AttemptResult,
    *,
    run: FailureRun,
    settings: Settings,
    now: datetime.datetime,
    rand: float,
    disable_after: float | None,
    disable_after_text: str,
) -> Decision:
    """The next state of a delivery after one attempt; ``rand`` in [0, 1) jitters the retry delay."""
    verdict = result.verdict
    pause: PauseReason | None = None
    next_at: datetime.datetime | None = None
    if verdict is Verdict.GONE:
        pause = PauseReason.GONE
    elif verdict is Verdict.PERMANENT and result.reason == "EgressDenied":
        pause = PauseReason.EGRESS_DENIED
    elif verdict is Verdict.RETRY:
        delay = next_delay(
            attempt=record.attempts + 1, settings=settings, retry_after=result.retry_after, rand=rand
        )
        if delay is not None:
            next_at = now + datetime.timedelta(seconds=delay)
    succeeded = verdict is Verdict.SUCCESS
    since = health.failing_since(run.since, succeeded=succeeded, now=now)
    if pause is None and health.should_disable(since, now=now, disable_after=disable_after):
        pause = PauseReason.ENDPOINT_DISABLED
    if succeeded:
        outcome = DeliveryOutcome.SUCCEEDED
    elif pause is not None or next_at is not None:
        outcome = DeliveryOutcome.RETRYING
    else:
        outcome = DeliveryOutcome.FAILED
    updated = record_attempt(record, now=now, result=result, outcome=outcome, next_attempt_at=next_at)
    after = FailureRun(consecutive=0 if succeeded else run.consecutive + 1, since=since)
    notices = _notices(
        updated, verdict=verdict, pause=pause, before=run, after=after, disable_after_text=disable_after_text
    )
    return Decision(record=updated, run=after, pause=pause, retried=next_at is not None, notices=notices)


def _notices(
    record: DeliveryRecord,
    *,
    verdict: Verdict,
    pause: PauseReason | None,
    before: FailureRun,
    after: FailureRun,
    disable_after_text: str,
) -> tuple[Notice, ...]:
    what = f"{record.event.value} {record.payload_id} for {record.environment}"
    if verdict is Verdict.SUCCESS:
        notices: list[Notice] = [
            SetCondition(
                "Ready", True, "Delivered", f"Last delivery succeeded with HTTP {record.http_status}"
            ),
            SetCondition("Degraded", False, "Delivering", "Deliveries succeed"),
        ]
        if before.consecutive:
            notices.append(
                PostEvent(
                    "Normal", "Recovered", f"Delivered {what} after {before.consecutive} failed attempts"
                )
            )
        return tuple(notices)
    error = record.error or f"HTTP {record.http_status}"
    notices = [
        SetCondition(
            "Degraded",
            True,
            "DeliveryFailing",
            f"{after.consecutive} consecutive failed attempts; last: {error}",
        )
    ]
    if pause is PauseReason.ENDPOINT_DISABLED:
        message = health.disabled_message(
            after.since or record.time, disable_after=disable_after_text, error=error
        )
        notices += [
            SetCondition("Ready", False, pause.value, message),
            PostEvent("Warning", pause.value, message),
        ]
    elif pause is not None:
        notices += [
            SetCondition("Ready", False, pause.value, f"Deliveries paused until the spec changes: {error}"),
            PostEvent("Warning", "Paused", f"Deliveries paused ({pause.value}): {error}"),
        ]
    elif record.outcome is DeliveryOutcome.FAILED:
        reason = "RetriesExhausted" if verdict is Verdict.RETRY else "DeliveryFailed"
        notices.append(
            PostEvent("Warning", reason, f"{what} failed for good after {record.attempts} attempts: {error}")
        )
    else:
        reason, _, detail = error.partition(":")
        if reason in CONFIG_REASONS:  # fixable by a person: say so on Ready
            notices.append(SetCondition("Ready", False, reason, detail.strip()))
        if before.consecutive == 0:
            notices.append(PostEvent("Warning", "DeliveryFailed", f"{what}: {error}; will retry"))
    return tuple(notices)


@dataclass(frozen=True)
class Observed:
    """What a new version of a webhook means."""

    status: WebhookStatus
    notices: tuple[Notice, ...]
    ping: str | None  # a herald.dev/ping value not acted on yet: send a test delivery
    redeliver: str | None  # a herald.dev/redeliver value not acted on yet: send those again


def observe(status: WebhookStatus, view: WebhookView, *, policy: str) -> Observed:
    """The webhook's status once ``view`` is seen; ``policy`` fingerprints the egress policy now.

    A pause lifts when the spec changes (the generation moves), an EgressDenied one also when the
    policy does, an EndpointDisabled one also on a new ``herald.dev/enable``; an unreadable spec
    pauses. Each annotation value is acted on once; removing the annotation forgets it, so the
    same value (``failed``, a payload id) can be asked for again."""
    notices: list[Notice] = []
    asked = {"handled_ping": view.ping, "handled_redeliver": view.redeliver, "handled_enable": view.enable}
    tokens = {field: handled_token(value) for field, value in asked.items() if value is not None}
    new = {field for field, token in tokens.items() if token != getattr(status, field)}
    update: dict[str, Any] = {field: tokens[field] for field in new}
    update |= {field: None for field in asked if field not in tokens and getattr(status, field) is not None}
    if status.observed_generation != view.generation:
        update["observed_generation"] = view.generation
    pause, enabled = status.pause, "handled_enable" in new
    if pause is not None and (
        pause.generation != view.generation
        or (pause.reason is PauseReason.EGRESS_DENIED and pause.policy != policy)
        or (pause.reason is PauseReason.ENDPOINT_DISABLED and enabled)
    ):
        update["pause"] = None
        if pause.reason is PauseReason.ENDPOINT_DISABLED:  # a fresh disableAfter starts now
            update["failing_since"] = None
        notices.append(PostEvent("Normal", "Resumed", f"Deliveries resume after {pause.reason.value}"))
        if enabled and pause.reason is PauseReason.ENDPOINT_DISABLED and view.spec is not None:
            message = "Enabled again by herald.dev/enable; deliveries resume"
            notices.append(SetCondition("Ready", True, "Enabled", message))
    if view.spec is None:
        message = view.spec_error or "the spec cannot be read"
        notices.append(SetCondition("Ready", False, "InvalidSpec", message))
        update["pause"] = Pause(reason=PauseReason.INVALID_SPEC, generation=view.generation, policy=policy)
    if update:  # an unchanged status stays the same object: the status writer writes nothing then
        status = status.model_copy(update=update)
    return Observed(
        status=status,
        notices=tuple(notices),
        ping=view.ping if "handled_ping" in new else None,
        redeliver=view.redeliver if "handled_redeliver" in new else None,
    )
