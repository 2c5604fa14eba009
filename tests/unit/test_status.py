"""status.py: the webhook status as a bounded summary, resuming from whatever a status holds, and
reading a Herald 0.1 status (its queue on the status) once for migration."""

from __future__ import annotations

import datetime
import json
from typing import Any, Literal, cast

from hypothesis import given
from hypothesis import strategies as st

from herald.models import (
    DeliveryOutcome,
    DeliveryRecord,
    DeploymentEvent,
    DeploymentState,
    DeploymentStatus,
    EnvironmentRef,
    EnvironmentType,
    EventType,
    Named,
    PendingDelivery,
)
from herald.status import (
    LEGACY_FIELDS,
    STATUS_BUDGET,
    Counters,
    Pause,
    PauseReason,
    WebhookStatus,
    condition,
    handled_token,
    last_delivery,
    legacy_deliveries,
    parse_status,
    parse_webhook,
    set_condition,
    to_patch,
)

ConditionValue = Literal["True", "False", "Unknown"]
T0 = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)


def event(n: int, kind: EventType = EventType.DEPLOYMENT_STARTED) -> DeploymentEvent:
    return DeploymentEvent(
        event_type=kind,
        payload_id=f"p-{n}",
        created_at=T0,
        environment=EnvironmentRef(uid="u", name="web", namespace="ns", type=EnvironmentType.PRODUCTION),
        organization=Named(name="Acme"),
        project=Named(name="shop"),
        deployment=DeploymentStatus(id=f"d-{n}", current_status=DeploymentState.QUEUED),
    )


def record(n: int, outcome: DeliveryOutcome = DeliveryOutcome.PENDING, **changes: Any) -> DeliveryRecord:
    """A delivery record of ``event(n)`` as Herald 0.1 kept it on the status."""
    base = DeliveryRecord(
        payload_id=f"p-{n}",
        event=EventType.DEPLOYMENT_STARTED,
        environment="ns/web",
        deployment_id=f"d-{n}",
        time=T0,
        outcome=outcome,
        next_attempt_at=T0 if outcome is DeliveryOutcome.PENDING else None,
    )
    return base.model_copy(update=changes)


def dumped(value: Any) -> Any:
    """What Herald 0.1 wrote for a model."""
    return value.model_dump(mode="json", by_alias=True)


def summary() -> WebhookStatus:
    """A status with every summary field set."""
    status = WebhookStatus(
        observed_generation=3,
        last_delivery=last_delivery(
            "hook-0123456789ab",
            record(1, DeliveryOutcome.FAILED, attempts=8, http_status=503, error="HTTP 503"),
        ),
        counters=Counters(delivered=5, failed=1, retried=7, deferred=2),
        pending_deliveries=4,
        oldest_pending_at=T0,
        consecutive_failures=8,
        failing_since=T0,
        pause=Pause(reason=PauseReason.GONE, generation=3),
        handled_ping="1",
        handled_redeliver="2",
        handled_enable="3",
    )
    return set_condition(
        status, type_="Ready", value="False", reason="Gone", message="paused", now=T0, generation=3
    )


# ---------------------------------------------------------------- the summary


def test_the_last_delivery_sums_up_a_record() -> None:
    done = record(7, DeliveryOutcome.SUCCEEDED, attempts=2, http_status=204)
    last = last_delivery("hook-abc", done)
    assert (last.name, last.payload_id, last.event, last.environment) == (
        "hook-abc",
        "p-7",
        EventType.DEPLOYMENT_STARTED,
        "ns/web",
    )
    assert (last.outcome, last.attempts, last.http_status, last.error, last.time) == (
        DeliveryOutcome.SUCCEEDED,
        2,
        204,
        None,
        T0,
    )


def test_the_last_deliverys_error_is_cut() -> None:
    last = last_delivery("hook", record(1, DeliveryOutcome.FAILED, error="e" * 100_000))
    assert last.error is not None
    assert 0 < len(last.error) < 100_000


def test_patch_round_trips_and_nulls_cleared_fields() -> None:
    status = summary()
    assert parse_status(to_patch(status)) == status
    cleared = to_patch(WebhookStatus())
    for key in ("observedGeneration", "lastDelivery", "oldestPendingAt", "failingSince", "pause"):
        assert key in cleared
        assert cleared[key] is None
    assert cleared["handledPing"] is None


def test_patch_names_every_status_key_and_nulls_herald_0_1s_queue() -> None:
    patch = to_patch(summary())
    assert set(patch) == {info.alias for info in WebhookStatus.model_fields.values()} | set(LEGACY_FIELDS)
    assert set(LEGACY_FIELDS) == {"pending", "sent", "deliveries"}
    for legacy in LEGACY_FIELDS:
        assert legacy in patch
        assert patch[legacy] is None


def test_parse_status_salvages_field_by_field() -> None:
    good = to_patch(summary())
    bad_condition = {"type": "Degraded", "status": "Maybe"}
    raw: dict[str, Any] = {
        **good,
        "counters": "nope",
        "lastDelivery": {"name": "hook", "outcome": "Exploded"},
        "conditions": [*good["conditions"], bad_condition, "garbage"],
        "pendingDeliveries": "many",
    }
    status = parse_status(raw)
    assert status.counters == Counters()
    assert status.last_delivery is None
    assert status.pending_deliveries == 0
    assert [c.type for c in status.conditions] == ["Ready"]
    # what was readable is kept
    expected = summary()
    assert status.pause == expected.pause
    assert status.failing_since == expected.failing_since
    assert status.oldest_pending_at == expected.oldest_pending_at
    assert status.handled_redeliver == expected.handled_redeliver


def test_a_herald_0_1_status_parses_with_its_queue_ignored() -> None:
    raw = {
        "observedGeneration": 2,
        "pending": [dumped(PendingDelivery(record=record(1), notification=event(1)))],
        "deliveries": [dumped(record(1))],
        "lastDelivery": dumped(record(0, DeliveryOutcome.SUCCEEDED)),  # 0.1: a record, no name
        "counters": {"delivered": 3, "failed": 0, "retried": 1, "dropped": 4},
    }
    status = parse_status(raw)
    assert status.observed_generation == 2
    assert status.last_delivery is None
    assert status.counters == Counters(delivered=3, retried=1)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=20,
)
status_keys = st.sampled_from(
    [*(info.alias or name for name, info in WebhookStatus.model_fields.items()), *LEGACY_FIELDS]
)


@given(json_values)
def test_parse_status_never_raises(raw: Any) -> None:
    assert isinstance(parse_status(raw), WebhookStatus)


@given(st.dictionaries(status_keys, json_values))
def test_parse_status_never_raises_on_known_keys(raw: dict[str, Any]) -> None:
    assert isinstance(parse_status(raw), WebhookStatus)


# ---------------------------------------------------------------- Herald 0.1's queue


def test_legacy_deliveries_reads_pending_and_the_finished_ones_whose_notification_was_kept() -> None:
    queued = PendingDelivery(record=record(1), notification=event(1))
    delivered = record(2, DeliveryOutcome.SUCCEEDED, attempts=1, http_status=200)
    failed = record(3, DeliveryOutcome.FAILED, attempts=8, http_status=500, error="HTTP 500")
    raw = {
        "pending": [dumped(queued)],
        "sent": [dumped(event(2)), dumped(event(3)), dumped(event(4))],  # p-4: its record aged out
        "deliveries": [dumped(record(1)), dumped(failed), dumped(delivered)],
    }
    found = {d.record.payload_id: d for d in legacy_deliveries(raw)}
    assert set(found) == {"p-1", "p-2", "p-3"}
    assert found["p-1"] == queued
    assert found["p-2"] == PendingDelivery(record=delivered, notification=event(2))
    assert found["p-3"] == PendingDelivery(record=failed, notification=event(3))


def test_legacy_deliveries_match_sent_with_the_newest_record() -> None:
    """0.1 listed its history newest first."""
    newest = record(2, DeliveryOutcome.SUCCEEDED, attempts=2, http_status=200)
    older = record(2, DeliveryOutcome.RETRYING, attempts=1, http_status=503)
    raw = {"sent": [dumped(event(2))], "deliveries": [dumped(newest), dumped(older)]}
    assert [d.record for d in legacy_deliveries(raw)] == [newest]


def test_a_sent_notification_whose_record_is_unfinished_is_not_read() -> None:
    raw = {"sent": [dumped(event(2))], "deliveries": [dumped(record(2, DeliveryOutcome.RETRYING))]}
    assert legacy_deliveries(raw) == ()


def test_pending_wins_over_sent() -> None:
    queued = PendingDelivery(record=record(1, attempts=1, http_status=503), notification=event(1))
    raw = {
        "sent": [dumped(event(1))],
        "deliveries": [dumped(record(1, DeliveryOutcome.FAILED, attempts=8))],
        "pending": [dumped(queued)],
    }
    assert legacy_deliveries(raw) == (queued,)


def test_garbled_legacy_items_are_skipped() -> None:
    queued = PendingDelivery(record=record(1), notification=event(1))
    broken_pending = dumped(PendingDelivery(record=record(5), notification=event(5)))
    del broken_pending["notification"]["payloadId"]
    raw = {
        "pending": [dumped(queued), broken_pending, "garbage", None, {"record": 1}],
        "sent": [dumped(event(2)), {"eventType": "DEPLOYMENT_EXPLODED"}, 7],
        "deliveries": [{"payloadId": "p-2"}, dumped(record(2, DeliveryOutcome.SUCCEEDED)), []],
    }
    found = {d.record.payload_id: d for d in legacy_deliveries(raw)}
    assert set(found) == {"p-1", "p-2"}
    assert found["p-1"] == queued


def test_a_summary_status_has_no_legacy_deliveries() -> None:
    assert legacy_deliveries(to_patch(summary())) == ()
    assert legacy_deliveries(None) == ()
    assert legacy_deliveries("status") == ()


@given(st.dictionaries(st.sampled_from(LEGACY_FIELDS), json_values))
def test_legacy_deliveries_never_raises(raw: dict[str, Any]) -> None:
    assert isinstance(legacy_deliveries(raw), tuple)


# ---------------------------------------------------------------- conditions, tokens, the budget


def test_condition_transition_time_moves_only_on_change() -> None:
    later = T0 + datetime.timedelta(minutes=5)
    s1 = set_condition(
        WebhookStatus(), type_="Ready", value="True", reason="A", message="a", now=T0, generation=1
    )
    s2 = set_condition(s1, type_="Ready", value="True", reason="B", message="b", now=later, generation=1)
    s3 = set_condition(s2, type_="Ready", value="False", reason="C", message="c", now=later, generation=1)
    assert s2.conditions[0].last_transition_time == T0
    assert s3.conditions[0].last_transition_time == later
    assert (
        set_condition(s3, type_="Ready", value="False", reason="C", message="c", now=T0, generation=1) is s3
    )


def test_conditions_are_one_per_type_in_type_order() -> None:
    status = WebhookStatus()
    for type_ in ("Ready", "Degraded", "Ready"):
        status = set_condition(
            status, type_=type_, value="True", reason="R", message=type_, now=T0, generation=1
        )
    assert [c.type for c in status.conditions] == ["Degraded", "Ready"]
    ready = condition(status, "Ready")
    assert ready is not None
    assert ready.message == "Ready"
    assert condition(status, "Paused") is None


def test_an_unchanged_message_compares_as_cut() -> None:
    """A long message set twice is the same condition, not a change each time."""
    long = "m" * 100_000
    once = set_condition(
        WebhookStatus(), type_="Ready", value="False", reason="R", message=long, now=T0, generation=1
    )
    assert (
        set_condition(once, type_="Ready", value="False", reason="R", message=long, now=T0, generation=1)
        is once
    )


def test_handled_tokens_keep_short_values_and_digest_long_ones() -> None:
    assert handled_token("2026-01-01") == "2026-01-01"
    long = "x" * 10_000
    token = handled_token(long)
    assert token == handled_token(long)
    assert token != handled_token(long + "y")
    assert len(token) < 200


def test_the_pause_survives_a_round_trip() -> None:
    status = WebhookStatus(pause=Pause(reason=PauseReason.EGRESS_DENIED, generation=4, policy="f00d"))
    assert parse_status(to_patch(status)).pause == status.pause


texts = (
    st.text(max_size=20)
    | st.text(min_size=1000, max_size=5000)
    | st.builds(lambda c, n: c * n, st.characters(), st.integers(1000, 20_000))
)
condition_types = st.sampled_from(["Ready", "Degraded"])
reasons = st.sampled_from(
    ["Ready", "Delivered", "Delivering", "DeliveryFailing", "InvalidSpec", "SecretNotFound", *PauseReason]
)
statuses_value = st.sampled_from(cast(list[ConditionValue], ["True", "False", "Unknown"]))


@st.composite
def grown_statuses(draw: st.DrawFn) -> WebhookStatus:
    """A status as the dispatcher grows it: conditions, a last delivery, handled annotations."""
    status = WebhookStatus(
        observed_generation=draw(st.integers(0, 2**53)),
        counters=Counters(
            delivered=draw(st.integers(0, 2**53)),
            failed=draw(st.integers(0, 2**53)),
            retried=draw(st.integers(0, 2**53)),
            deferred=draw(st.integers(0, 2**53)),
        ),
        pending_deliveries=draw(st.integers(0, 1_000_000)),
        oldest_pending_at=T0,
        consecutive_failures=draw(st.integers(0, 2**53)),
        failing_since=T0,
        pause=Pause(reason=draw(st.sampled_from(PauseReason)), generation=2**53, policy="f" * 64),
    )
    steps = draw(st.lists(st.tuples(condition_types, statuses_value, reasons, texts), max_size=6))
    for type_, value, reason, message in steps:
        status = set_condition(
            status,
            type_=type_,
            value=value,
            reason=reason,
            message=message,
            now=T0,
            generation=2**53,
        )
    error = draw(st.none() | texts)
    finished = record(
        1,
        draw(st.sampled_from(DeliveryOutcome)),
        payload_id="f" * 64,
        environment=f"{'n' * 63}/{'e' * 253}",
        attempts=draw(st.integers(0, 2**31)),
        http_status=draw(st.none() | st.integers(100, 599)),
        error=error,
    )
    name = "h" * 40 + "-0123456789ab"
    annotations = [draw(texts) for _ in range(3)]
    return status.model_copy(
        update={
            "last_delivery": last_delivery(name, finished),
            "handled_ping": handled_token(annotations[0]),
            "handled_redeliver": handled_token(annotations[1]),
            "handled_enable": handled_token(annotations[2]),
        }
    )


@given(grown_statuses())
def test_any_status_stays_within_its_budget(status: WebhookStatus) -> None:
    patch = to_patch(status)
    sent = json.dumps(patch, ensure_ascii=False).encode()  # what Herald sends (UTF-8)
    escaped = json.dumps(patch).encode()  # every character escaped to ASCII
    assert len(sent) <= STATUS_BUDGET
    assert len(escaped) <= STATUS_BUDGET
    assert parse_status(patch) == status


# ---------------------------------------------------------------- reading a webhook


@given(st.dictionaries(st.sampled_from(["metadata", "spec", "status", "kind"]), json_values))
def test_parse_webhook_never_raises(body: dict[str, Any]) -> None:
    view = parse_webhook(body, cluster=False)
    assert (view.spec is None) == (view.spec_error is not None)


def test_scope_rules() -> None:
    spec = {"url": "https://x.example/h", "kind": "STANDARD", "events": ["DEPLOYMENT_STARTED"]}
    meta = {"name": "w", "namespace": "ns", "generation": 2}
    cluster_ref = {**spec, "secretRef": {"name": "s"}}
    view = parse_webhook({"metadata": meta, "spec": cluster_ref}, cluster=True)
    assert view.spec_error is not None
    assert "namespace" in view.spec_error
    selector = {**spec, "namespaceSelector": {"matchLabels": {"a": "b"}}}
    assert "ClusterWebhook" in (
        parse_webhook({"metadata": meta, "spec": selector}, cluster=False).spec_error or ""
    )
    ok = parse_webhook({"metadata": meta, "spec": {**spec, "secretRef": {"name": "s"}}}, cluster=False)
    assert ok.spec is not None
    assert ok.spec.secret_ref is not None
    assert ok.spec.secret_ref.key == "secret"
    assert ok.generation == 2


def test_a_template_that_fails_makes_the_spec_unusable_with_its_line() -> None:
    meta = {"name": "w", "namespace": "ns", "generation": 3}
    spec = {"url": "https://x.example/h", "kind": "CUSTOM", "events": ["DEPLOYMENT_FAILURE"]}
    broken = {**spec, "template": {"body": '{"a": 1,\n "b": {{ payload.nope | tojson }}}'}}
    view = parse_webhook({"metadata": meta, "spec": broken}, cluster=False)
    assert view.spec is None
    assert view.spec_error is not None
    assert view.spec_error.startswith("spec.template.body: line 2: 'dict object' has no attribute 'nope'")
    fixed = {**spec, "template": {"body": '{"e": {{ event_type | tojson }}}'}}
    assert parse_webhook({"metadata": meta, "spec": fixed}, cluster=False).spec is not None


def test_the_annotations_are_read() -> None:
    annotations = {"herald.dev/enable": "after-fix-1", "herald.dev/ping": "p1", "herald.dev/redeliver": ""}
    meta = {"name": "w", "namespace": "ns", "annotations": annotations}
    spec = {"url": "https://x.example/h", "kind": "STANDARD", "events": ["DEPLOYMENT_STARTED"]}
    view = parse_webhook({"metadata": meta, "spec": spec}, cluster=False)
    assert (view.enable, view.ping, view.redeliver) == ("after-fix-1", "p1", None)


def test_a_webhooks_view_keeps_nothing_of_its_status() -> None:
    """The index holds a view per webhook for as long as Herald runs: neither the summary nor a
    Herald 0.1 queue (deliveries with their notifications) rides along."""
    queued = PendingDelivery(record=record(1), notification=event(1))
    status = {**to_patch(summary()), "pending": [dumped(queued)] * 20}
    body = {
        "metadata": {"name": "hook", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {"url": "https://receiver.example/hook", "kind": "STANDARD"},
        "status": status,
    }
    view = parse_webhook(body, cluster=False)
    dumped_view = repr(view.model_dump())
    assert "p-1" not in dumped_view
    assert "hook-0123456789ab" not in dumped_view
