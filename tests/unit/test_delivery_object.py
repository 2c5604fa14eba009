"""delivery_object.py: a delivery as its Delivery object (name, labels, body, patches) and back.

Names and label values are checked against Kubernetes' rules and the contract's formulas
(notes in the Delivery spec, issue 12), objects against ``crds/deliveries.yaml`` the way an API
server checks them (``test_crds``' offline validator), and reading an object back against what
was written."""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herald.decision import ATTEMPT_LOG_LIMIT, new_record
from herald.delivery_object import (
    NOTIFICATION_LOG_CAP,
    REDELIVER_ANNOTATION,
    REDELIVERED_ANNOTATION,
    Owner,
    delivery_name,
    label_value,
    owner_of,
    parse_delivery,
    status_patch,
    to_object,
    trimmed,
)
from herald.models import (
    Attempt,
    DeliveryOutcome,
    DeliveryRecord,
    EventType,
    ObjectRef,
    PendingDelivery,
    Service,
)
from tests.unit.test_crds import merge_patch, rejections

from .test_status import T0, event

# Kubernetes' rules (k8s.io/apimachinery/pkg/util/validation).
DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS_SUBDOMAIN = rf"{DNS_LABEL}(\.{DNS_LABEL})*"
LABEL_VALUE = r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"
HOME = "herald-system"
UID = "5c0ffee0-0000-4000-8000-000000000001"


def webhook(name: str = "shop-deployments", namespace: str = "demo") -> Owner:
    return owner_of(ObjectRef(namespace=namespace, name=name), uid=UID, cluster=False, home=HOME)


def cluster_webhook(name: str = "shop-deployments") -> Owner:
    return owner_of(ObjectRef(namespace=None, name=name), uid=UID, cluster=True, home=HOME)


def delivery(n: int = 1, kind: EventType = EventType.DEPLOYMENT_FAILURE) -> PendingDelivery:
    e = event(n, kind)
    return PendingDelivery(record=new_record(e, now=T0), notification=e)


def with_logs(lines: list[str]) -> PendingDelivery:
    d = delivery()
    e = d.notification
    e = e.model_copy(update={"deployment": e.deployment.model_copy(update={"logs": tuple(lines)})})
    return PendingDelivery(record=d.record, notification=e)


def as_stored(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as the API server hands it back: JSON, not Python values."""
    loaded: dict[str, Any] = json.loads(json.dumps(obj))
    return loaded


# ---------------------------------------------------------------- names and labels

dns_labels = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True)
subdomains = st.lists(dns_labels, min_size=1, max_size=6).map(".".join).filter(lambda n: len(n) <= 253)
ODD_NAMES = [
    "a",
    "a" * 39 + "-b",  # a '-' at the cut
    "a" * 39 + ".b",  # a '.' at the cut
    "a" * 38 + "--" + "b" * 30,
    "a" * 49 + "-" + "b" * 20,  # a '-' where a label value is cut
    "a" * 49 + "." + "b" * 20,
    "0" * 253,
    ".".join(["x" * 63] * 3) + "." + "y" * 61,  # 253 characters, the longest name
]
names = subdomains | st.sampled_from(ODD_NAMES)


@given(names, st.sampled_from([True, False]), st.text(min_size=1, max_size=64))
def test_delivery_names_are_deterministic_short_and_valid(name: str, cluster: bool, payload_id: str) -> None:
    owner = cluster_webhook(name) if cluster else webhook(name)
    first = delivery_name(owner, payload_id)
    assert first == delivery_name(owner, payload_id)
    assert len(first) <= 63
    assert re.fullmatch(DNS_SUBDOMAIN, first), first
    # the contract's formula
    key = f"{owner.kind}/{owner.ref.namespace or ''}/{name}/{payload_id}"
    assert first == f"{name[:40].rstrip('-.')}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


@given(names, st.text(min_size=1, max_size=64), st.text(min_size=1, max_size=64))
def test_delivery_names_differ_between_kinds_namespaces_and_payloads(name: str, p1: str, p2: str) -> None:
    assert delivery_name(webhook(name), p1) != delivery_name(cluster_webhook(name), p1)
    assert delivery_name(webhook(name, "a"), p1) != delivery_name(webhook(name, "b"), p1)
    if p1 != p2:
        assert delivery_name(webhook(name), p1) != delivery_name(webhook(name), p2)


@given(names)
def test_label_values_are_valid_and_follow_the_contract(name: str) -> None:
    value = label_value(name)
    assert len(value) <= 63
    assert re.fullmatch(LABEL_VALUE, value), value
    if len(name) <= 63:
        assert value == name
    else:
        assert value == f"{name[:50]}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"


def test_long_names_sharing_a_prefix_get_different_label_values() -> None:
    a, b = "a" * 70, "a" * 71
    assert label_value(a) != label_value(b)
    assert label_value(a)[:50] == label_value(b)[:50]


def test_an_owner_lives_beside_its_webhook_or_in_the_home_namespace() -> None:
    assert (webhook().kind, webhook().home, webhook().cluster) == ("Webhook", "demo", False)
    cluster = cluster_webhook()
    assert (cluster.kind, cluster.home, cluster.cluster) == ("ClusterWebhook", HOME, True)


# ---------------------------------------------------------------- the object


@pytest.mark.parametrize(
    "owner", [webhook(), cluster_webhook(), webhook("x" * 253)], ids=["ns", "cluster", "long"]
)
def test_the_object_is_accepted_by_the_crd(owner: Owner) -> None:
    obj = as_stored(to_object(owner, delivery()))
    assert rejections("Delivery", obj) == []


def test_a_webhooks_object_names_its_owner_and_carries_the_contracts_labels() -> None:
    owner = webhook()
    obj = to_object(owner, delivery())
    meta = obj["metadata"]
    assert (obj["apiVersion"], obj["kind"], meta["namespace"]) == ("herald.dev/v1alpha1", "Delivery", "demo")
    assert meta["ownerReferences"] == [
        {"apiVersion": "herald.dev/v1alpha1", "kind": "Webhook", "name": "shop-deployments", "uid": UID}
    ]
    assert meta["labels"] == {
        "app.kubernetes.io/managed-by": "herald",
        "herald.dev/webhook": "shop-deployments",
        "herald.dev/webhook-kind": "Webhook",
        "herald.dev/environment": "web",
        "herald.dev/environment-namespace": "ns",
        "herald.dev/event": "DEPLOYMENT_FAILURE",
        "herald.dev/outcome": "Pending",
    }
    assert obj["spec"]["webhook"] == {"kind": "Webhook", "name": "shop-deployments", "namespace": "demo"}
    selected = dict(pair.split("=") for pair in owner.selector().split(","))
    assert selected.items() <= meta["labels"].items()
    assert meta["name"] == delivery_name(owner, "p-1")


def test_a_cluster_webhooks_object_lives_in_the_home_namespace_without_a_webhook_namespace() -> None:
    owner = cluster_webhook()
    obj = to_object(owner, delivery())
    assert obj["metadata"]["namespace"] == HOME
    assert obj["spec"]["webhook"] == {"kind": "ClusterWebhook", "name": "shop-deployments"}
    assert obj["metadata"]["ownerReferences"][0]["kind"] == "ClusterWebhook"
    assert obj["metadata"]["labels"]["herald.dev/webhook-kind"] == "ClusterWebhook"
    stored = parse_delivery(as_stored(obj))
    assert stored is not None
    assert (stored.owner_kind, stored.owner, stored.namespace) == (
        "ClusterWebhook",
        ObjectRef(namespace=None, name="shop-deployments"),
        HOME,
    )


def test_a_new_delivery_is_pending_and_due_at_once() -> None:
    obj = to_object(webhook(), delivery())
    assert obj["status"] == {
        "outcome": "Pending",
        "attempts": 0,
        "nextAttemptAt": "2026-01-01T12:00:00Z",
        "attemptLog": [],
    }


# ---------------------------------------------------------------- logs


def test_short_logs_are_stored_as_they_are() -> None:
    d = with_logs(["building", "pushing"])
    assert trimmed(d.notification) is d.notification


def test_long_logs_keep_their_newest_lines_behind_a_marker() -> None:
    lines = [f"line {i:04d} " + "x" * 90 for i in range(1000)]  # about 100 KB
    kept = trimmed(with_logs(lines).notification, 4096).deployment.logs
    assert sum(len(line.encode()) + 1 for line in kept) <= 4096
    marker, *tail = kept
    assert tail == lines[-len(tail) :]
    assert len(tail) > 10
    assert marker == f"[herald] {1000 - len(tail)} earlier log lines were not kept on the Delivery"
    one_huge = trimmed(with_logs(["y" * 10_000]).notification, 4096).deployment.logs
    assert one_huge == ("[herald] 1 earlier log lines were not kept on the Delivery",)


@given(st.lists(st.text(max_size=300), max_size=200), st.integers(200, 8192))
def test_trimmed_logs_fit_their_cap_and_end_with_the_newest_line(lines: list[str], cap: int) -> None:
    logs = trimmed(with_logs(lines).notification, cap).deployment.logs
    if tuple(lines) == logs:
        return
    marker, *tail = logs
    assert marker.startswith("[herald] ")
    assert sum(len(line.encode()) + 1 for line in logs) <= cap
    assert tail == lines[len(lines) - len(tail) :]


@pytest.mark.parametrize("line", ["z" * 1000, "é" * 1000, '\x00"<' * 300], ids=["ascii", "utf8", "escaped"])
def test_an_object_with_huge_logs_stays_small(line: str) -> None:
    d = with_logs([line] * 256)  # 256 KB or more of logs
    obj = to_object(webhook(), d)
    size = len(json.dumps(obj, ensure_ascii=False).encode())
    assert size < 64 * 1024
    assert rejections("Delivery", as_stored(obj)) == []
    stored = parse_delivery(as_stored(obj))
    assert stored is not None
    assert stored.delivery.notification == trimmed(d.notification)
    assert stored.delivery.notification.deployment.logs[0].startswith("[herald] ")
    assert d.notification.deployment.logs == (line,) * 256  # the one in memory is whole
    assert NOTIFICATION_LOG_CAP < 64 * 1024


# ---------------------------------------------------------------- reading back

times = st.datetimes(
    min_value=datetime.datetime(2020, 1, 1),
    max_value=datetime.datetime(2040, 1, 1),
    timezones=st.sampled_from([datetime.UTC, datetime.timezone(datetime.timedelta(hours=2))]),
)
errors = st.none() | st.text(max_size=1024)
statuses = st.none() | st.integers(100, 599)
attempts_logged = st.fixed_dictionaries(
    {
        "number": st.integers(1, 100),
        "time": times,
        "http_status": statuses,
        "error": errors,
        "duration_ms": st.integers(0, 100_000),
    }
).map(lambda fields: Attempt(**fields))


@st.composite
def deliveries(draw: st.DrawFn) -> PendingDelivery:
    """A delivery at any point of its life: never attempted (Pending), or attempted in any outcome."""
    kind = draw(st.sampled_from(EventType))
    created = draw(times)
    notification = event(draw(st.integers(0, 10**6)), kind).model_copy(
        update={
            "created_at": created,
            "applications": (Service(name="storefront", commitId="3f9a2c1", extra={"kept": [1, None]}),),
        }
    )
    record = new_record(notification, now=created)
    attempts = draw(st.integers(0, 50))
    if attempts:
        outcome = draw(st.sampled_from(DeliveryOutcome))
        unfinished = outcome in (DeliveryOutcome.PENDING, DeliveryOutcome.RETRYING)
        record = record.model_copy(
            update={
                "attempts": attempts,
                "outcome": outcome,
                "http_status": draw(statuses),
                "error": draw(errors),
                "time": draw(times),
                "duration_ms": draw(st.none() | st.integers(0, 100_000)),
                "next_attempt_at": draw(times) if unfinished else None,
                "attempt_log": tuple(draw(st.lists(attempts_logged, max_size=ATTEMPT_LOG_LIMIT))),
            }
        )
    return PendingDelivery(record=record, notification=notification)


@given(deliveries(), st.sampled_from([True, False]))
def test_an_object_reads_back_as_the_delivery_it_was_made_from(d: PendingDelivery, cluster: bool) -> None:
    owner = cluster_webhook() if cluster else webhook()
    obj = as_stored(to_object(owner, d))
    stored = parse_delivery(obj)
    assert stored is not None
    assert stored.delivery == d
    assert (stored.name, stored.namespace) == (obj["metadata"]["name"], owner.home)
    assert (stored.owner_kind, stored.owner) == (owner.kind, owner.ref)
    assert stored.redeliver is None


@settings(max_examples=25)
@given(deliveries(), st.sampled_from([True, False]))
def test_any_delivery_makes_an_object_the_crd_accepts(d: PendingDelivery, cluster: bool) -> None:
    owner = cluster_webhook() if cluster else webhook()
    assert rejections("Delivery", as_stored(to_object(owner, d))) == []


def test_a_never_attempted_delivery_reads_back_created_when_its_event_was() -> None:
    """The object has no time of its own for a delivery not yet attempted: it is its event's."""
    d = delivery()
    queued = d.record.model_copy(update={"time": T0 + datetime.timedelta(seconds=3)})
    stored = parse_delivery(
        as_stored(to_object(webhook(), PendingDelivery(record=queued, notification=d.notification)))
    )
    assert stored is not None
    assert stored.delivery.record == queued.model_copy(update={"time": T0})
    assert stored.delivery.record.next_attempt_at == queued.next_attempt_at


# ---------------------------------------------------------------- patches


def finished(d: PendingDelivery) -> DeliveryRecord:
    return d.record.model_copy(
        update={
            "attempts": 2,
            "outcome": DeliveryOutcome.SUCCEEDED,
            "http_status": 204,
            "time": T0 + datetime.timedelta(seconds=10),
            "duration_ms": 30,
            "next_attempt_at": None,
            "attempt_log": (
                Attempt(number=1, time=T0, http_status=503, error="HTTP 503", duration_ms=20),
                Attempt(number=2, time=T0 + datetime.timedelta(seconds=10), http_status=204, duration_ms=30),
            ),
        }
    )


def test_a_status_patch_moves_the_outcome_label_and_clears_what_no_longer_applies() -> None:
    d = delivery()
    retrying = d.record.model_copy(
        update={
            "attempts": 1,
            "outcome": DeliveryOutcome.RETRYING,
            "http_status": 503,
            "error": "HTTP 503",
            "time": T0,
            "duration_ms": 20,
            "next_attempt_at": T0 + datetime.timedelta(seconds=5),
        }
    )
    obj = as_stored(to_object(webhook(), PendingDelivery(record=retrying, notification=d.notification)))
    assert obj["status"]["error"] == "HTTP 503"
    done = finished(d)
    patch = status_patch(done)
    assert patch["metadata"] == {"labels": {"herald.dev/outcome": "Succeeded"}}
    assert "annotations" not in patch["metadata"]
    patched = merge_patch(obj, as_stored(patch))
    assert patched["metadata"]["labels"]["herald.dev/outcome"] == "Succeeded"
    assert "nextAttemptAt" not in patched["status"]
    assert "error" not in patched["status"]
    assert rejections("Delivery", patched) == []
    stored = parse_delivery(patched)
    assert stored is not None
    assert stored.delivery.record == done


def test_a_status_patch_records_the_redeliver_request_it_acted_on() -> None:
    obj = as_stored(to_object(webhook(), delivery()))
    obj["metadata"]["annotations"] = {REDELIVER_ANNOTATION: "again-1"}
    stored = parse_delivery(obj)
    assert stored is not None
    assert stored.redeliver == "again-1"
    patch = status_patch(finished(delivery()), redelivered="again-1")
    assert patch["metadata"]["annotations"] == {REDELIVERED_ANNOTATION: "again-1"}
    patched = merge_patch(obj, as_stored(patch))
    assert rejections("Delivery", patched) == []
    handled = parse_delivery(patched)
    assert handled is not None
    assert handled.redeliver is None


@pytest.mark.parametrize(
    ("annotations", "asked"),
    [
        ({}, None),
        ({REDELIVER_ANNOTATION: "2"}, "2"),
        ({REDELIVER_ANNOTATION: "2", REDELIVERED_ANNOTATION: "1"}, "2"),
        ({REDELIVER_ANNOTATION: "2", REDELIVERED_ANNOTATION: "2"}, None),
        ({REDELIVERED_ANNOTATION: "1"}, None),
        ({REDELIVER_ANNOTATION: ""}, None),
        ("garbage", None),
    ],
)
def test_an_unhandled_redeliver_request_is_reported(annotations: Any, asked: str | None) -> None:
    obj = as_stored(to_object(webhook(), delivery()))
    obj["metadata"]["annotations"] = annotations
    stored = parse_delivery(obj)
    assert stored is not None
    assert stored.redeliver == asked


# ---------------------------------------------------------------- garbage


def _spoiled(patch: dict[str, Any]) -> dict[str, Any]:
    spoiled: dict[str, Any] = merge_patch(as_stored(to_object(webhook(), delivery())), patch)
    return spoiled


GARBAGE = [
    ("empty", {}),
    ("spec not an object", {"spec": "x", "metadata": {}}),
    ("no webhook", _spoiled({"spec": {"webhook": None}})),
    ("webhook not an object", _spoiled({"spec": {"webhook": ["Webhook"]}})),
    ("unknown webhook kind", _spoiled({"spec": {"webhook": {"kind": "Hook"}}})),
    ("webhook name not a string", _spoiled({"spec": {"webhook": {"name": 7}}})),
    ("no notification", _spoiled({"spec": {"notification": None}})),
    ("notification without payloadId", _spoiled({"spec": {"notification": {"payloadId": None}}})),
    ("unknown outcome", _spoiled({"status": {"outcome": "Done"}})),
    ("attempts not a number", _spoiled({"status": {"attempts": "many"}})),
    ("attempts a list", _spoiled({"status": {"attempts": [1]}})),
    ("attemptLog a string", _spoiled({"status": {"attemptLog": "abc"}})),
    ("attemptLog a number", _spoiled({"status": {"attemptLog": 3}})),
    ("attempt without time", _spoiled({"status": {"attemptLog": [{"number": 1, "durationMs": 1}]}})),
    ("httpStatus not a number", _spoiled({"status": {"httpStatus": "teapot"}})),
    ("status a list", {**_spoiled({}), "status": [1]}),
]


@pytest.mark.parametrize(("case", "obj"), GARBAGE, ids=[c[0] for c in GARBAGE])
def test_garbage_reads_as_none(case: str, obj: dict[str, Any]) -> None:
    assert parse_delivery(obj) is None, case


def test_unreadable_times_fall_back() -> None:
    """A time that cannot be read is no reason to leave a delivery behind."""
    obj = _spoiled({"status": {"nextAttemptAt": "soon", "lastAttemptAt": 5}})
    stored = parse_delivery(obj)
    assert stored is not None
    assert stored.delivery.record.next_attempt_at is None
    assert stored.delivery.record.time == T0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=20,
)


@given(st.dictionaries(st.sampled_from(["metadata", "spec", "status", "kind"]), json_values))
def test_parse_delivery_never_raises(obj: dict[str, Any]) -> None:
    parse_delivery(obj)


@given(
    st.sampled_from(["metadata", "spec", "status"]),
    st.sampled_from(
        ["webhook", "notification", "outcome", "attempts", "attemptLog", "httpStatus", "annotations", "name"]
    ),
    json_values,
)
def test_a_garbled_field_never_raises(part: str, key: str, value: Any) -> None:
    obj = as_stored(to_object(webhook(), delivery()))
    obj[part][key] = value
    stored = parse_delivery(obj)
    assert stored is None or stored.delivery.notification == delivery().notification
