"""decision.py: what one attempt means for the delivery, the webhook and the people watching it,
as a table of (record and run before, attempt result) -> Decision."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from herald.decision import (
    ATTEMPT_LOG_LIMIT,
    Decision,
    FailureRun,
    Notice,
    PostEvent,
    SetCondition,
    decide,
    new_record,
    observe,
)
from herald.models import DeliveryOutcome, DeliveryRecord
from herald.retry import AttemptResult, Verdict
from herald.settings import Settings
from herald.status import Pause, PauseReason, WebhookStatus, WebhookView, parse_webhook

from .test_status import event

NOW = datetime.datetime(2026, 1, 2, 12, 0, tzinfo=datetime.UTC)
SCHEDULE = (5.0, 300.0, 1800.0)  # four attempts in all
SETTINGS = Settings(retry_schedule=SCHEDULE, retry_jitter=0.0, retry_after_min=1.0, retry_after_max=3600.0)
HOUR = 3600.0


def result(
    verdict: Verdict,
    http_status: int | None,
    *,
    error: str | None = None,
    reason: str | None = None,
    retry_after: float | None = None,
) -> AttemptResult:
    failed = verdict is not Verdict.SUCCESS
    return AttemptResult(
        verdict=verdict,
        http_status=http_status,
        error=error if error is not None or not failed else f"HTTP {http_status}",
        reason=reason if reason is not None or not failed else "HTTPError",
        retry_after=retry_after,
        duration_ms=12,
        response_excerpt=b"",
    )


OK = result(Verdict.SUCCESS, 200)
E503 = result(Verdict.RETRY, 503)


def attempted(attempts: int) -> DeliveryRecord:
    """The record of ``event(1)`` after ``attempts`` failed attempts, the last one a minute ago."""
    record = new_record(event(1), now=NOW - datetime.timedelta(hours=1))
    if attempts == 0:
        return record
    return record.model_copy(
        update={
            "attempts": attempts,
            "outcome": DeliveryOutcome.RETRYING,
            "http_status": 503,
            "error": "HTTP 503",
            "time": NOW - datetime.timedelta(minutes=1),
            "next_attempt_at": NOW,
        }
    )


def failing(consecutive: int, hours: float = 1.0) -> FailureRun:
    return FailureRun(consecutive=consecutive, since=NOW - datetime.timedelta(hours=hours))


def summary(notices: tuple[Notice, ...]) -> list[tuple[str, ...]]:
    """Notices without their messages: (condition type, value, reason) or (event type, reason)."""
    return [
        (n.type, str(n.value), n.reason) if isinstance(n, SetCondition) else (n.type, n.reason)
        for n in notices
    ]


@dataclass(frozen=True)
class Case:
    name: str
    result: AttemptResult
    outcome: DeliveryOutcome
    notices: Sequence[tuple[str, ...]]
    attempts_before: int = 0
    run: FailureRun = field(default_factory=FailureRun)
    pause: PauseReason | None = None
    retry_in: float | None = None  # seconds to the next attempt; None: no retry
    disable_after: float | None = 120 * HOUR


DEGRADED = ("Degraded", "True", "DeliveryFailing")
READY = ("Ready", "True", "Delivered")
HEALTHY = [READY, ("Degraded", "False", "Delivering")]

CASES = [
    Case("success", OK, DeliveryOutcome.SUCCEEDED, HEALTHY),
    Case(
        "success after failures posts Recovered",
        OK,
        DeliveryOutcome.SUCCEEDED,
        [*HEALTHY, ("Normal", "Recovered")],
        attempts_before=2,
        run=failing(3),
    ),
    Case(
        "5xx with retries left",
        E503,
        DeliveryOutcome.RETRYING,
        [DEGRADED, ("Warning", "DeliveryFailed")],
        retry_in=SCHEDULE[0],
    ),
    Case(
        "5xx on the last scheduled retry",
        E503,
        DeliveryOutcome.RETRYING,
        [DEGRADED],
        attempts_before=2,
        run=failing(2),
        retry_in=SCHEDULE[2],
    ),
    Case(
        "5xx with retries exhausted",
        E503,
        DeliveryOutcome.FAILED,
        [DEGRADED, ("Warning", "RetriesExhausted")],
        attempts_before=len(SCHEDULE),
        run=failing(3),
    ),
    Case(
        "4xx is permanent",
        result(Verdict.PERMANENT, 400),
        DeliveryOutcome.FAILED,
        [DEGRADED, ("Warning", "DeliveryFailed")],
    ),
    Case(
        "410 pauses the webhook: Gone",
        result(Verdict.GONE, 410),
        DeliveryOutcome.RETRYING,
        [DEGRADED, ("Ready", "False", "Gone"), ("Warning", "Paused")],
        pause=PauseReason.GONE,
    ),
    Case(
        "an egress refusal pauses the webhook",
        result(Verdict.PERMANENT, None, error="EgressDenied: 10.0.0.1 is private", reason="EgressDenied"),
        DeliveryOutcome.RETRYING,
        [DEGRADED, ("Ready", "False", "EgressDenied"), ("Warning", "Paused")],
        pause=PauseReason.EGRESS_DENIED,
    ),
    Case(
        "429 waits as long as Retry-After says",
        result(Verdict.RETRY, 429, retry_after=120.0),
        DeliveryOutcome.RETRYING,
        [DEGRADED, ("Warning", "DeliveryFailed")],
        retry_in=120.0,
    ),
    Case(
        "Retry-After is clamped to retry_after_max",
        result(Verdict.RETRY, 429, retry_after=10 * HOUR),
        DeliveryOutcome.RETRYING,
        [DEGRADED, ("Warning", "DeliveryFailed")],
        retry_in=SETTINGS.retry_after_max,
    ),
    Case(
        "Retry-After is clamped to retry_after_min",
        result(Verdict.RETRY, 503, retry_after=0.0),
        DeliveryOutcome.RETRYING,
        [DEGRADED, ("Warning", "DeliveryFailed")],
        retry_in=SETTINGS.retry_after_min,
    ),
    Case(
        "failing past disableAfter disables the endpoint",
        E503,
        DeliveryOutcome.RETRYING,
        [DEGRADED, ("Ready", "False", "EndpointDisabled"), ("Warning", "EndpointDisabled")],
        attempts_before=1,
        run=failing(9, hours=121),
        pause=PauseReason.ENDPOINT_DISABLED,
        retry_in=SCHEDULE[1],
    ),
    Case(
        "a permanent failure past disableAfter disables too",
        result(Verdict.PERMANENT, 400),
        DeliveryOutcome.RETRYING,
        [DEGRADED, ("Ready", "False", "EndpointDisabled"), ("Warning", "EndpointDisabled")],
        run=failing(9, hours=121),
        pause=PauseReason.ENDPOINT_DISABLED,
    ),
    Case(
        "a 410 past disableAfter pauses as Gone",
        result(Verdict.GONE, 410),
        DeliveryOutcome.RETRYING,
        [DEGRADED, ("Ready", "False", "Gone"), ("Warning", "Paused")],
        run=failing(9, hours=121),
        pause=PauseReason.GONE,
    ),
    Case(
        "disableAfter 0s never disables",
        E503,
        DeliveryOutcome.RETRYING,
        [DEGRADED],
        attempts_before=1,
        run=failing(9, hours=10_000),
        retry_in=SCHEDULE[1],
        disable_after=None,
    ),
    Case(
        "a missing Secret is shown on Ready",
        result(
            Verdict.RETRY, None, error="SecretNotFound: secret ns/hook not found", reason="SecretNotFound"
        ),
        DeliveryOutcome.RETRYING,
        [DEGRADED, ("Ready", "False", "SecretNotFound"), ("Warning", "DeliveryFailed")],
        retry_in=SCHEDULE[0],
    ),
    Case(
        "a bad CA is shown on Ready, even on a later failure",
        result(Verdict.RETRY, None, error="InvalidCA: no certificate in ca.crt", reason="InvalidCA"),
        DeliveryOutcome.RETRYING,
        [DEGRADED, ("Ready", "False", "InvalidCA")],
        attempts_before=1,
        run=failing(1),
        retry_in=SCHEDULE[1],
    ),
    Case(
        "an error that only looks like a reason is not",
        result(Verdict.RETRY, None, error="ConnectError: refused", reason="ConnectError"),
        DeliveryOutcome.RETRYING,
        [DEGRADED, ("Warning", "DeliveryFailed")],
        retry_in=SCHEDULE[0],
    ),
]


def run_case(case: Case, *, rand: float = 0.5) -> Decision:
    return decide(
        attempted(case.attempts_before),
        case.result,
        run=case.run,
        settings=SETTINGS,
        now=NOW,
        rand=rand,
        disable_after=case.disable_after,
        disable_after_text="120h",
    )


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decision_table(case: Case) -> None:
    decision = run_case(case)
    record = decision.record
    assert record.outcome is case.outcome
    assert decision.finished == (case.outcome in (DeliveryOutcome.SUCCEEDED, DeliveryOutcome.FAILED))
    assert decision.pause is case.pause
    assert decision.retried == (case.retry_in is not None)
    expected_next = None if case.retry_in is None else NOW + datetime.timedelta(seconds=case.retry_in)
    assert record.next_attempt_at == expected_next
    assert summary(decision.notices) == case.notices
    # the attempt itself
    assert record.attempts == case.attempts_before + 1
    assert (record.time, record.http_status, record.error) == (
        NOW,
        case.result.http_status,
        case.result.error,
    )
    assert record.duration_ms == case.result.duration_ms
    last = record.attempt_log[-1]
    assert (last.number, last.time, last.http_status, last.error) == (
        record.attempts,
        NOW,
        case.result.http_status,
        case.result.error,
    )
    # the webhook's failure run
    succeeded = case.result.verdict is Verdict.SUCCESS
    assert decision.run.consecutive == (0 if succeeded else case.run.consecutive + 1)
    assert decision.run.since == (None if succeeded else case.run.since or NOW)


def test_jitter_spreads_a_scheduled_retry_but_not_retry_after() -> None:
    jittered = Settings(retry_schedule=SCHEDULE, retry_jitter=0.2)
    waits = set()
    for rand in (0.0, 0.5, 0.999):
        d = decide(
            attempted(0),
            E503,
            run=FailureRun(),
            settings=jittered,
            now=NOW,
            rand=rand,
            disable_after=None,
            disable_after_text="0s",
        )
        assert d.record.next_attempt_at is not None
        wait = (d.record.next_attempt_at - NOW).total_seconds()
        assert SCHEDULE[0] * 0.8 <= wait <= SCHEDULE[0] * 1.2
        waits.add(wait)
    assert len(waits) == 3
    asked = result(Verdict.RETRY, 429, retry_after=42.0)
    for rand in (0.0, 0.999):
        d = decide(
            attempted(0),
            asked,
            run=FailureRun(),
            settings=jittered,
            now=NOW,
            rand=rand,
            disable_after=None,
            disable_after_text="0s",
        )
        assert d.record.next_attempt_at == NOW + datetime.timedelta(seconds=42)


def message(decision: Decision, reason: str) -> str:
    return next(n.message for n in decision.notices if n.reason == reason)


def test_the_first_failure_says_it_will_retry_and_the_next_ones_do_not_post() -> None:
    first = decide(
        attempted(0),
        E503,
        run=FailureRun(),
        settings=SETTINGS,
        now=NOW,
        rand=0.5,
        disable_after=None,
        disable_after_text="0s",
    )
    assert "will retry" in message(first, "DeliveryFailed")
    assert "DEPLOYMENT_STARTED p-1 for ns/web" in message(first, "DeliveryFailed")
    second = decide(
        first.record,
        E503,
        run=first.run,
        settings=SETTINGS,
        now=NOW + datetime.timedelta(seconds=5),
        rand=0.5,
        disable_after=None,
        disable_after_text="0s",
    )
    assert not [n for n in second.notices if isinstance(n, PostEvent)]
    assert second.run == FailureRun(consecutive=2, since=NOW)
    assert message(second, "DeliveryFailing").startswith("2 consecutive failed attempts; last: HTTP 503")


def test_messages_name_the_delivery_and_the_error() -> None:
    by_name = {c.name: run_case(c) for c in CASES}
    exhausted = message(by_name["5xx with retries exhausted"], "RetriesExhausted")
    assert f"after {len(SCHEDULE) + 1} attempts" in exhausted
    assert exhausted.endswith("HTTP 503")
    recovered = message(by_name["success after failures posts Recovered"], "Recovered")
    assert "p-1" in recovered
    assert "after 3 failed attempts" in recovered
    assert message(by_name["success"], "Delivered") == "Last delivery succeeded with HTTP 200"
    gone = by_name["410 pauses the webhook: Gone"]
    assert "HTTP 410" in message(gone, "Gone")
    assert "(Gone)" in message(gone, "Paused")
    assert message(by_name["a missing Secret is shown on Ready"], "SecretNotFound") == (
        "secret ns/hook not found"
    )


def test_the_disabled_message_says_since_when_and_the_ways_out() -> None:
    case = next(c for c in CASES if c.name == "failing past disableAfter disables the endpoint")
    decision = run_case(case)
    ready = next(n for n in decision.notices if isinstance(n, SetCondition) and n.type == "Ready")
    posted = next(n for n in decision.notices if isinstance(n, PostEvent))
    assert ready.message == posted.message
    assert case.run.since is not None
    assert case.run.since.strftime("%Y-%m-%dT%H:%M:%SZ") in ready.message
    assert "disableAfter 120h" in ready.message
    assert "HTTP 503" in ready.message
    assert "herald.dev/enable" in ready.message


def test_a_run_starts_at_its_first_failure_and_disables_once_long_enough() -> None:
    record = attempted(0)
    run = FailureRun()
    decisions = []
    for hours in (0, 1, 2):
        d = decide(
            record.model_copy(update={"attempts": 0}),  # a fresh delivery each time
            result(Verdict.PERMANENT, 400),
            run=run,
            settings=SETTINGS,
            now=NOW + datetime.timedelta(hours=hours),
            rand=0.5,
            disable_after=2 * HOUR,
            disable_after_text="2h",
        )
        decisions.append(d)
        run = d.run
    assert [d.pause for d in decisions] == [None, None, PauseReason.ENDPOINT_DISABLED]
    assert run == FailureRun(consecutive=3, since=NOW)


def test_the_attempt_log_keeps_the_latest_attempts() -> None:
    record = attempted(0)
    run = FailureRun()
    many = Settings(retry_schedule=(1.0,) * (ATTEMPT_LOG_LIMIT * 2), retry_jitter=0.0)
    for n in range(ATTEMPT_LOG_LIMIT + 5):
        d = decide(
            record,
            E503,
            run=run,
            settings=many,
            now=NOW + datetime.timedelta(seconds=n),
            rand=0.5,
            disable_after=None,
            disable_after_text="0s",
        )
        record, run = d.record, d.run
    assert record.attempts == ATTEMPT_LOG_LIMIT + 5
    assert len(record.attempt_log) == ATTEMPT_LOG_LIMIT
    assert [a.number for a in record.attempt_log] == list(range(6, ATTEMPT_LOG_LIMIT + 6))
    assert record.attempt_log[-1].time == NOW + datetime.timedelta(seconds=ATTEMPT_LOG_LIMIT + 4)


# ---------------------------------------------------------------- a new version of the webhook


def view(generation: int = 2, *, valid: bool = True, **annotations: str) -> WebhookView:
    spec = {"url": "https://example.com/hook", "kind": "STANDARD", "events": ["DEPLOYMENT_STARTED"]}
    meta = {"name": "h", "namespace": "ns", "uid": "u", "generation": generation}
    meta["annotations"] = {f"herald.dev/{k}": v for k, v in annotations.items()}
    return parse_webhook(
        {"apiVersion": "herald.dev/v1alpha1", "metadata": meta, "spec": spec if valid else {"url": 3}},
        cluster=False,
    )


def paused(reason: PauseReason, generation: int = 2, policy: str = "p1") -> WebhookStatus:
    since = NOW if reason is PauseReason.ENDPOINT_DISABLED else None
    return WebhookStatus(
        observed_generation=generation,
        pause=Pause(reason=reason, generation=generation, policy=policy),
        failing_since=since,
    )


@dataclass(frozen=True)
class Seen:
    name: str
    status: WebhookStatus
    view: WebhookView
    pause: PauseReason | None  # the pause after
    notices: Sequence[tuple[str, ...]] = ()
    ping: str | None = None
    redeliver: str | None = None
    policy: str = "p1"


SEEN = [
    Seen("a new generation is observed", WebhookStatus(observed_generation=1), view(2), None),
    Seen(
        "a pause lifts when the spec changes",
        paused(PauseReason.GONE, 1),
        view(2),
        None,
        [("Normal", "Resumed")],
    ),
    Seen("a pause holds while it does not", paused(PauseReason.GONE), view(2), PauseReason.GONE),
    Seen(
        "EgressDenied lifts when the policy changes",
        paused(PauseReason.EGRESS_DENIED),
        view(2),
        None,
        [("Normal", "Resumed")],
        policy="p2",
    ),
    Seen(
        "EgressDenied holds under the same policy",
        paused(PauseReason.EGRESS_DENIED),
        view(2),
        PauseReason.EGRESS_DENIED,
    ),
    Seen(
        "EndpointDisabled lifts on a new herald.dev/enable",
        paused(PauseReason.ENDPOINT_DISABLED),
        view(2, enable="1"),
        None,
        [("Normal", "Resumed"), ("Ready", "True", "Enabled")],
    ),
    Seen(
        "EndpointDisabled holds on an enable value already acted on",
        paused(PauseReason.ENDPOINT_DISABLED).model_copy(update={"handled_enable": "1"}),
        view(2, enable="1"),
        PauseReason.ENDPOINT_DISABLED,
    ),
    Seen(
        "an unreadable spec pauses",
        WebhookStatus(observed_generation=2),
        view(2, valid=False),
        PauseReason.INVALID_SPEC,
        [("Ready", "False", "InvalidSpec")],
    ),
    Seen("a new ping is acted on", WebhookStatus(), view(2, ping="a"), None, ping="a"),
    Seen(
        "a ping already acted on is not",
        WebhookStatus(handled_ping="a"),
        view(2, ping="a"),
        None,
    ),
    Seen(
        "a new redeliver request is acted on",
        WebhookStatus(),
        view(2, redeliver="failed"),
        None,
        redeliver="failed",
    ),
]


@pytest.mark.parametrize("case", SEEN, ids=[c.name for c in SEEN])
def test_observe_table(case: Seen) -> None:
    seen = observe(case.status, case.view, policy=case.policy)
    assert seen.status.observed_generation == case.view.generation
    assert (seen.status.pause.reason if seen.status.pause else None) is case.pause
    assert summary(seen.notices) == list(case.notices)
    assert (seen.ping, seen.redeliver) == (case.ping, case.redeliver)
    if case.ping or case.redeliver:  # acknowledged: the same value is not acted on twice
        again = observe(seen.status, case.view, policy=case.policy)
        assert (again.ping, again.redeliver) == (None, None)


def test_observe_forgets_a_request_whose_annotation_is_removed_so_it_can_be_asked_again() -> None:
    handled = WebhookStatus(handled_ping="a", handled_redeliver="failed", handled_enable="1")
    seen = observe(handled, view(2), policy="p1")
    assert (seen.status.handled_ping, seen.status.handled_redeliver, seen.status.handled_enable) == (
        None,
    ) * 3
    assert observe(seen.status, view(2, ping="a", redeliver="failed"), policy="p1").ping == "a"


def test_a_lifted_endpoint_disabled_pause_starts_a_fresh_failing_run() -> None:
    seen = observe(paused(PauseReason.ENDPOINT_DISABLED), view(2, enable="x"), policy="p1")
    assert seen.status.failing_since is None
    assert seen.status.handled_enable == "x"


def test_a_version_that_changes_nothing_leaves_the_status_the_same_object() -> None:
    """The status writer writes only a new object: an echo of its own write must not loop."""
    status = WebhookStatus(observed_generation=2, handled_ping="a")
    assert observe(status, view(2, ping="a"), policy="p1").status is status
