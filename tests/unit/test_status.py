"""status.py: records, bounds, conditions, and resuming from whatever a status holds."""

from __future__ import annotations

import datetime
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from herald.models import (
    DeliveryOutcome,
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
    ATTEMPT_LOG_LIMIT,
    NOTIFICATION_LOG_CAP,
    WebhookStatus,
    add_pending,
    due,
    finish,
    log_cap,
    new_record,
    parse_status,
    parse_webhook,
    persisted,
    record_attempt,
    set_condition,
    to_patch,
    update_pending,
)

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


def pending(n: int) -> PendingDelivery:
    return PendingDelivery(record=new_record(event(n), now=T0), notification=event(n))


def test_history_is_bounded_newest_first_and_pending_leaves_on_finish() -> None:
    status = WebhookStatus()
    for n in range(30):
        status = add_pending(status, pending(n), history_limit=20)
    assert len(status.pending) == 30
    assert len(status.deliveries) == 20
    assert status.deliveries[0].payload_id == "p-29"
    done = pending(29).record.model_copy(update={"outcome": DeliveryOutcome.SUCCEEDED})
    status = finish(status, PendingDelivery(record=done, notification=event(29)), history_limit=20)
    assert len(status.pending) == 29
    assert status.counters.delivered == 1
    assert status.last_delivery == done
    assert [n.payload_id for n in status.sent] == ["p-29"]
    assert [r.payload_id for r in status.deliveries].count("p-29") == 1


def test_sent_notifications_follow_the_history_bound() -> None:
    status = WebhookStatus()
    for n in range(25):
        failed = pending(n).record.model_copy(update={"outcome": DeliveryOutcome.FAILED})
        status = finish(status, PendingDelivery(record=failed, notification=event(n)), history_limit=20)
    assert status.counters.failed == 25
    assert {n.payload_id for n in status.sent} == {r.payload_id for r in status.deliveries}
    assert len(status.sent) == 20


def test_attempt_log_is_bounded_and_counts() -> None:
    record = new_record(event(1), now=T0)
    for i in range(ATTEMPT_LOG_LIMIT + 5):
        record = record_attempt(
            record,
            now=T0 + datetime.timedelta(seconds=i),
            http_status=503,
            error="HTTP 503",
            duration_ms=3,
            outcome=DeliveryOutcome.RETRYING,
            next_attempt_at=T0,
        )
    assert record.attempts == ATTEMPT_LOG_LIMIT + 5
    assert len(record.attempt_log) == ATTEMPT_LOG_LIMIT
    assert record.attempt_log[-1].number == ATTEMPT_LOG_LIMIT + 5


def test_update_pending_replaces_and_keeps_due_order() -> None:
    status = add_pending(
        add_pending(WebhookStatus(), pending(1), history_limit=20), pending(2), history_limit=20
    )
    retried = pending(1).record.model_copy(
        update={
            "attempts": 1,
            "outcome": DeliveryOutcome.RETRYING,
            "next_attempt_at": T0 + datetime.timedelta(seconds=30),
        }
    )
    status = update_pending(status, PendingDelivery(record=retried, notification=event(1)), history_limit=20)
    assert [p.record.payload_id for p in status.pending] == ["p-2", "p-1"]  # p-1 is due later now
    assert status.pending[1].record.attempts == 1


@given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 120), st.booleans()), max_size=40))
def test_pending_stays_in_due_order_through_any_changes(steps: list[tuple[int, int, bool]]) -> None:
    status = WebhookStatus()
    for n, delay, done in steps:
        queued = {p.record.payload_id for p in status.pending}
        if f"p-{n}" not in queued:
            status = add_pending(status, pending(n), history_limit=20)
        elif done:
            status = finish(status, pending(n), history_limit=20)
        else:
            later = pending(n).record.model_copy(
                update={"next_attempt_at": T0 + datetime.timedelta(seconds=delay)}
            )
            status = update_pending(
                status, PendingDelivery(record=later, notification=event(n)), history_limit=20
            )
        keys = [due(p) for p in status.pending]
        assert keys == sorted(keys)
        assert len({p.record.payload_id for p in status.pending}) == len(status.pending)
    # What is persisted resumes in the same order, and a status written in any order resumes sorted.
    assert parse_status(to_patch(status, cap=NOTIFICATION_LOG_CAP)).pending == status.pending
    shuffled = parse_status(
        to_patch(status.model_copy(update={"pending": status.pending[::-1]}), cap=NOTIFICATION_LOG_CAP)
    ).pending
    assert [due(p) for p in shuffled] == [due(p) for p in status.pending]


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


def test_patch_round_trips_and_nulls_cleared_fields() -> None:
    status = add_pending(WebhookStatus(observed_generation=3), pending(1), history_limit=20)
    patch = to_patch(status, cap=NOTIFICATION_LOG_CAP)
    assert patch["pause"] is None
    assert patch["lastDelivery"] is None
    assert parse_status(patch) == status


def test_parse_status_salvages_good_items() -> None:
    good = to_patch(add_pending(WebhookStatus(), pending(1), history_limit=20), cap=NOTIFICATION_LOG_CAP)
    raw: dict[str, Any] = {**good, "deliveries": [*good["deliveries"], {"garbage": True}], "counters": "nope"}
    status = parse_status(raw)
    assert [r.payload_id for r in status.deliveries] == ["p-1"]
    assert len(status.pending) == 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=20,
)


@given(json_values)
def test_parse_status_never_raises(raw: Any) -> None:
    assert isinstance(parse_status(raw), WebhookStatus)


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


def test_the_enable_annotation_is_read() -> None:
    meta = {"name": "w", "namespace": "ns", "annotations": {"herald.dev/enable": "after-fix-1"}}
    spec = {"url": "https://x.example/h", "kind": "STANDARD", "events": ["DEPLOYMENT_STARTED"]}
    assert parse_webhook({"metadata": meta, "spec": spec}, cluster=False).enable == "after-fix-1"


def with_logs(n: int, lines: list[str]) -> PendingDelivery:
    e = event(n)
    e = e.model_copy(update={"deployment": e.deployment.model_copy(update={"logs": tuple(lines)})})
    return PendingDelivery(record=new_record(e, now=T0), notification=e)


def test_short_logs_are_persisted_as_they_are() -> None:
    e = with_logs(1, ["building", "pushing"]).notification
    assert persisted(e, 1024) is e


def test_long_logs_keep_their_newest_lines_behind_a_marker() -> None:
    lines = [f"line {i:04d} " + "x" * 90 for i in range(1000)]  # about 100 KB
    kept = persisted(with_logs(1, lines).notification, 4096).deployment.logs
    assert sum(len(line.encode()) + 1 for line in kept) <= 4096
    marker, *tail = kept
    assert tail == lines[-len(tail) :]
    assert len(tail) > 10
    assert marker == f"[herald] {1000 - len(tail)} earlier log lines were not kept on the webhook's status"
    one_huge = persisted(with_logs(2, ["y" * 10_000]).notification, 4096).deployment.logs
    assert one_huge == ("[herald] 1 earlier log lines were not kept on the webhook's status",)


def test_a_full_status_with_huge_logs_stays_under_what_etcd_accepts() -> None:
    lines = ["z" * 1000] * 256  # 256 KB of logs in every notification
    status = WebhookStatus()
    for n in range(100):  # --max-pending's default
        status = add_pending(status, with_logs(n, lines), history_limit=20)
    for n in range(100, 120):  # and the history's sent notifications
        done = with_logs(n, lines)
        status = finish(status, done, history_limit=20)
    assert len(status.pending) == 100
    assert len(status.sent) == 20
    patch = to_patch(status, cap=log_cap(max_pending=100, history_limit=20))
    assert len(json.dumps(patch).encode()) < 1024 * 1024  # etcd refuses objects over ~1.5 MiB
    resumed = parse_status(patch)
    assert [p.record.payload_id for p in resumed.pending] == [p.record.payload_id for p in status.pending]
    assert resumed.pending[0].notification.deployment.logs[0].startswith("[herald] ")
    assert status.pending[0].notification.deployment.logs == tuple(lines)  # in memory: whole


def test_a_webhooks_view_keeps_nothing_of_its_status() -> None:
    """The index holds a view per webhook for as long as Herald runs: a status of deliveries
    (history, sent notifications) must not ride along; a worker reads it once when it starts."""
    status = WebhookStatus()
    for n in range(20):
        status = finish(status, with_logs(n, ["log line"] * 50), history_limit=20)
    body = {
        "metadata": {"name": "hook", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {"url": "https://receiver.example/hook", "kind": "STANDARD"},
        "status": to_patch(status, cap=NOTIFICATION_LOG_CAP),
    }
    view = parse_webhook(body, cluster=False)
    assert "log line" not in repr(view.model_dump())
