"""apps/v1 Deployments selected by label: one rollout of any of them is one deployment.

The deployment id is a digest of each selected Deployment's uid and revision (the
``deployment.kubernetes.io/revision`` annotation the Deployment controller bumps when it rolls out
a new pod template, a rollback and ``kubectl rollout restart`` included). Scaling, or pods
restarting without a template change, leaves every revision as it was: no new deployment. The
revision is read only once the controller has observed the Deployment's latest spec
(``status.observedGeneration``), so a spec change is never judged against the previous revision.

Progress follows ``kubectl rollout status``: ``ProgressDeadlineExceeded`` is a failure; fewer
updated replicas than wanted, old replicas still running, or updated replicas not yet available
is a rollout in progress; otherwise the Deployment is rolled out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from herald.models import DeploymentState
from herald.sources.observed import MAX_MESSAGE, Observed, condition, short_hash

__all__ = ["REVISION", "compact", "observe"]

REVISION = "deployment.kubernetes.io/revision"
TIMED_OUT = "ProgressDeadlineExceeded"
COMPLETE = "NewReplicaSetAvailable"


def compact(body: Mapping[str, Any]) -> dict[str, Any]:
    """What Herald keeps in memory of a Deployment: no pod spec beyond the containers' images."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or ()
    return {
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "generation": meta.get("generation"),
            "labels": dict(meta.get("labels") or {}),
            "annotations": {k: v for k, v in (meta.get("annotations") or {}).items() if k == REVISION},
        },
        "spec": {
            "replicas": spec.get("replicas"),
            "template": {"spec": {"containers": [{"image": c.get("image")} for c in containers]}},
        },
        "status": dict(body.get("status") or {}),
    }


def _rollout(deployment: Mapping[str, Any]) -> tuple[DeploymentState, str] | None:
    """One Deployment's rollout, as ``kubectl rollout status`` judges it; None until observed."""
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    name = meta.get("name", "?")
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        return None
    if not (meta.get("annotations") or {}).get(REVISION):
        return None
    progressing = condition(status, "Progressing")
    if progressing is not None and progressing.get("reason") == TIMED_OUT:
        return DeploymentState.DEPLOYMENT_ERROR, (
            f"Deployment {name} exceeded its progress deadline: {progressing.get('message', '')}".strip()
        )
    wanted = spec.get("replicas")
    wanted = 1 if wanted is None else int(wanted)
    updated = int(status.get("updatedReplicas") or 0)
    replicas = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if updated < wanted:
        return DeploymentState.DEPLOYING, f"Deployment {name}: {updated} of {wanted} new replicas updated"
    if replicas > updated:
        return DeploymentState.DEPLOYING, (
            f"Deployment {name}: {replicas - updated} old replicas are pending termination"
        )
    if available < updated:
        return DeploymentState.DEPLOYING, (
            f"Deployment {name}: {available} of {updated} updated replicas are available"
        )
    return DeploymentState.DEPLOYED, f"Deployment {name} successfully rolled out"


def _application(deployment: Mapping[str, Any]) -> dict[str, Any]:
    meta = deployment.get("metadata") or {}
    containers = (((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers")
    return {
        "name": meta.get("name"),
        "id": meta.get("uid"),
        "revision": str((meta.get("annotations") or {}).get(REVISION)),
        "images": [c.get("image") for c in containers or () if c.get("image")],
    }


def _key(application: Mapping[str, Any]) -> str:
    return f"{application.get('id')}/{application.get('revision')}"


def _progress_time(deployment: Mapping[str, Any]) -> str | None:
    progressing = condition(deployment.get("status") or {}, "Progressing")
    return None if progressing is None else progressing.get("lastUpdateTime")


def observe(objects: Sequence[Mapping[str, Any]], previous: Mapping[str, Any] | None) -> Observed | None:
    """The deployment the selected Deployments make together; None while one is not observed yet.

    ``previous`` is the status.deployment Herald wrote last: when the selection only lost
    Deployments (one deleted or relabelled), that is no new rollout and the id stays.
    """
    deployments = sorted(objects, key=lambda d: str((d.get("metadata") or {}).get("name")))
    rollouts = [_rollout(d) for d in deployments]
    if not deployments or any(r is None for r in rollouts):
        return None
    judged = [(d, r) for d, r in zip(deployments, rollouts, strict=True) if r is not None]
    applications = tuple(_application(d) for d in deployments)
    keys = {_key(a) for a in applications}
    before = {_key(a) for a in (previous or {}).get("applications") or () if isinstance(a, Mapping)}
    if previous is not None and previous.get("id") and keys <= before:
        deployment_id = str(previous["id"])
    else:
        deployment_id = f"rollout-{short_hash(*sorted(keys))}"
    states = {s for _, (s, _) in judged}
    # The worst of them: one failure fails the deployment, one rollout in progress keeps it going.
    state = next(
        s
        for s in (DeploymentState.DEPLOYMENT_ERROR, DeploymentState.DEPLOYING, DeploymentState.DEPLOYED)
        if s in states
    )
    chosen = [(d, m) for d, (s, m) in judged if s is state]
    finished = None
    if state is not DeploymentState.DEPLOYING:
        times = [t for t in (_progress_time(d) for d, _ in chosen) if t]
        finished = max(times) if times else None
    return Observed(
        id=deployment_id,
        state=state,
        message="; ".join(m for _, m in chosen)[:MAX_MESSAGE],
        finished_at=finished,
        applications=applications,
    )
