"""Each source's mapping, table-tested over objects shaped as their controllers write them.

Shapes: Kubernetes' Deployment status (observedGeneration, updatedReplicas, availableReplicas,
the Progressing and Available conditions and their reasons); Argo CD's Application
``status.operationState`` / ``health`` / ``summary``; Flux's ``lastAttemptedRevision`` and
``Ready`` condition on Kustomization and HelmRelease.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from herald.events import derive_events
from herald.models import DeploymentState, DeploymentStatus, EnvironmentSource, NotifiedLedger
from herald.sources import (
    CONDITION,
    FIELDS,
    MARKER,
    SOURCE_NAMES,
    SOURCES,
    argocd,
    decide,
    deployments,
    disabled,
    flux,
    invalid,
    status_patch,
    without_condition,
)

NOW = "2026-03-01T10:00:00Z"
LATER = "2026-03-01T10:05:00Z"
S = DeploymentState


# ---------------------------------------------------------------- Deployments


def deployment(
    name: str = "web",
    *,
    revision: str = "2",
    generation: int = 3,
    observed: int = 3,
    replicas: int = 3,
    updated: int = 3,
    total: int = 3,
    available: int = 3,
    progressing: tuple[str, str] = ("True", "NewReplicaSetAvailable"),
    image: str = "ghcr.io/acme/web:1.4.2",
    uid: str | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Deployment as the API server returns it after the Deployment controller's status write."""
    status, reason = progressing
    messages = {
        "NewReplicaSetAvailable": f'ReplicaSet "{name}-5d4f8c7b9" has successfully progressed.',
        "ReplicaSetUpdated": f'ReplicaSet "{name}-5d4f8c7b9" is progressing.',
        "NewReplicaSetCreated": f'Created new replica set "{name}-5d4f8c7b9"',
        "ProgressDeadlineExceeded": f'ReplicaSet "{name}-5d4f8c7b9" has timed out progressing.',
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": "team-a",
            "uid": uid or f"uid-{name}",
            "generation": generation,
            "resourceVersion": "81234",
            "labels": labels if labels is not None else {"app.kubernetes.io/part-of": "shop"},
            "annotations": {"deployment.kubernetes.io/revision": revision, "meta.helm.sh/release-name": "x"},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "progressDeadlineSeconds": 600,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {"name": name, "image": image, "ports": [{"containerPort": 8080}]},
                        {"name": "proxy", "image": "envoyproxy/envoy:v1.30.1"},
                    ]
                },
            },
        },
        "status": {
            "observedGeneration": observed,
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": available,
            "availableReplicas": available,
            "conditions": [
                {
                    "type": "Available",
                    "status": "True",
                    "reason": "MinimumReplicasAvailable",
                    "message": "Deployment has minimum availability.",
                    "lastUpdateTime": "2026-03-01T09:58:00Z",
                    "lastTransitionTime": "2026-03-01T09:58:00Z",
                },
                {
                    "type": "Progressing",
                    "status": status,
                    "reason": reason,
                    "message": messages[reason],
                    "lastUpdateTime": "2026-03-01T09:59:30Z",
                    "lastTransitionTime": "2026-02-01T08:00:00Z",
                },
            ],
        },
    }


ROLLING = {"updated": 1, "total": 4, "available": 3, "progressing": ("True", "ReplicaSetUpdated")}


@pytest.mark.parametrize(
    ("case", "changes", "state", "message"),
    [
        ("rolled out", {}, S.DEPLOYED, "Deployment web successfully rolled out"),
        (
            "new replica set created",
            {"updated": 0, "progressing": ("True", "NewReplicaSetCreated")},
            S.DEPLOYING,
            "0 of 3 new replicas updated",
        ),
        ("replicas being updated", ROLLING, S.DEPLOYING, "1 of 3 new replicas updated"),
        (
            "old replicas terminating",
            {"total": 4, "progressing": ("True", "ReplicaSetUpdated")},
            S.DEPLOYING,
            "1 old replicas are pending termination",
        ),
        (
            "updated but not yet available",
            {"available": 2, "progressing": ("True", "ReplicaSetUpdated")},
            S.DEPLOYING,
            "2 of 3 updated replicas are available",
        ),
        (
            "progress deadline exceeded",
            {**ROLLING, "progressing": ("False", "ProgressDeadlineExceeded")},
            S.DEPLOYMENT_ERROR,
            "exceeded its progress deadline",
        ),
        (
            "scaled to zero",
            {"replicas": 0, "updated": 0, "total": 0, "available": 0},
            S.DEPLOYED,
            "rolled out",
        ),
    ],
)
def test_one_deployment(case: str, changes: dict[str, Any], state: DeploymentState, message: str) -> None:
    observed = deployments.observe([deployment(**changes)], None)
    assert observed is not None, case
    assert observed.state is state
    assert message in observed.message
    assert observed.applications == (
        {
            "name": "web",
            "id": "uid-web",
            "revision": "2",
            "images": ["ghcr.io/acme/web:1.4.2", "envoyproxy/envoy:v1.30.1"],
        },
    )


def test_finished_at_is_when_the_controller_last_reported_progress() -> None:
    done = deployments.observe([deployment()], None)
    going = deployments.observe([deployment(**ROLLING)], None)
    assert done is not None
    assert going is not None
    assert done.finished_at == "2026-03-01T09:59:30Z"
    assert going.finished_at is None


@pytest.mark.parametrize(
    "changes",
    [
        {"generation": 4, "observed": 3},  # the controller has not seen the new spec yet
    ],
)
def test_unobserved_spec_is_not_judged(changes: dict[str, Any]) -> None:
    assert deployments.observe([deployment(**changes)], None) is None
    assert deployments.observe([deployment(), deployment("api", **changes)], None) is None


def test_no_revision_yet_is_not_judged() -> None:
    fresh = deployment()
    del fresh["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
    assert deployments.observe([fresh], None) is None


def test_id_changes_with_a_revision_and_only_with_one() -> None:
    base = deployments.observe([deployment()], None)
    scaled = deployments.observe(
        [deployment(replicas=5, updated=5, total=5, available=5, generation=4, observed=4)], None
    )
    restarted_pods = deployments.observe(
        [deployment(available=2, progressing=("True", "NewReplicaSetAvailable"))], None
    )
    new_template = deployments.observe([deployment(revision="3", image="ghcr.io/acme/web:1.5.0")], None)
    recreated = deployments.observe([deployment(uid="uid-web-2")], None)
    assert base is not None
    assert scaled is not None
    assert restarted_pods is not None
    assert new_template is not None
    assert recreated is not None
    assert base.id == scaled.id == restarted_pods.id
    assert len({base.id, new_template.id, recreated.id}) == 3
    assert base.id.startswith("rollout-")
    assert len(base.id) <= 253


def test_many_deployments_take_the_worst_state_and_name_every_image() -> None:
    web, api = deployment(), deployment("api", image="ghcr.io/acme/api:2.0.0", **ROLLING)
    observed = deployments.observe([web, api], None)
    assert observed is not None
    assert observed.state is S.DEPLOYING
    assert observed.message == "Deployment api: 1 of 3 new replicas updated"
    assert [a["name"] for a in observed.applications] == ["api", "web"]
    failing = deployment("api", **{**ROLLING, "progressing": ("False", "ProgressDeadlineExceeded")})
    failed = deployments.observe([web, failing], None)
    assert failed is not None
    assert failed.state is S.DEPLOYMENT_ERROR
    assert deployments.observe([api, web], None) == observed  # order of the watch does not matter


def test_a_deployment_leaving_the_selection_is_not_a_new_rollout() -> None:
    both = deployments.observe([deployment(), deployment("api")], None)
    assert both is not None
    previous = {"id": both.id, "applications": list(both.applications)}
    one = deployments.observe([deployment()], previous)
    assert one is not None
    assert one.id == both.id
    grown = deployments.observe([deployment(), deployment("api"), deployment("worker")], previous)
    assert grown is not None
    assert grown.id != both.id


def test_compact_keeps_what_the_mapping_reads_and_drops_the_rest() -> None:
    full = deployment(**ROLLING)
    small = deployments.compact(full)
    assert deployments.observe([small], None) == deployments.observe([full], None)
    assert "meta.helm.sh/release-name" not in str(small)
    assert "ports" not in str(small)


# ---------------------------------------------------------------- Argo CD


def application(
    phase: str | None = "Succeeded",
    health: str = "Healthy",
    *,
    revision: str = "8f9c2d1e4b7a6c5d3e2f1a0b9c8d7e6f5a4b3c2d",
    started: str = "2026-03-01T09:58:00Z",
    message: str = "successfully synced (all tasks run)",
) -> dict[str, Any]:
    """An Argo CD Application with a sync operation, as the application controller writes it."""
    status: dict[str, Any] = {
        "sync": {"status": "Synced", "revision": revision},
        "health": {"status": health},
        "summary": {"images": ["ghcr.io/acme/web:1.4.2", "redis:7.2"]},
        "reconciledAt": "2026-03-01T09:59:00Z",
        "resources": [
            {"kind": "Deployment", "name": "web", "status": "Synced", "health": {"status": health}}
        ],
        "history": [{"id": 7, "revision": revision, "deployedAt": "2026-03-01T09:59:00Z"}],
    }
    if phase is not None:
        status["operationState"] = {
            "operation": {
                "sync": {"revision": revision},
                "initiatedBy": {"automated": True},
                "retry": {"limit": 5},
            },
            "phase": phase,
            "message": message,
            "startedAt": started,
            **({"finishedAt": "2026-03-01T09:59:00Z"} if phase not in ("Running", "Terminating") else {}),
            "syncResult": {
                "revision": revision,
                "resources": [
                    {"kind": "Deployment", "name": "web", "status": "Synced", "message": "configured"}
                ],
                "source": {"repoURL": "https://github.com/acme/shop", "path": "deploy"},
            },
        }
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": "shop", "namespace": "argocd", "uid": "uid-shop"},
        "spec": {"project": "default", "destination": {"namespace": "team-a"}},
        "status": status,
    }


@pytest.mark.parametrize(
    ("phase", "health", "message", "state"),
    [
        ("Running", "Progressing", "one or more tasks are running", S.DEPLOYING),
        ("Terminating", "Progressing", "", S.CANCELING),
        ("Succeeded", "Healthy", "successfully synced (all tasks run)", S.DEPLOYED),
        ("Succeeded", "Progressing", "successfully synced (all tasks run)", S.DEPLOYING),
        ("Succeeded", "Suspended", "successfully synced (all tasks run)", S.DEPLOYING),
        ("Succeeded", "Degraded", "successfully synced (all tasks run)", S.DEPLOYMENT_ERROR),
        ("Failed", "Healthy", "one or more objects failed to apply", S.DEPLOYMENT_ERROR),
        ("Error", "Unknown", "ComparisonError: rpc error", S.DEPLOYMENT_ERROR),
        ("Failed", "Progressing", "Operation terminated", S.CANCELED),
    ],
)
def test_argocd_operation(phase: str, health: str, message: str, state: DeploymentState) -> None:
    observed = argocd.observe([application(phase, health, message=message)], None)
    assert observed is not None
    assert observed.state is state
    assert observed.started_at == "2026-03-01T09:58:00Z"
    terminal = state in (S.DEPLOYED, S.DEPLOYMENT_ERROR, S.CANCELED)
    assert observed.finished_at == ("2026-03-01T09:59:00Z" if terminal else None)
    assert "automated sync of 8f9c2d1e4b7a" in observed.message
    assert observed.applications[0]["images"] == ["ghcr.io/acme/web:1.4.2", "redis:7.2"]


def test_argocd_without_a_sync_yet_says_nothing() -> None:
    assert argocd.observe([application(None)], None) is None


def test_argocd_id_is_the_operation() -> None:
    first = argocd.observe([application("Running")], None)
    done = argocd.observe([application()], None)
    resync = argocd.observe([application(started="2026-03-01T11:00:00Z")], None)
    other = argocd.observe([application(revision="0" * 40)], None)
    assert first is not None
    assert done is not None
    assert resync is not None
    assert other is not None
    assert first.id == done.id
    assert len({done.id, resync.id, other.id}) == 3


def test_argocd_compact_drops_resources_and_history() -> None:
    full = application()
    small = argocd.compact(full)
    assert argocd.observe([small], None) == argocd.observe([full], None)
    assert "resources" not in str(small)
    assert "history" not in str(small)


# ---------------------------------------------------------------- Flux


def kustomization(
    ready: str | None, reason: str = "", *, revision: str = "main@sha1:4b8e2f1"
) -> dict[str, Any]:
    """A Flux Kustomization as kustomize-controller writes its status."""
    conditions = []
    if ready is not None:
        conditions.append(
            {
                "type": "Ready",
                "status": ready,
                "reason": reason,
                "message": {"ReconciliationSucceeded": f"Applied revision: {revision}"}.get(
                    reason, "health check failed"
                ),
                "lastTransitionTime": "2026-03-01T09:59:00Z",
                "observedGeneration": 2,
            }
        )
    return {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": "shop", "namespace": "flux-system", "uid": "uid-ks", "generation": 2},
        "spec": {
            "interval": "10m",
            "path": "./deploy",
            "sourceRef": {"kind": "GitRepository", "name": "shop"},
        },
        "status": {
            "observedGeneration": 2,
            "lastAttemptedRevision": revision,
            "lastAppliedRevision": "main@sha1:0000000",
            "conditions": conditions,
            "inventory": {"entries": [{"id": "team-a_web_apps_Deployment", "v": "v1"}]},
        },
    }


def helmrelease(ready: str, reason: str, *, digest: str = "sha256:aa11") -> dict[str, Any]:
    """A Flux HelmRelease (v2) as helm-controller writes its status."""
    return {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": "shop", "namespace": "team-a", "uid": "uid-hr", "generation": 5},
        "spec": {"releaseName": "shop-web", "chart": {"spec": {"chart": "web", "version": ">=1.0.0"}}},
        "status": {
            "observedGeneration": 5,
            "lastAttemptedRevision": "1.4.2",
            "lastAttemptedConfigDigest": digest,
            "lastAttemptedGeneration": 5,
            "conditions": [
                {
                    "type": "Ready",
                    "status": ready,
                    "reason": reason,
                    "message": "Helm upgrade succeeded",
                    "lastTransitionTime": "2026-03-01T09:59:00Z",
                },
            ],
            "history": [{"chartName": "web", "chartVersion": "1.4.2", "status": "deployed"}],
        },
    }


@pytest.mark.parametrize(
    ("ready", "reason", "state"),
    [
        (None, "", S.DEPLOYING),
        ("Unknown", "Progressing", S.DEPLOYING),
        ("True", "ReconciliationSucceeded", S.DEPLOYED),
        ("False", "HealthCheckFailed", S.DEPLOYMENT_ERROR),
        ("False", "BuildFailed", S.DEPLOYMENT_ERROR),
        ("False", "DependencyNotReady", S.DEPLOYING),
    ],
)
def test_flux_kustomization(ready: str | None, reason: str, state: DeploymentState) -> None:
    observed = flux.observe([kustomization(ready, reason)], None)
    assert observed is not None
    assert observed.state is state
    assert observed.applications == ({"name": "shop", "revision": "main@sha1:4b8e2f1"},)
    assert observed.finished_at == (None if state is S.DEPLOYING else "2026-03-01T09:59:00Z")


@pytest.mark.parametrize(
    ("ready", "reason", "state"),
    [
        ("Unknown", "Progressing", S.DEPLOYING),
        ("True", "UpgradeSucceeded", S.DEPLOYED),
        ("False", "UpgradeFailed", S.DEPLOYMENT_ERROR),
        ("False", "InstallFailed", S.DEPLOYMENT_ERROR),
    ],
)
def test_flux_helmrelease(ready: str, reason: str, state: DeploymentState) -> None:
    observed = flux.observe([helmrelease(ready, reason)], None)
    assert observed is not None
    assert observed.state is state
    assert observed.applications == ({"name": "shop-web", "version": "1.4.2", "chart": "web"},)


def test_flux_id_is_the_attempted_revision_and_values() -> None:
    a = flux.observe([kustomization("Unknown", "Progressing")], None)
    b = flux.observe([kustomization("True", "ReconciliationSucceeded")], None)
    c = flux.observe([kustomization("True", "ReconciliationSucceeded", revision="main@sha1:9d9d9d9")], None)
    h1 = flux.observe([helmrelease("True", "UpgradeSucceeded")], None)
    h2 = flux.observe([helmrelease("True", "UpgradeSucceeded", digest="sha256:bb22")], None)
    assert a is not None
    assert b is not None
    assert c is not None
    assert h1 is not None
    assert h2 is not None
    assert a.id == b.id != c.id
    assert h1.id != h2.id


def test_flux_before_the_first_attempt_says_nothing() -> None:
    fresh = kustomization(None)
    del fresh["status"]["lastAttemptedRevision"]
    assert flux.observe([fresh], None) is None
    assert flux.observe(
        [flux.compact(kustomization("True", "ReconciliationSucceeded"))], None
    ) == flux.observe([kustomization("True", "ReconciliationSucceeded")], None)


# ---------------------------------------------------------------- the shared rules


def ours(state: str, deployment_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": deployment_id,
        "currentStatus": state,
        "desiredStatus": "DEPLOYED",
        "startedAt": NOW,
        "triggeredBy": f"{MARKER}deployments",
        **extra,
    }


def verdict(objects: list[dict[str, Any]], current: dict[str, Any] | None, now: str = LATER) -> Any:
    return decide("deployments", objects, current, namespace="team-a", name=None, now=now)


def test_a_new_rollout_is_written_with_herald_mark_and_times() -> None:
    result = verdict([deployment(**ROLLING)], None, now=NOW)
    assert result.condition[:2] == ("True", "Tracking")
    written = result.deployment
    assert written["currentStatus"] == "DEPLOYING"
    assert written["desiredStatus"] == "DEPLOYED"
    assert written["triggeredBy"] == "herald/deployments"
    assert written["startedAt"] == NOW
    assert "finishedAt" not in written
    assert set(written) < set(FIELDS)
    DeploymentStatus.model_validate(written)  # what the notifier reads back


def test_progress_keeps_the_start_and_the_end_is_stamped() -> None:
    going = verdict([deployment(**ROLLING)], None, now=NOW).deployment
    done = verdict([deployment()], going, now=LATER).deployment
    assert done["id"] == going["id"]
    assert done["currentStatus"] == "DEPLOYED"
    assert done["startedAt"] == NOW
    assert done["finishedAt"] == "2026-03-01T09:59:30Z"


def test_nothing_is_written_when_nothing_changed() -> None:
    going = verdict([deployment(**ROLLING)], None, now=NOW).deployment
    assert verdict([deployment(**ROLLING)], going, now=LATER).deployment is None


def test_a_finished_deployment_stays_finished() -> None:
    done = verdict([deployment()], None).deployment
    later_unavailable = deployment(available=1, progressing=("True", "NewReplicaSetAvailable"))
    assert verdict([later_unavailable], done).deployment is None


def test_a_rollout_replaced_mid_way_fails_first_then_the_next_starts() -> None:
    going = verdict([deployment(**ROLLING)], None, now=NOW).deployment
    undone = deployment(revision="3", **ROLLING)  # kubectl rollout undo: the old template, a new revision
    closed = verdict([undone], going, now=LATER).deployment
    assert closed["id"] == going["id"]
    assert closed["currentStatus"] == "DEPLOYMENT_ERROR"
    assert "replaced by deployment rollout-" in closed["message"]
    assert closed["finishedAt"] == LATER
    assert derive_events(DeploymentStatus.model_validate(closed), NotifiedLedger()) == (
        "DEPLOYMENT_STARTED",
        "DEPLOYMENT_FAILURE",
    )
    following = verdict([undone], closed, now=LATER).deployment
    assert following["id"] != going["id"]
    assert following["currentStatus"] == "DEPLOYING"


def test_a_status_someone_else_wrote_is_a_conflict_not_a_race() -> None:
    foreign = {"id": "ci-77", "currentStatus": "DEPLOYING", "triggeredBy": "github-actions"}
    result = verdict([deployment()], foreign)
    assert result.deployment is None
    status, reason, message = result.condition
    assert (status, reason) == ("False", "SourceConflict")
    assert "github-actions" in message
    assert "clear status.deployment" in message
    unmarked = verdict([deployment()], {"id": "x", "currentStatus": "DEPLOYED"})
    assert unmarked.condition[1] == "SourceConflict"


def test_no_objects_is_reported() -> None:
    result = decide("argoCDApplication", [], None, namespace="argocd", name="shop", now=NOW)
    assert result.deployment is None
    assert result.condition[:2] == ("False", "NotFound")
    assert "Application argocd/shop" in result.condition[2]


def test_waiting_for_the_controller_writes_nothing() -> None:
    result = verdict([deployment(generation=4)], None)
    assert result.deployment is None
    assert result.condition[0] == "True"


# ---------------------------------------------------------------- the status patch


def test_status_patch_sets_the_condition_once_and_nulls_absent_fields() -> None:
    result = verdict([deployment(**ROLLING)], None, now=NOW)
    patch = status_patch(result, {}, NOW, generation=7)
    assert patch is not None
    assert patch["deployment"]["logs"] is None
    assert patch["deployment"]["finishedAt"] is None
    [cond] = patch["conditions"]
    assert cond == {
        "type": CONDITION,
        "status": "True",
        "reason": "Tracking",
        "message": result.condition[2],
        "lastTransitionTime": NOW,
        "observedGeneration": 7,
    }
    status = {"deployment": patch["deployment"], "conditions": patch["conditions"]}
    again = verdict([deployment(**ROLLING)], patch["deployment"], now=LATER)
    assert status_patch(again, status, LATER) is None


def test_status_patch_keeps_other_conditions_and_the_transition_time() -> None:
    other = {"type": "Reviewed", "status": "True", "reason": "Ok", "message": "", "lastTransitionTime": NOW}
    mine = {
        "type": CONDITION,
        "status": "False",
        "reason": "NotFound",
        "message": "x",
        "lastTransitionTime": NOW,
    }
    patch = status_patch(disabled("deployments"), {"conditions": [other, mine]}, LATER)
    assert patch is not None
    assert patch["conditions"][0] == other
    assert patch["conditions"][1]["reason"] == "SourceDisabled"
    assert patch["conditions"][1]["lastTransitionTime"] == NOW  # still False: no transition
    assert without_condition({"conditions": [other, mine]}) == {"conditions": [other]}
    assert without_condition({"conditions": [other]}) is None


def test_invalid_and_disabled_say_what_to_do() -> None:
    assert invalid("spec.source: bad").condition == ("False", "InvalidSource", "spec.source: bad")
    assert "--sources" in disabled("fluxHelmRelease").condition[2]
    assert "flux" in disabled("fluxHelmRelease").condition[2]


# ---------------------------------------------------------------- the table and the model


def test_table_covers_every_source_field_of_the_model() -> None:
    aliases = {info.alias for info in EnvironmentSource.model_fields.values()}
    assert set(SOURCES) == aliases
    assert SOURCE_NAMES == ("deployments", "argocd", "flux")


@pytest.mark.parametrize(
    ("raw", "chosen"),
    [
        ({}, None),
        ({"deployments": {"selector": {"matchLabels": {"a": "b"}}}}, "deployments"),
        ({"argoCDApplication": {"name": "shop", "namespace": "argocd"}}, "argoCDApplication"),
        ({"fluxKustomization": {"name": "shop"}}, "fluxKustomization"),
        ({"fluxHelmRelease": {"name": "shop", "namespace": "team-a"}}, "fluxHelmRelease"),
    ],
)
def test_model_names_the_chosen_source(raw: dict[str, Any], chosen: str | None) -> None:
    picked = EnvironmentSource.model_validate(raw).chosen()
    assert (picked[0] if picked else None) == chosen


@pytest.mark.parametrize(
    "raw",
    [
        {"fluxKustomization": {"name": "a"}, "fluxHelmRelease": {"name": "b"}},
        {"argoCDApplication": {"name": "shop"}},  # Argo CD's namespace is required
        {"deployments": {}},
        {"fluxKustomization": {"name": "Not_A_Name"}},
    ],
)
def test_model_rejects_bad_sources(raw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - pydantic's ValidationError is a ValueError
        EnvironmentSource.model_validate(copy.deepcopy(raw))
