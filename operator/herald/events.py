"""From an Environment's deployment status to the deployment events to notify, each once.

kopf may coalesce quick transitions and replays every object on a re-list or a restart, so
events are derived from what was already notified for the deployment id (the ledger, persisted
as an annotation on the Environment), never from the previous watch event. Everything here is
a pure function of its arguments: the handler reads the object, this module decides.
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_camel

from herald.models import (
    DeploymentEvent,
    DeploymentState,
    DeploymentStatus,
    EnvironmentRef,
    EnvironmentSpec,
    EnvironmentType,
    EventType,
    Named,
    NotifiedLedger,
    ObjectRef,
    Service,
)

__all__ = [
    "LEDGER_ANNOTATION",
    "LEDGER_KEEP",
    "STARTED_STATES",
    "TERMINAL_EVENTS",
    "BadEnvironment",
    "BadLedger",
    "build_event",
    "derive_events",
    "dump_ledger",
    "merge_ledgers",
    "merge_services",
    "nothing_new",
    "parse_environment",
    "parse_ledger",
    "payload_id",
    "ping_event",
    "record_events",
]

STARTED_STATES: frozenset[DeploymentState] = frozenset(
    {
        DeploymentState.QUEUED,
        DeploymentState.DEPLOYMENT_QUEUED,
        DeploymentState.BUILDING,
        DeploymentState.DEPLOYING,
        DeploymentState.EXECUTING,
        DeploymentState.RESTART_QUEUED,
        DeploymentState.RESTARTING,
        DeploymentState.WAITING_RUNNING,
        DeploymentState.WAITING_RESTARTING,
    }
)

TERMINAL_EVENTS: Mapping[DeploymentState, EventType] = MappingProxyType(
    {
        DeploymentState.DEPLOYED: EventType.DEPLOYMENT_SUCCESSFUL,
        DeploymentState.RESTARTED: EventType.DEPLOYMENT_SUCCESSFUL,
        DeploymentState.DEPLOYMENT_ERROR: EventType.DEPLOYMENT_FAILURE,
        DeploymentState.BUILD_ERROR: EventType.DEPLOYMENT_FAILURE,
        DeploymentState.RESTART_ERROR: EventType.DEPLOYMENT_FAILURE,
        DeploymentState.CANCELED: EventType.DEPLOYMENT_CANCELLED,
    }
)
_OUTCOMES = frozenset(TERMINAL_EVENTS.values())

LEDGER_ANNOTATION = "herald.dev/notified"
# Only the current deployment matters; a few older ids guard against a status flapping back.
LEDGER_KEEP = 10

# Fixed forever: changing it would change every payload_id and defeat receivers' dedupe.
_PAYLOAD_NAMESPACE = uuid.UUID("6f1c0f43-5a0e-4d55-9d0b-8a2f4e1b7c3d")
_PING_NAMESPACE = uuid.uuid5(_PAYLOAD_NAMESPACE, "ping")  # pings can never collide with deployments
_MAX_ERROR_CHARS = 200
_MAX_DEPLOYMENT_ID = 253  # DeploymentStatus.id's bound
_TEST_NAME = "herald-test"

_M = TypeVar("_M", bound=BaseModel)


class BadEnvironment(ValueError):
    """An Environment Herald cannot read; ``str()`` names the field, never the value."""


class BadLedger(ValueError):
    """An unreadable ``herald.dev/notified`` annotation."""


# ---------------------------------------------------------------- parsing


def _describe(exc: ValidationError, prefix: str) -> str:
    """One line naming the first bad field in Kubernetes' spelling, without the input value."""
    err = exc.errors(include_url=False, include_input=False, include_context=False)[0]
    loc = "".join(f"[{part}]" if isinstance(part, int) else f".{to_camel(str(part))}" for part in err["loc"])
    return f"{prefix}{loc}: {err['msg']}"[:_MAX_ERROR_CHARS]


def _validate(model: type[_M], value: Any, prefix: str) -> _M:
    if not isinstance(value, Mapping):
        raise BadEnvironment(f"{prefix}: must be an object")
    try:
        return model.model_validate(dict(value))
    except ValidationError as exc:
        raise BadEnvironment(_describe(exc, prefix)) from None


def parse_environment(
    body: Mapping[str, Any],
) -> tuple[EnvironmentRef, EnvironmentSpec, DeploymentStatus | None]:
    """Read a raw Environment object; the deployment is None when there is nothing to notify yet."""
    if not isinstance(body, Mapping):
        raise BadEnvironment("object: must be an object")
    metadata = body.get("metadata")
    if not isinstance(metadata, Mapping):
        raise BadEnvironment("metadata: must be an object")
    for field in ("uid", "name", "namespace"):
        value = metadata.get(field)
        if not isinstance(value, str) or not value:
            raise BadEnvironment(f"metadata.{field}: must be a non-empty string")
    spec = _validate(EnvironmentSpec, body.get("spec"), "spec")
    try:
        ref = EnvironmentRef(
            uid=metadata["uid"],
            name=metadata["name"],
            namespace=metadata["namespace"],
            type=spec.type,
            cluster_name=spec.cluster_name,
        )
    except ValidationError as exc:
        raise BadEnvironment(_describe(exc, "metadata")) from None
    status = body.get("status")
    if status is None:
        return ref, spec, None
    if not isinstance(status, Mapping):
        raise BadEnvironment("status: must be an object")
    raw_deployment = status.get("deployment")
    if raw_deployment is None:
        return ref, spec, None
    return ref, spec, _validate(DeploymentStatus, raw_deployment, "status.deployment")


# ---------------------------------------------------------------- states to events


def derive_events(deployment: DeploymentStatus, ledger: NotifiedLedger) -> tuple[EventType, ...]:
    """The events to send now for this deployment, in sending order.

    Once an outcome was notified for an id, nothing more is sent for it: one deployment has one
    outcome, and a receiver told "successful" must not later hear "failed" for the same run (a
    controller that re-runs starts a new deployment id). Stop, delete and other states are not
    deployment events.
    """
    notified = ledger.deployments.get(deployment.id, ())
    if _OUTCOMES.intersection(notified):
        return ()
    state = deployment.current_status
    outcome = TERMINAL_EVENTS.get(state)
    if outcome is None and state not in STARTED_STATES:
        return ()
    started = () if EventType.DEPLOYMENT_STARTED in notified else (EventType.DEPLOYMENT_STARTED,)
    return (*started, outcome) if outcome is not None else started


def nothing_new(body: Mapping[str, Any], ledger: NotifiedLedger) -> bool:
    """Whether this version of an Environment certainly derives no event from ``ledger``, read
    without validating the object (its spec, logs and services): the watch echo of Herald's own
    ledger write, or a change of anything but the deployment. Whatever cannot be read this way
    says False, and the whole object is parsed."""
    status = body.get("status")
    if status is None:
        return True
    if not isinstance(status, Mapping):
        return False
    raw = status.get("deployment")
    if raw is None:
        return True
    if not isinstance(raw, Mapping) or not isinstance(raw.get("id"), str) or not raw["id"]:
        return False
    value = raw.get("currentStatus")
    try:
        state = DeploymentState(value) if isinstance(value, str) else None
    except ValueError:
        return False
    if state is None:
        return False
    return not derive_events(DeploymentStatus.model_construct(id=raw["id"], current_status=state), ledger)


def record_events(
    ledger: NotifiedLedger, deployment_id: str, events: Iterable[EventType], *, keep: int = LEDGER_KEEP
) -> NotifiedLedger:
    """The ledger after notifying ``events``: the id becomes the newest, only ``keep`` ids stay.
    A deployment's events are kept in the lifecycle's order (STARTED first), whichever of them
    was stored first."""
    if keep < 1:
        raise ValueError("keep must be at least 1")
    deployments = dict(ledger.deployments)
    notified = deployments.pop(deployment_id, ())
    known = {*notified, *events}
    deployments[deployment_id] = tuple(e for e in EventType if e in known)
    return NotifiedLedger(deployments=dict(list(deployments.items())[-keep:]))


def merge_ledgers(persisted: NotifiedLedger, remembered: NotifiedLedger) -> NotifiedLedger:
    """Both ledgers' events: a watch event can predate this process's own last annotation write,
    so the handler adds what it remembers having notified to what the object says."""
    merged = persisted
    for deployment_id, events in remembered.deployments.items():
        merged = record_events(merged, deployment_id, events)
    return merged


def parse_ledger(raw: str | None) -> NotifiedLedger:
    """Read the annotation; absent or empty means nothing was notified yet."""
    if raw is None or raw == "":
        return NotifiedLedger()
    if not isinstance(raw, str):
        raise BadLedger("must be a string")
    try:
        return NotifiedLedger.model_validate_json(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False, include_context=False)[0]
        where = ".".join(str(part) for part in err["loc"])
        raise BadLedger(f"{where or 'ledger'}: {err['msg']}"[:_MAX_ERROR_CHARS]) from None


def dump_ledger(ledger: NotifiedLedger) -> str:
    """Compact JSON; the order of ``deployments`` is meaningful (oldest first) and kept as is."""
    return json.dumps(
        {"deployments": {key: [e.value for e in events] for key, events in ledger.deployments.items()}},
        separators=(",", ":"),
        ensure_ascii=False,
    )


# ---------------------------------------------------------------- events


def payload_id(env_uid: str, deployment_id: str, event: EventType) -> str:
    """The same id on every attempt, after every restart, so receivers can dedupe."""
    return str(uuid.uuid5(_PAYLOAD_NAMESPACE, f"{env_uid}/{deployment_id}/{event.value}"))


def merge_services(declared: tuple[Service, ...], deployed: tuple[Service, ...]) -> tuple[Service, ...]:
    """The spec's services, each completed by what the deployment says of the one of the same name
    (the spec's fields win: a person wrote them), then the deployed ones the spec does not name."""
    if not deployed:
        return declared
    by_name = {service.name: service for service in deployed}
    merged = [
        Service.model_validate({**_fields(by_name.pop(s.name)), **_fields(s)}) if s.name in by_name else s
        for s in declared
    ]
    return (*merged, *by_name.values())


def _fields(service: Service) -> dict[str, Any]:
    return service.model_dump(mode="json", by_alias=True, exclude_none=True)


def build_event(
    *,
    event_type: EventType,
    environment: EnvironmentRef,
    spec: EnvironmentSpec,
    deployment: DeploymentStatus,
    created_at: datetime.datetime,
) -> DeploymentEvent:
    return DeploymentEvent(
        event_type=event_type,
        payload_id=payload_id(environment.uid, deployment.id, event_type),
        created_at=created_at,
        environment=environment,
        organization=spec.organization,
        project=spec.project,
        # The deployment's applications travel once, merged into the payload's applications.
        deployment=deployment.model_copy(update={"applications": ()})
        if deployment.applications
        else deployment,
        applications=merge_services(spec.applications, deployment.applications),
        databases=spec.databases,
        containers=spec.containers,
        jobs=spec.jobs,
    )


def ping_event(*, webhook: ObjectRef, nonce: str, created_at: datetime.datetime) -> DeploymentEvent:
    """The test delivery a ``herald.dev/ping`` asks for: plainly fake, one payload_id per ping value."""
    test = Named(id=_TEST_NAME, name=_TEST_NAME)
    return DeploymentEvent(
        event_type=EventType.WEBHOOK_TEST,
        payload_id=str(uuid.uuid5(_PING_NAMESPACE, f"{webhook.namespace or ''}/{webhook.name}/{nonce}")),
        created_at=created_at,
        environment=EnvironmentRef(
            uid=_TEST_NAME,
            name=_TEST_NAME,
            namespace=_TEST_NAME,
            type=EnvironmentType.DEVELOPMENT,
            cluster_name=_TEST_NAME,
        ),
        organization=test,
        project=test,
        deployment=DeploymentStatus(
            id=f"test-{nonce}"[:_MAX_DEPLOYMENT_ID],
            current_status=DeploymentState.DEPLOYED,
            desired_status=DeploymentState.DEPLOYED,
            message="Test notification from Herald",
            triggered_by=f"herald.dev/ping on {webhook}",
        ),
    )
