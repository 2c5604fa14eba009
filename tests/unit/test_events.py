"""herald.events: states to events, the ledger, payload ids, and reading Environments."""

from __future__ import annotations

import contextlib
import datetime
import json
import uuid
from collections.abc import Iterable, Sequence
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from herald.events import (
    LEDGER_ANNOTATION,
    STARTED_STATES,
    TERMINAL_EVENTS,
    BadEnvironment,
    BadLedger,
    build_event,
    derive_events,
    dump_ledger,
    nothing_new,
    parse_environment,
    parse_ledger,
    payload_id,
    ping_event,
    record_events,
)
from herald.models import (
    DeploymentState,
    DeploymentStatus,
    EnvironmentType,
    EventType,
    NotifiedLedger,
    ObjectRef,
)

S = DeploymentState
STARTED = EventType.DEPLOYMENT_STARTED
SUCCESSFUL = EventType.DEPLOYMENT_SUCCESSFUL
FAILURE = EventType.DEPLOYMENT_FAILURE
CANCELLED = EventType.DEPLOYMENT_CANCELLED
NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)

# What each state yields for a deployment id seen for the first time: written out by hand from
# DESIGN.md, so the module's own tables are checked rather than repeated.
FIRST_SEEN: dict[DeploymentState, tuple[EventType, ...]] = {
    S.BUILDING: (STARTED,),
    S.BUILD_ERROR: (STARTED, FAILURE),
    S.CANCELED: (STARTED, CANCELLED),
    S.CANCELING: (),
    S.DELETED: (),
    S.DELETE_ERROR: (),
    S.DELETE_QUEUED: (),
    S.DELETING: (),
    S.DEPLOYED: (STARTED, SUCCESSFUL),
    S.DEPLOYING: (STARTED,),
    S.DEPLOYMENT_ERROR: (STARTED, FAILURE),
    S.DEPLOYMENT_QUEUED: (STARTED,),
    S.EXECUTING: (STARTED,),
    S.QUEUED: (STARTED,),
    S.READY: (),
    S.RECAP: (),
    S.RESTARTED: (STARTED, SUCCESSFUL),
    S.RESTARTING: (STARTED,),
    S.RESTART_ERROR: (STARTED, FAILURE),
    S.RESTART_QUEUED: (STARTED,),
    S.STOPPED: (),
    S.STOPPING: (),
    S.STOP_ERROR: (),
    S.STOP_QUEUED: (),
    S.UNAVAILABLE: (),
    S.WAITING_DELETING: (),
    S.WAITING_RESTARTING: (STARTED,),
    S.WAITING_RUNNING: (STARTED,),
    S.WAITING_STOPPING: (),
}


def deployment(state: DeploymentState, deployment_id: str = "d1") -> DeploymentStatus:
    return DeploymentStatus(id=deployment_id, current_status=state)


def ledger_of(**deployments: Iterable[EventType]) -> NotifiedLedger:
    return NotifiedLedger(deployments={key: tuple(events) for key, events in deployments.items()})


def feed(
    steps: Sequence[tuple[str, DeploymentState]], ledger: NotifiedLedger | None = None
) -> list[tuple[str, EventType]]:
    """Drive states through derive/record, as the handler does, through the annotation's text."""
    raw = dump_ledger(ledger or NotifiedLedger())
    sent: list[tuple[str, EventType]] = []
    for deployment_id, state in steps:
        current = parse_ledger(raw)
        events = derive_events(deployment(state, deployment_id), current)
        sent.extend((deployment_id, event) for event in events)
        if events:
            raw = dump_ledger(record_events(current, deployment_id, events))
    return sent


def events_of(states: Sequence[DeploymentState]) -> list[EventType]:
    return [event for _, event in feed([("d1", state) for state in states])]


# ---------------------------------------------------------------- the state table


@pytest.mark.parametrize("state", list(DeploymentState))
def test_first_seen_state(state: DeploymentState) -> None:
    assert derive_events(deployment(state), NotifiedLedger()) == FIRST_SEEN[state]


@pytest.mark.parametrize("state", list(DeploymentState))
def test_state_after_started(state: DeploymentState) -> None:
    expected = tuple(e for e in FIRST_SEEN[state] if e is not STARTED)
    assert derive_events(deployment(state), ledger_of(d1=[STARTED])) == expected


@pytest.mark.parametrize("outcome", [SUCCESSFUL, FAILURE, CANCELLED])
@pytest.mark.parametrize("state", list(DeploymentState))
def test_nothing_after_an_outcome(state: DeploymentState, outcome: EventType) -> None:
    assert derive_events(deployment(state), ledger_of(d1=[STARTED, outcome])) == ()


def test_tables_match_the_design() -> None:
    assert {s for s, events in FIRST_SEEN.items() if events == (STARTED,)} == STARTED_STATES
    assert {s: events[1] for s, events in FIRST_SEEN.items() if len(events) == 2} == dict(TERMINAL_EVENTS)


# ---------------------------------------------------------------- ordering traps


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        pytest.param([S.QUEUED, S.DEPLOYING, S.DEPLOYED], [STARTED, SUCCESSFUL], id="full-cycle"),
        pytest.param([S.DEPLOYED], [STARTED, SUCCESSFUL], id="first-seen-terminal"),
        pytest.param([S.QUEUED, S.DEPLOYED], [STARTED, SUCCESSFUL], id="coalesced-transitions"),
        pytest.param([S.QUEUED, S.QUEUED, S.QUEUED], [STARTED], id="repeated-started"),
        pytest.param([S.DEPLOYED, S.DEPLOYED], [STARTED, SUCCESSFUL], id="repeated-terminal"),
        pytest.param([S.BUILDING, S.DEPLOYING, S.EXECUTING], [STARTED], id="several-started-states"),
        pytest.param([S.DEPLOYED, S.DEPLOYING], [STARTED, SUCCESSFUL], id="started-after-terminal"),
        pytest.param([S.DEPLOYED, S.DEPLOYMENT_ERROR], [STARTED, SUCCESSFUL], id="second-outcome"),
        pytest.param([S.BUILD_ERROR, S.CANCELED], [STARTED, FAILURE], id="failure-then-cancel"),
        pytest.param([S.STOP_QUEUED, S.STOPPING, S.STOPPED], [], id="stop-only"),
        pytest.param([S.DELETING, S.DELETED], [], id="delete-only"),
        pytest.param([S.CANCELING, S.CANCELED], [STARTED, CANCELLED], id="canceling-is-not-a-start"),
        pytest.param([S.QUEUED, S.STOPPING, S.DEPLOYED], [STARTED, SUCCESSFUL], id="stop-state-in-between"),
        pytest.param([S.RESTART_QUEUED, S.RESTARTED], [STARTED, SUCCESSFUL], id="restart"),
        pytest.param([S.READY, S.UNAVAILABLE], [], id="other-states"),
    ],
)
def test_sequences_of_one_deployment(states: list[DeploymentState], expected: list[EventType]) -> None:
    assert events_of(states) == expected


def test_a_new_deployment_id_starts_a_new_cycle() -> None:
    steps = [("d1", S.QUEUED), ("d1", S.DEPLOYED), ("d2", S.QUEUED), ("d2", S.BUILD_ERROR)]
    assert feed(steps) == [("d1", STARTED), ("d1", SUCCESSFUL), ("d2", STARTED), ("d2", FAILURE)]


def test_a_restart_with_the_ledger_resends_nothing() -> None:
    ledger = record_events(NotifiedLedger(), "d1", [STARTED])
    assert feed([("d1", S.DEPLOYING), ("d1", S.DEPLOYED)], ledger) == [("d1", SUCCESSFUL)]


# ---------------------------------------------------------------- property


RELEVANT = STARTED_STATES | TERMINAL_EVENTS.keys()


@settings(max_examples=300)
@given(
    st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(list(DeploymentState))), max_size=30)
)
def test_any_sequence_sends_started_then_one_outcome(steps: list[tuple[str, DeploymentState]]) -> None:
    sent = feed(steps)
    for deployment_id in {d for d, _ in steps}:
        states = [state for d, state in steps if d == deployment_id]
        got = tuple(event for d, event in sent if d == deployment_id)
        terminal = next((TERMINAL_EVENTS[s] for s in states if s in TERMINAL_EVENTS), None)
        full = (STARTED, terminal) if terminal is not None else (STARTED,)
        expected = full if any(s in RELEVANT for s in states) else ()
        assert got == expected
        assert len(set(got)) == len(got)
        assert not got or got[0] is STARTED


# ---------------------------------------------------------------- the ledger


def test_record_events_adds_without_repeating() -> None:
    ledger = record_events(ledger_of(d1=[STARTED]), "d1", [STARTED, SUCCESSFUL])
    assert ledger.deployments == {"d1": (STARTED, SUCCESSFUL)}


def test_record_events_moves_the_id_to_the_newest_place() -> None:
    ledger = record_events(ledger_of(d1=[STARTED], d2=[STARTED]), "d1", [SUCCESSFUL])
    assert list(ledger.deployments) == ["d2", "d1"]


def test_record_events_keeps_only_the_newest_ids() -> None:
    ledger = NotifiedLedger()
    for number in range(15):
        ledger = record_events(ledger, f"d{number}", [STARTED])
    assert list(ledger.deployments) == [f"d{number}" for number in range(5, 15)]
    assert list(record_events(ledger, "new", [STARTED], keep=2).deployments) == ["d14", "new"]


def test_record_events_refuses_to_keep_nothing() -> None:
    with pytest.raises(ValueError, match="keep"):
        record_events(NotifiedLedger(), "d1", [STARTED], keep=0)


def test_record_events_leaves_its_input_alone() -> None:
    before = ledger_of(d1=[STARTED])
    record_events(before, "d1", [SUCCESSFUL])
    assert before.deployments == {"d1": (STARTED,)}


def test_ledger_text_is_compact_and_ordered_oldest_first() -> None:
    ledger = ledger_of(zeta=[STARTED, FAILURE], alpha=[STARTED])
    text = dump_ledger(ledger)
    assert text == (
        '{"deployments":{"zeta":["DEPLOYMENT_STARTED","DEPLOYMENT_FAILURE"],"alpha":["DEPLOYMENT_STARTED"]}}'
    )
    assert parse_ledger(text) == ledger
    assert list(parse_ledger(text).deployments) == ["zeta", "alpha"]
    assert LEDGER_ANNOTATION == "herald.dev/notified"


@pytest.mark.parametrize("raw", [None, ""])
def test_no_ledger_is_an_empty_ledger(raw: str | None) -> None:
    assert parse_ledger(raw) == NotifiedLedger()


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[]",
        "null",
        '{"deployments": []}',
        '{"deployments": {"d1": ["DEPLOYMENT_EXPLODED"]}}',
        '{"deployments": {"d1": "DEPLOYMENT_STARTED"}}',
        '{"deployments": {"d1": [',
        "[" * 100_000,
    ],
)
def test_garbled_ledger(raw: str) -> None:
    with pytest.raises(BadLedger) as caught:
        parse_ledger(raw)
    assert len(str(caught.value)) <= 200


@given(st.text())
def test_parse_ledger_raises_only_bad_ledger(raw: str) -> None:
    with contextlib.suppress(BadLedger):
        parse_ledger(raw)


@given(
    st.dictionaries(
        st.text(min_size=1),
        st.lists(st.sampled_from(list(EventType)), unique=True).map(tuple),
        max_size=12,
    )
)
def test_ledger_round_trip(deployments: dict[str, tuple[EventType, ...]]) -> None:
    ledger = NotifiedLedger(deployments=deployments)
    assert parse_ledger(dump_ledger(ledger)) == ledger
    assert list(parse_ledger(dump_ledger(ledger)).deployments) == list(deployments)


# ---------------------------------------------------------------- payload ids


def test_payload_id_is_pinned() -> None:
    # Receivers dedupe on it across Herald versions: it must never change for the same inputs.
    assert payload_id("uid-1", "d1", STARTED) == "52ff911f-fc44-5b04-bfbe-a14a806fcf1f"


def test_payload_id_is_a_uuid5_and_deterministic() -> None:
    value = payload_id("uid-1", "d1", STARTED)
    assert uuid.UUID(value).version == 5
    assert payload_id("uid-1", "d1", STARTED) == value


def test_payload_id_differs_by_each_component() -> None:
    ids = {
        payload_id("uid-1", "d1", STARTED),
        payload_id("uid-2", "d1", STARTED),
        payload_id("uid-1", "d2", STARTED),
        payload_id("uid-1", "d1", SUCCESSFUL),
    }
    assert len(ids) == 4


# ---------------------------------------------------------------- reading Environments


def environment_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "Environment",
        "metadata": {"uid": "uid-1", "name": "shop-prod", "namespace": "shop"},
        "spec": {
            "organization": {"id": "org-1", "name": "Acme"},
            "project": {"id": "proj-1", "name": "Shop"},
            "type": "PRODUCTION",
            "clusterName": "eu-west",
            "applications": [{"id": "app-1", "name": "api", "gitRepository": {"url": "https://git/x"}}],
            "databases": [{"name": "postgres"}],
        },
        "status": {
            "deployment": {
                "id": "d1",
                "currentStatus": "DEPLOYED",
                "desiredStatus": "DEPLOYED",
                "logs": ["one", "two"],
                "triggeredBy": "alice",
            }
        },
    }
    body.update(overrides)
    return body


def test_parse_environment() -> None:
    ref, spec, status = parse_environment(environment_body())
    assert (ref.uid, ref.name, ref.namespace, ref.type, ref.cluster_name) == (
        "uid-1",
        "shop-prod",
        "shop",
        EnvironmentType.PRODUCTION,
        "eu-west",
    )
    assert spec.project.name == "Shop"
    assert spec.applications[0].model_extra == {"gitRepository": {"url": "https://git/x"}}
    assert status is not None
    assert (status.id, status.current_status, status.logs, status.triggered_by) == (
        "d1",
        S.DEPLOYED,
        ("one", "two"),
        "alice",
    )


def test_parse_environment_takes_any_mapping() -> None:
    body = MappingProxyType(environment_body())
    assert parse_environment(body) == parse_environment(environment_body())


@pytest.mark.parametrize("status", [None, {}, {"deployment": None}, {"other": 1}])
def test_no_deployment_is_nothing_to_notify(status: Any) -> None:
    body = environment_body(status=status)
    if status is None:
        del body["status"]
    assert parse_environment(body)[2] is None


BIG = "Z" * 5000  # a value that must never be echoed back


def with_spec(**fields: Any) -> dict[str, Any]:
    body = environment_body()
    body["spec"] = {**body["spec"], **fields}
    return body


def with_deployment(**fields: Any) -> dict[str, Any]:
    body = environment_body()
    body["status"] = {"deployment": {**body["status"]["deployment"], **fields}}
    return body


@pytest.mark.parametrize(
    ("body", "where"),
    [
        pytest.param([BIG], "object:", id="not-a-mapping"),
        pytest.param(environment_body(metadata=BIG), "metadata:", id="metadata-string"),
        pytest.param(
            environment_body(metadata={"name": "x", "namespace": "y"}), "metadata.uid:", id="no-uid"
        ),
        pytest.param(
            environment_body(metadata={"uid": "u", "name": 3, "namespace": "y"}), "metadata.name:", id="name"
        ),
        pytest.param(
            environment_body(metadata={"uid": "u", "name": "x", "namespace": ""}), "metadata.namespace:"
        ),
        pytest.param({k: v for k, v in environment_body().items() if k != "spec"}, "spec:", id="no-spec"),
        pytest.param(with_spec(type=BIG), "spec.type:", id="unknown-type"),
        pytest.param(with_spec(project=None), "spec.project:", id="no-project"),
        pytest.param(with_spec(clusterName=["x"]), "spec.clusterName:", id="cluster-list"),
        pytest.param(with_spec(applications=BIG), "spec.applications:", id="apps-string"),
        pytest.param(with_spec(databases=[{"id": "x"}]), "spec.databases[0].name:", id="service-no-name"),
        pytest.param(environment_body(status=[BIG]), "status:", id="status-list"),
        pytest.param(environment_body(status={"deployment": BIG}), "status.deployment:", id="deployment-str"),
        pytest.param(
            with_deployment(currentStatus=BIG), "status.deployment.currentStatus:", id="unknown-state"
        ),
        pytest.param(
            with_deployment(currentStatus=None), "status.deployment.currentStatus:", id="null-state"
        ),
        pytest.param(with_deployment(id=None), "status.deployment.id:", id="no-id"),
        pytest.param(with_deployment(id=""), "status.deployment.id:", id="empty-id"),
        pytest.param(with_deployment(id=BIG), "status.deployment.id:", id="long-id"),
        pytest.param(with_deployment(logs=[1, BIG]), "status.deployment.logs[0]:", id="logs-ints"),
        pytest.param(with_deployment(desiredStatus="NOPE"), "status.deployment.desiredStatus:", id="desired"),
    ],
)
def test_garbled_environment(body: Any, where: str) -> None:
    with pytest.raises(BadEnvironment) as caught:
        parse_environment(body)
    message = str(caught.value)
    assert message.startswith(where)
    assert "ZZZZ" not in message
    assert len(message) <= 200


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=30,
)


def maybe(valid: Any) -> st.SearchStrategy[Any]:
    """The valid value, or garbage in its place: reaches deep fields that pure noise never does."""
    return st.just(valid) | json_values


@st.composite
def near_environments(draw: st.DrawFn) -> Any:
    good = environment_body()
    spec = {key: draw(maybe(value)) for key, value in good["spec"].items()}
    spec["type"] = draw(st.sampled_from([*EnvironmentType, "production", None]) | json_values)
    deployment = {key: draw(maybe(value)) for key, value in good["status"]["deployment"].items()}
    deployment["currentStatus"] = draw(st.sampled_from([*DeploymentState, "deployed"]) | json_values)
    metadata = {key: draw(maybe(value)) for key, value in good["metadata"].items()}
    return {
        "metadata": draw(maybe(metadata)),
        "spec": draw(maybe(spec)),
        "status": draw(maybe({"deployment": draw(maybe(deployment))})),
    }


@settings(max_examples=400)
@given(
    st.one_of(
        json_values,
        st.dictionaries(st.sampled_from(["metadata", "spec", "status"]), json_values),
        near_environments(),
    )
)
def test_parse_environment_raises_only_bad_environment(body: Any) -> None:
    try:
        parse_environment(body)
    except BadEnvironment as exc:
        message = str(exc)
    else:
        message = ""
    assert len(message) <= 200


NOTIFIED = NotifiedLedger(deployments={"d1": (STARTED, SUCCESSFUL)})


@pytest.mark.parametrize(
    ("body", "ledger", "expected"),
    [
        pytest.param(environment_body(), NOTIFIED, True, id="the-echo"),
        pytest.param(environment_body(spec="garbled"), NOTIFIED, True, id="spec-unread"),
        pytest.param(environment_body(status=None), NotifiedLedger(), True, id="no-status"),
        pytest.param(environment_body(status={}), NotifiedLedger(), True, id="no-deployment"),
        pytest.param(environment_body(), NotifiedLedger(), False, id="not-notified"),
        pytest.param(
            environment_body(status={"deployment": {"id": "d2", "currentStatus": "DEPLOYED"}}),
            NOTIFIED,
            False,
            id="new-id",
        ),
        pytest.param(
            environment_body(status={"deployment": {"id": "d1", "currentStatus": "deployed"}}),
            NOTIFIED,
            False,
            id="unknown-state",
        ),
        pytest.param(environment_body(status=["x"]), NOTIFIED, False, id="status-not-object"),
        pytest.param(environment_body(status={"deployment": {"id": ""}}), NOTIFIED, False, id="no-id"),
    ],
)
def test_nothing_new_reads_only_the_deployment(body: Any, ledger: NotifiedLedger, expected: bool) -> None:
    assert nothing_new(body, ledger) is expected


@settings(max_examples=400)
@given(
    near_environments(),
    st.sampled_from([NotifiedLedger(), NOTIFIED, NotifiedLedger(deployments={"d1": (STARTED,)})]),
)
def test_nothing_new_never_hides_an_event(body: Any, ledger: NotifiedLedger) -> None:
    """Where the quick reading says nothing is new, the whole object derives nothing either."""
    if not nothing_new(body, ledger):
        return
    try:
        _, _, deployment = parse_environment(body)
    except BadEnvironment:
        return  # the whole object is unreadable: nothing would be sent from it anyway
    assert deployment is None or derive_events(deployment, ledger) == ()


# ---------------------------------------------------------------- building events


def test_build_event() -> None:
    ref, spec, status = parse_environment(environment_body())
    assert status is not None
    event = build_event(event_type=SUCCESSFUL, environment=ref, spec=spec, deployment=status, created_at=NOW)
    assert event.payload_id == payload_id("uid-1", "d1", SUCCESSFUL)
    assert (event.organization, event.project, event.environment) == (spec.organization, spec.project, ref)
    assert (event.applications, event.databases, event.containers, event.jobs) == (
        spec.applications,
        spec.databases,
        (),
        (),
    )
    assert (event.event_type, event.deployment, event.created_at) == (SUCCESSFUL, status, NOW)


def test_deployed_applications_complete_the_declared_ones_once() -> None:
    body = environment_body()
    body["status"]["deployment"]["applications"] = [
        {"name": "worker", "id": "uid-worker", "images": ["acme/worker:2"]},
        {"name": "api", "id": "uid-api", "images": ["acme/api:7"], "revision": "4"},
    ]
    ref, spec, status = parse_environment(body)
    assert status is not None
    event = build_event(event_type=SUCCESSFUL, environment=ref, spec=spec, deployment=status, created_at=NOW)
    apps = [a.model_dump(mode="json", by_alias=True, exclude_none=True) for a in event.applications]
    assert apps == [
        # the spec's fields win (its id, its gitRepository); the deployment adds images and revision
        {
            "id": "app-1",
            "name": "api",
            "gitRepository": {"url": "https://git/x"},
            "images": ["acme/api:7"],
            "revision": "4",
        },
        {"id": "uid-worker", "name": "worker", "images": ["acme/worker:2"]},
    ]
    assert event.deployment.applications == ()  # carried once, in the payload's applications


def test_ping_event_is_plainly_a_test() -> None:
    event = ping_event(webhook=ObjectRef(namespace="shop", name="slack"), nonce="1", created_at=NOW)
    assert event.event_type is EventType.WEBHOOK_TEST
    assert event.project.name == event.organization.name == event.environment.name == "herald-test"
    assert event.deployment.id == "test-1"
    assert event.deployment.message == "Test notification from Herald"
    assert event.created_at == NOW


def test_ping_payload_id_is_stable_per_webhook_and_value() -> None:
    def ping(namespace: str | None, name: str, nonce: str) -> str:
        return ping_event(
            webhook=ObjectRef(namespace=namespace, name=name), nonce=nonce, created_at=NOW
        ).payload_id

    assert ping("shop", "slack", "1") == ping("shop", "slack", "1")
    ids = {
        ping("shop", "slack", "1"),
        ping("shop", "slack", "2"),
        ping("shop", "other", "1"),
        ping(None, "slack", "1"),
    }
    assert len(ids) == 4
    assert uuid.UUID(ping("shop", "slack", "1")).version == 5


def test_ping_takes_any_value() -> None:
    event = ping_event(webhook=ObjectRef(namespace=None, name="all"), nonce="x" * 10_000, created_at=NOW)
    assert event.deployment.id.startswith("test-x")
    assert json.loads(event.model_dump_json(by_alias=True))["eventType"] == "WEBHOOK_TEST"


def test_merge_ledgers_keeps_what_either_side_notified() -> None:
    from herald.events import merge_ledgers

    persisted = NotifiedLedger(deployments={"d-1": (EventType.DEPLOYMENT_STARTED,)})
    remembered = NotifiedLedger(
        deployments={"d-1": (EventType.DEPLOYMENT_STARTED, EventType.DEPLOYMENT_CANCELLED), "d-2": ()}
    )
    merged = merge_ledgers(persisted, remembered)
    assert merged.deployments["d-1"] == (EventType.DEPLOYMENT_STARTED, EventType.DEPLOYMENT_CANCELLED)
    assert list(merged.deployments) == ["d-1", "d-2"]
    assert merge_ledgers(persisted, NotifiedLedger()) == persisted
    status = DeploymentStatus(id="d-1", current_status=DeploymentState.DEPLOYED)
    assert derive_events(status, merged) == ()
