"""Flux ``Kustomization`` and ``HelmRelease``: each new revision attempted is one deployment.

The id is a digest of the object and its ``status.lastAttemptedRevision`` (for a HelmRelease
also ``lastAttemptedConfigDigest``, so new values are a new deployment); a retry of the same
revision is the same deployment. The ``Ready`` condition makes the state: Unknown (or absent) →
DEPLOYING, True → DEPLOYED, False → DEPLOYMENT_ERROR, except ``DependencyNotReady`` (Flux waits
for a ``dependsOn`` object and tries again) which stays DEPLOYING.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from herald.models import DeploymentState
from herald.sources.observed import MAX_MESSAGE, Observed, condition, short_hash

__all__ = ["compact", "observe"]

WAITING_REASONS = frozenset({"DependencyNotReady"})
_STATUS_FIELDS = (
    "lastAttemptedRevision",
    "lastAppliedRevision",
    "lastAttemptedConfigDigest",
    "observedGeneration",
    "conditions",
)


def compact(body: Mapping[str, Any]) -> dict[str, Any]:
    """What Herald keeps in memory of a Kustomization or HelmRelease (no inventory, no history)."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    chart = ((spec.get("chart") or {}).get("spec") or {}).get("chart")
    return {
        "kind": body.get("kind"),
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid")},
        "spec": {"releaseName": spec.get("releaseName"), "chart": {"spec": {"chart": chart}}},
        "status": {k: status[k] for k in _STATUS_FIELDS if k in status},
    }


def _application(obj: Mapping[str, Any], revision: str) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    if obj.get("kind") == "HelmRelease":
        chart = ((spec.get("chart") or {}).get("spec") or {}).get("chart")
        release = {"name": spec.get("releaseName") or meta.get("name"), "version": revision}
        return {**release, "chart": chart} if chart else release
    return {"name": meta.get("name"), "revision": revision}


def observe(objects: Sequence[Mapping[str, Any]], previous: Mapping[str, Any] | None) -> Observed | None:
    """The revision Flux last attempted, as a deployment; None before its first attempt."""
    del previous  # every attempted revision names itself
    obj = objects[0]
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    revision = status.get("lastAttemptedRevision")
    if not revision:
        return None
    kind = str(obj.get("kind") or "Kustomization")
    ready = condition(status, "Ready")
    verdict = (ready or {}).get("status", "Unknown")
    if verdict == "True":
        state = DeploymentState.DEPLOYED
    elif verdict == "False" and (ready or {}).get("reason") not in WAITING_REASONS:
        state = DeploymentState.DEPLOYMENT_ERROR
    else:
        state = DeploymentState.DEPLOYING
    note = str((ready or {}).get("message") or "reconciling")
    digest = str(status.get("lastAttemptedConfigDigest") or "")
    return Observed(
        id=f"flux-{short_hash(kind, str(meta.get('uid')), str(revision), digest)}",
        state=state,
        message=f"{kind} {meta.get('name')} {revision}: {note}"[:MAX_MESSAGE],
        finished_at=(ready or {}).get("lastTransitionTime")
        if state is not DeploymentState.DEPLOYING
        else None,
        applications=(_application(obj, str(revision)),),
    )
