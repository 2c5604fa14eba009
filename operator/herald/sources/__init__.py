"""Deployment sources: from the objects a cluster already runs to an Environment's ``status.deployment``.

One small module per source reduces its objects to an ``Observed`` (``deployments``, ``argocd``,
``flux``); ``SOURCES`` maps each ``spec.source`` field to its module, API and flag name, so the
CRD, the flag and the code name the same things. ``decide`` turns what a source observed and the
Environment's current status into what Herald writes: the deployment and the ``SourceReady``
condition. Everything here is pure; the kopf shell (``herald.source_handlers``) feeds it.

Rules shared by every source:

- Herald marks what it writes (``triggeredBy: herald/<source>``). A ``status.deployment`` without
  the mark was written by someone else: that is a conflict, reported, never overwritten.
- A finished deployment stays as it finished (a later health change does not rewrite history).
- A deployment replaced before it finished (a rollout undone or superseded mid-way) is closed as
  DEPLOYMENT_ERROR first; the next one is written once that has been seen, so the failure is
  notified before the new deployment starts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from herald.events import STARTED_STATES, TERMINAL_EVENTS
from herald.models import DeploymentState
from herald.settings import SourceName
from herald.sources import argocd, deployments, flux
from herald.sources.observed import Observed

__all__ = [
    "CONDITION",
    "FIELDS",
    "MARKER",
    "SOURCES",
    "SOURCE_NAMES",
    "Source",
    "Verdict",
    "decide",
    "disabled",
    "invalid",
    "status_patch",
    "without_condition",
]

MARKER = "herald/"  # triggeredBy of every status.deployment Herald writes: herald/<spec.source field>
CONDITION = "SourceReady"
# Every field of status.deployment Herald owns: a merge patch sets the absent ones to null.
FIELDS = (
    "id",
    "currentStatus",
    "desiredStatus",
    "message",
    "startedAt",
    "finishedAt",
    "triggeredBy",
    "applications",
    "logs",
)
_IN_FLIGHT = STARTED_STATES | {DeploymentState.CANCELING}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Source:
    """One ``spec.source`` field: the flag that turns it on, the kind it watches, its mapping."""

    flag: SourceName  # the name --sources / HERALD_SOURCES uses
    group: str
    version: str
    plural: str
    kind: str
    observe: Callable[[Sequence[Mapping[str, Any]], Mapping[str, Any] | None], Observed | None]
    compact: Callable[[Mapping[str, Any]], dict[str, Any]]


SOURCES: Mapping[str, Source] = {
    "deployments": Source(
        flag="deployments",
        group="apps",
        version="v1",
        plural="deployments",
        kind="Deployment",
        observe=deployments.observe,
        compact=deployments.compact,
    ),
    "argoCDApplication": Source(
        flag="argocd",
        group="argoproj.io",
        version="v1alpha1",
        plural="applications",
        kind="Application",
        observe=argocd.observe,
        compact=argocd.compact,
    ),
    "fluxKustomization": Source(
        flag="flux",
        group="kustomize.toolkit.fluxcd.io",
        version="v1",
        plural="kustomizations",
        kind="Kustomization",
        observe=flux.observe,
        compact=flux.compact,
    ),
    "fluxHelmRelease": Source(
        flag="flux",
        group="helm.toolkit.fluxcd.io",
        version="v2",
        plural="helmreleases",
        kind="HelmRelease",
        observe=flux.observe,
        compact=flux.compact,
    ),
}
SOURCE_NAMES: tuple[SourceName, ...] = tuple(dict.fromkeys(s.flag for s in SOURCES.values()))


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What to write: a new status.deployment (None: leave it) and the SourceReady condition.

    ``deployment`` holds the fields as the object should have them; ``status_patch`` nulls the rest.
    """

    deployment: dict[str, Any] | None
    condition: tuple[str, str, str]  # status, reason, message


def ours(deployment: Mapping[str, Any]) -> bool:
    return str(deployment.get("triggeredBy") or "").startswith(MARKER)


def _state(deployment: Mapping[str, Any]) -> DeploymentState | None:
    try:
        return DeploymentState(str(deployment.get("currentStatus")))
    except ValueError:
        return None


def _changed(current: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    return current is None or any(current.get(k) != new.get(k) for k in FIELDS)


def _settle(
    observed: Observed, current: Mapping[str, Any] | None, field: str, now: str
) -> dict[str, Any] | None:
    """The status.deployment to write after ``current`` (Herald's own), or None to leave it."""
    same = current is not None and current.get("id") == observed.id
    state = None if current is None else _state(current)
    if same and state in TERMINAL_EVENTS:
        return None  # finished as it finished
    if current is not None and not same and state in _IN_FLIGHT:
        return {
            **{k: current[k] for k in FIELDS if current.get(k) is not None},
            "currentStatus": DeploymentState.DEPLOYMENT_ERROR.value,
            "message": f"replaced by deployment {observed.id} before it finished",
            "finishedAt": now,
        }
    terminal = observed.state in TERMINAL_EVENTS
    started = (current or {}).get("startedAt") if same else None
    finished = observed.finished_at or ((current or {}).get("finishedAt") if same else None)
    new: dict[str, Any] = {
        "id": observed.id,
        "currentStatus": observed.state.value,
        "desiredStatus": DeploymentState.DEPLOYED.value,
        "message": observed.message,
        "startedAt": started or observed.started_at or now,
        "triggeredBy": f"{MARKER}{field}",
        "applications": [dict(a) for a in observed.applications],
    }
    if terminal:
        new["finishedAt"] = finished or now
    return new if _changed(current, new) else None


def _what(field: str, namespace: str, name: str | None) -> str:
    source = SOURCES[field]
    if name is None:
        return f"{source.kind}s in namespace {namespace} selected by spec.source.{field}.selector"
    return f"{source.kind} {namespace}/{name}"


def decide(
    field: str,
    objects: Sequence[Mapping[str, Any]],
    current: Mapping[str, Any] | None,
    *,
    namespace: str,
    name: str | None,
    now: str,
) -> Verdict:
    """What Herald writes for an Environment whose ``spec.source.<field>`` names these objects.

    ``namespace``/``name`` say where the objects are (``name`` is None for a label selection),
    for the condition's message; ``current`` is the Environment's ``status.deployment``.
    """
    what = _what(field, namespace, name)
    if current is not None and not ours(current):
        writer = current.get("triggeredBy") or "a writer that does not set triggeredBy"
        return Verdict(
            None,
            (
                "False",
                "SourceConflict",
                f"status.deployment is written by someone else ({writer}), so Herald does not write it "
                f"from {what}: stop the other writer and clear status.deployment, or remove spec.source",
            ),
        )
    if not objects:
        return Verdict(None, ("False", "NotFound", f"no {what} found (in the namespaces Herald watches)"))
    observed = SOURCES[field].observe(objects, current)
    tracking = ("True", "Tracking", f"status.deployment follows {what}")
    if observed is None:
        return Verdict(None, tracking)
    return Verdict(_settle(observed, current, field, now), tracking)


def disabled(field: str) -> Verdict:
    flag = SOURCES[field].flag
    return Verdict(
        None,
        (
            "False",
            "SourceDisabled",
            f"the {flag} source is not running: its API is not served, Herald may not read it, or "
            f"--sources / HERALD_SOURCES leaves it out (see deploy/components/sources)",
        ),
    )


def invalid(message: str) -> Verdict:
    return Verdict(None, ("False", "InvalidSource", message))


def status_patch(
    verdict: Verdict, status: Mapping[str, Any] | None, now: str, *, generation: int | None = None
) -> dict[str, Any] | None:
    """The merge patch of the Environment's status that applies ``verdict``; None when it changes nothing."""
    patch: dict[str, Any] = {}
    if verdict.deployment is not None:
        patch["deployment"] = {k: verdict.deployment.get(k) for k in FIELDS}
    conditions = [c for c in (status or {}).get("conditions") or () if isinstance(c, Mapping)]
    old = next((c for c in conditions if c.get("type") == CONDITION), None)
    state, reason, message = verdict.condition
    if old is None or (old.get("status"), old.get("reason"), old.get("message")) != verdict.condition:
        changed = old is None or old.get("status") != state
        entry: dict[str, Any] = {
            "type": CONDITION,
            "status": state,
            "reason": reason,
            "message": message,
            "lastTransitionTime": now if changed or old is None else old.get("lastTransitionTime", now),
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        patch["conditions"] = [
            *(dict(c) for c in conditions if c.get("type") != CONDITION),
            entry,
        ]
    return patch or None


def without_condition(status: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The patch removing Herald's SourceReady condition (the source was removed); None without one."""
    conditions = [c for c in (status or {}).get("conditions") or () if isinstance(c, Mapping)]
    if not any(c.get("type") == CONDITION for c in conditions):
        return None
    return {"conditions": [dict(c) for c in conditions if c.get("type") != CONDITION]}
