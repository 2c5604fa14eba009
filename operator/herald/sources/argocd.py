"""Argo CD ``Application``: each sync operation is one deployment.

The id is a digest of the Application, the operation's revision and its start time
(``status.operationState``), so a re-sync of the same revision is a new deployment too. The
operation's phase and the Application's health make the state: Running → DEPLOYING; Terminating
→ CANCELING; Succeeded and Healthy → DEPLOYED; Succeeded and Degraded → DEPLOYMENT_ERROR;
Succeeded with any other health (Progressing, Suspended, Missing, Unknown) → still DEPLOYING;
Failed or Error → DEPLOYMENT_ERROR, or CANCELED when Argo CD says the operation was terminated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from herald.models import DeploymentState
from herald.sources.observed import MAX_MESSAGE, Observed, short_hash

__all__ = ["compact", "observe"]

_HEALTH = {"Healthy": DeploymentState.DEPLOYED, "Degraded": DeploymentState.DEPLOYMENT_ERROR}
TERMINATED = "terminated"  # Argo CD's message when a person stops a running operation


def compact(body: Mapping[str, Any]) -> dict[str, Any]:
    """What Herald keeps in memory of an Application: no resource lists, no history."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    operation = dict(status.get("operationState") or {})
    if isinstance(operation.get("syncResult"), Mapping):
        operation["syncResult"] = {
            k: v for k, v in operation["syncResult"].items() if k in ("revision", "revisions")
        }
    return {
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid")},
        "status": {
            "operationState": operation,
            "health": dict(status.get("health") or {}),
            "summary": {"images": list((status.get("summary") or {}).get("images") or ())},
        },
    }


def _revision(operation: Mapping[str, Any]) -> str:
    result = operation.get("syncResult") or {}
    sync = (operation.get("operation") or {}).get("sync") or {}
    for candidate in (result.get("revision"), sync.get("revision")):
        if candidate:
            return str(candidate)
    revisions = result.get("revisions") or sync.get("revisions") or ()
    return ",".join(str(r) for r in revisions)


def _initiator(operation: Mapping[str, Any]) -> str:
    initiated = (operation.get("operation") or {}).get("initiatedBy") or {}
    if initiated.get("automated"):
        return "automated sync"
    return f"sync by {initiated['username']}" if initiated.get("username") else "sync"


def observe(objects: Sequence[Mapping[str, Any]], previous: Mapping[str, Any] | None) -> Observed | None:
    """The Application's latest sync operation as a deployment; None before its first sync."""
    del previous  # every operation names itself
    app = objects[0]
    meta = app.get("metadata") or {}
    status = app.get("status") or {}
    operation = status.get("operationState") or {}
    phase = operation.get("phase")
    if not operation or not phase:
        return None
    revision = _revision(operation)
    started = operation.get("startedAt")
    health = (status.get("health") or {}).get("status") or "Unknown"
    note = str(operation.get("message") or "")
    if phase == "Running":
        state = DeploymentState.DEPLOYING
    elif phase == "Terminating":
        state = DeploymentState.CANCELING
    elif phase == "Succeeded":
        state = _HEALTH.get(health, DeploymentState.DEPLOYING)
        note = f"{note} (health: {health})".strip() if state is not DeploymentState.DEPLOYED else note
        if health == "Degraded" and (status.get("health") or {}).get("message"):
            note = f"{note}: {status['health']['message']}"
    elif phase in ("Failed", "Error"):
        cancelled = TERMINATED in note.lower()
        state = DeploymentState.CANCELED if cancelled else DeploymentState.DEPLOYMENT_ERROR
    else:
        return None
    terminal = state in (DeploymentState.DEPLOYED, DeploymentState.DEPLOYMENT_ERROR, DeploymentState.CANCELED)
    name = str(meta.get("name"))
    return Observed(
        id=f"argocd-{short_hash(str(meta.get('uid')), revision, str(started))}",
        state=state,
        message=f"Application {name}: {_initiator(operation)} of {revision or '?'}: {note}"[:MAX_MESSAGE],
        started_at=started,
        finished_at=operation.get("finishedAt") if terminal else None,
        applications=(
            {
                "name": name,
                "revision": revision,
                "images": list((status.get("summary") or {}).get("images") or ()),
            },
        ),
    )
