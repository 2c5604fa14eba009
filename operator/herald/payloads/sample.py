"""A built-in sample Environment and the events it yields: what ``herald render`` shows by default,
and what a CUSTOM template is tried on when its webhook is applied.

Two samples, so a template is tried on both shapes a real event takes: ``FULL`` sets every
optional field (message, who triggered it, times, logs, services of every kind); ``BARE`` sets
none of them, as a minimal Environment and a controller that reports only states do.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from herald.events import BadEnvironment, build_event, parse_environment
from herald.models import DeploymentEvent, DeploymentState, EventType

__all__ = ["BARE", "FULL", "sample_event"]

CREATED_AT = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)

FULL: Mapping[str, Any] = MappingProxyType(
    {
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "Environment",
        "metadata": {
            "uid": "00000000-0000-4000-8000-000000000001",
            "name": "sample-production",
            "namespace": "sample",
        },
        "spec": {
            "organization": {"id": "org-sample", "name": "Sample Org"},
            "project": {"id": "project-sample", "name": "sample-shop"},
            "type": "PRODUCTION",
            "clusterName": "sample-cluster",
            "applications": [{"id": "app-1", "name": "storefront", "commitId": "3f9a2c1"}],
            "databases": [{"id": "db-1", "name": "orders-db", "type": "POSTGRESQL", "version": "16"}],
            "containers": [{"name": "worker", "image": "registry.example/worker:1.4.2"}],
            "jobs": [{"name": "migrate"}],
        },
        "status": {
            "deployment": {
                "id": "sample-deployment-1",
                "currentStatus": "DEPLOYED",
                "desiredStatus": "DEPLOYED",
                "message": "Sample deployment",
                "triggeredBy": "someone@example.com",
                "startedAt": "2026-01-01T11:59:00Z",
                "finishedAt": "2026-01-01T12:00:00Z",
                "logs": ["11:59:10 building storefront", "11:59:50 storefront ready"],
            }
        },
    }
)

BARE: Mapping[str, Any] = MappingProxyType(
    {
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "Environment",
        "metadata": {"uid": "00000000-0000-4000-8000-000000000002", "name": "sample", "namespace": "sample"},
        "spec": {
            "organization": {"name": "Sample Org"},
            "project": {"name": "sample"},
            "type": "DEVELOPMENT",
        },
        "status": {"deployment": {"id": "sample-deployment-2", "currentStatus": "DEPLOYING"}},
    }
)

# The state a deployment is in when each event fires, so a sample is a plausible event.
_STATES: Mapping[EventType, DeploymentState] = MappingProxyType(
    {
        EventType.DEPLOYMENT_STARTED: DeploymentState.DEPLOYING,
        EventType.DEPLOYMENT_SUCCESSFUL: DeploymentState.DEPLOYED,
        EventType.DEPLOYMENT_FAILURE: DeploymentState.DEPLOYMENT_ERROR,
        EventType.DEPLOYMENT_CANCELLED: DeploymentState.CANCELED,
        EventType.WEBHOOK_TEST: DeploymentState.DEPLOYED,
    }
)


def sample_event(
    event_type: EventType,
    environment: Mapping[str, Any] = FULL,
    *,
    created_at: datetime.datetime = CREATED_AT,
) -> DeploymentEvent:
    """The event ``environment`` would yield. An Environment without a deployment in its status (a
    manifest as written) gets the full sample's, in the state the event fires in; one without a
    uid or namespace (not yet applied) gets placeholders. ``BadEnvironment`` for anything else."""
    body = dict(environment)
    metadata = body.get("metadata")
    if isinstance(metadata, Mapping):
        body["metadata"] = {"uid": f"uid-of-{metadata.get('name')}", "namespace": "default", **metadata}
    status = body.get("status")
    if (
        environment is FULL
        or environment is BARE
        or not (isinstance(status, Mapping) and status.get("deployment"))
    ):
        base = BARE if environment is BARE else FULL
        deployment = {**base["status"]["deployment"], "currentStatus": _STATES[event_type].value}
        body["status"] = {"deployment": deployment}
    ref, spec, deployment_status = parse_environment(body)
    if deployment_status is None:  # excluded above; kept for the type checker
        raise BadEnvironment("status.deployment: missing")
    return build_event(
        event_type=event_type, environment=ref, spec=spec, deployment=deployment_status, created_at=created_at
    )
