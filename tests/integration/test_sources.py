"""Issue 14 end to end: Herald writes an Environment's status.deployment from the objects a cluster
already runs, and the deliveries follow as for any deployment controller.

The emulator runs no controllers: each test plays the Deployment controller, Argo CD's
application controller or Flux's kustomize/helm controllers by patching their objects' status
with the fields those controllers write.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from herald.handlers import Runtime
from herald.kube import ApiConnection, KubeClient
from herald.settings import Settings
from herald.source_handlers import usable_sources
from herald.sources import SOURCE_NAMES
from herald.testing import Emulator, Receiver, SimulatedDeployment, wait_for

from .conftest import FAST, NS, condition, environment, status_of, webhook
from .operator_process import OperatorProcess

LABELS = {"app.kubernetes.io/part-of": "shop"}


@pytest.fixture
def settings() -> Settings:
    return dataclasses.replace(FAST, sources=SOURCE_NAMES)


def sourced(name: str, source: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    body = environment(name, **kwargs)
    body["spec"]["source"] = source
    return body


def sent(receiver: Receiver, path: str = "/std") -> list[tuple[str, str]]:
    return [(r.json()["payload"]["id"], r.json()["event_type"]) for r in receiver.on(path)]


def events(receiver: Receiver, path: str = "/std") -> list[str]:
    return [event for _, event in sent(receiver, path)]


async def arrived(receiver: Receiver, count: int, path: str = "/std") -> None:
    await wait_for(lambda: len(receiver.on(path)) >= count, timeout=10, what=f"{count} deliveries at {path}")


def source_condition(emu: Emulator, name: str) -> dict[str, Any]:
    return condition(emu, "Environment", NS, name, "SourceReady")


@pytest.fixture
async def shop(emu: Emulator, receiver: Receiver, operator: Runtime) -> SimulatedDeployment:
    await emu.create(webhook("std", f"{receiver.url}/std"))
    await emu.create(sourced("web", {"deployments": {"selector": {"matchLabels": LABELS}}}))
    web = SimulatedDeployment(emu, NS, "web", labels=LABELS, image="ghcr.io/acme/web:1.0")
    await web.create()
    return web


async def test_deployment_rollout_succeeds_and_a_scale_sends_nothing(
    emu: Emulator, receiver: Receiver, shop: SimulatedDeployment
) -> None:
    await shop.progress()
    await arrived(receiver, 1)
    await shop.complete()
    await arrived(receiver, 2)
    first = sent(receiver)[0][0]
    assert sent(receiver) == [(first, "DEPLOYMENT_STARTED"), (first, "DEPLOYMENT_SUCCESSFUL")]
    done = receiver.on("/std")[1].json()["payload"]
    assert done["current_status"] == "DEPLOYED"
    assert done["triggered_by"] == "herald/deployments"
    web = next(a for a in done["applications"] if a["name"] == "web")
    assert web["images"] == ["ghcr.io/acme/web:1.0"]
    assert web["id"] == "app-1"  # the spec's own fields win over the Deployment's uid
    assert source_condition(emu, "web")["status"] == "True"

    await shop.scale(5)  # a new generation, the same template: no deployment
    await shop.set_image("ghcr.io/acme/web:1.1")  # the barrier: a real rollout
    await shop.progress()
    await shop.complete()
    await arrived(receiver, 4)
    second = sent(receiver)[2][0]
    assert second != first
    assert sent(receiver) == [
        (first, "DEPLOYMENT_STARTED"),
        (first, "DEPLOYMENT_SUCCESSFUL"),
        (second, "DEPLOYMENT_STARTED"),
        (second, "DEPLOYMENT_SUCCESSFUL"),
    ]
    deployment = status_of(emu, "Environment", NS, "web")["deployment"]
    assert deployment["id"] == second
    assert deployment["applications"][0]["images"] == ["ghcr.io/acme/web:1.1"]


async def test_rollout_past_its_progress_deadline_is_a_failure(
    emu: Emulator, receiver: Receiver, shop: SimulatedDeployment
) -> None:
    await shop.progress()
    await shop.time_out()
    await arrived(receiver, 2)
    assert events(receiver) == ["DEPLOYMENT_STARTED", "DEPLOYMENT_FAILURE"]
    failed = receiver.on("/std")[1].json()["payload"]
    assert failed["current_status"] == "DEPLOYMENT_ERROR"
    assert "exceeded its progress deadline" in failed["message"]


async def test_rollout_undone_mid_way_fails_before_the_next_starts(
    emu: Emulator, receiver: Receiver, shop: SimulatedDeployment
) -> None:
    await shop.progress()
    await arrived(receiver, 1)
    await shop.set_image("ghcr.io/acme/web:0.9")  # kubectl rollout undo: a new revision mid-way
    await shop.progress()
    await shop.complete()
    await arrived(receiver, 4)
    first, second = sent(receiver)[0][0], sent(receiver)[2][0]
    assert sent(receiver) == [
        (first, "DEPLOYMENT_STARTED"),
        (first, "DEPLOYMENT_FAILURE"),
        (second, "DEPLOYMENT_STARTED"),
        (second, "DEPLOYMENT_SUCCESSFUL"),
    ]
    assert f"replaced by deployment {second}" in receiver.on("/std")[1].json()["payload"]["message"]


async def test_a_status_written_by_someone_else_is_reported_not_raced(
    emu: Emulator, receiver: Receiver, shop: SimulatedDeployment
) -> None:
    # A second Environment on the same Deployments: its update proves the first was decided too.
    await emu.create(sourced("witness", {"deployments": {"selector": {"matchLabels": LABELS}}}))
    foreign = {"id": "ci-77", "currentStatus": "DEPLOYING", "triggeredBy": "github-actions"}
    await emu.patch("Environment", NS, "web", {"status": {"deployment": foreign}}, subresource="status")
    await wait_for(
        lambda: source_condition(emu, "web").get("reason") == "SourceConflict",
        timeout=10,
        what="the conflict",
    )
    assert "github-actions" in source_condition(emu, "web")["message"]
    await shop.progress()
    await shop.complete()
    await wait_for(
        lambda: (
            (status_of(emu, "Environment", NS, "witness").get("deployment") or {}).get("currentStatus")
            == "DEPLOYED"
        ),
        timeout=10,
        what="the witness deployed",
    )
    assert status_of(emu, "Environment", NS, "web")["deployment"] == foreign


def application(phase: str | None, health: str = "Progressing", message: str = "") -> dict[str, Any]:
    status: dict[str, Any] = {
        "sync": {"status": "Synced", "revision": "8f9c2d1e4b7a"},
        "health": {"status": health},
        "summary": {"images": ["ghcr.io/acme/web:2.0"]},
    }
    if phase is not None:
        status["operationState"] = {
            "operation": {"sync": {"revision": "8f9c2d1e4b7a"}, "initiatedBy": {"username": "alice"}},
            "phase": phase,
            "message": message,
            "startedAt": "2026-03-01T09:58:00Z",
            "syncResult": {"revision": "8f9c2d1e4b7a", "resources": [{"kind": "Deployment", "name": "web"}]},
        }
    return status


async def test_argocd_sync_is_notified(emu: Emulator, receiver: Receiver, operator: Runtime) -> None:
    await emu.create(webhook("std", f"{receiver.url}/std"))
    await emu.create(sourced("web", {"argoCDApplication": {"name": "shop", "namespace": "argocd"}}))
    await emu.create(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {"name": "shop", "namespace": "argocd"},
            "spec": {"project": "default"},
            "status": application(None),
        }
    )
    await wait_for(lambda: source_condition(emu, "web").get("status") == "True", timeout=10, what="tracking")

    async def argo(phase: str, health: str, message: str = "") -> None:
        body = {"status": application(phase, health, message)}
        await emu.patch("Application", "argocd", "shop", body, subresource="status")

    await argo("Running", "Progressing", "one or more tasks are running")
    await arrived(receiver, 1)
    await argo("Succeeded", "Progressing", "successfully synced (all tasks run)")
    await argo("Succeeded", "Healthy", "successfully synced (all tasks run)")
    await arrived(receiver, 2)
    assert events(receiver) == ["DEPLOYMENT_STARTED", "DEPLOYMENT_SUCCESSFUL"]
    done = receiver.on("/std")[1].json()["payload"]
    assert done["triggered_by"] == "herald/argoCDApplication"
    assert "sync by alice of 8f9c2d1e4b7a" in done["message"]
    shop = next(a for a in done["applications"] if a["name"] == "shop")
    assert shop["images"] == ["ghcr.io/acme/web:2.0"]


def flux_status(revision: str, ready: str, reason: str) -> dict[str, Any]:
    return {
        "observedGeneration": 1,
        "lastAttemptedRevision": revision,
        "conditions": [
            {
                "type": "Ready",
                "status": ready,
                "reason": reason,
                "message": f"{reason} at {revision}",
                "lastTransitionTime": "2026-03-01T09:59:00Z",
            }
        ],
    }


async def test_flux_reconciliations_are_notified(
    emu: Emulator, receiver: Receiver, operator: Runtime
) -> None:
    await emu.create(webhook("std", f"{receiver.url}/std"))
    await emu.create(sourced("web", {"fluxKustomization": {"name": "shop", "namespace": "flux-system"}}))
    await emu.create(sourced("api", {"fluxHelmRelease": {"name": "api"}}))
    await emu.create(
        {
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": {"name": "shop", "namespace": "flux-system"},
            "spec": {"path": "./deploy"},
        }
    )
    await emu.create(
        {
            "apiVersion": "helm.toolkit.fluxcd.io/v2",
            "kind": "HelmRelease",
            "metadata": {"name": "api", "namespace": NS},
            "spec": {"chart": {"spec": {"chart": "api"}}},
        }
    )

    async def flux(kind: str, namespace: str, name: str, revision: str, ready: str, reason: str) -> None:
        body = {"status": flux_status(revision, ready, reason)}
        await emu.patch(kind, namespace, name, body, subresource="status")

    await flux("Kustomization", "flux-system", "shop", "main@sha1:4b8e2f1", "Unknown", "Progressing")
    await arrived(receiver, 1)
    await flux("Kustomization", "flux-system", "shop", "main@sha1:4b8e2f1", "True", "ReconciliationSucceeded")
    await arrived(receiver, 2)
    await flux("HelmRelease", NS, "api", "1.4.2", "False", "UpgradeFailed")
    await arrived(receiver, 4)
    by_env = [
        (r.json()["payload"]["environment"]["name"], r.json()["event_type"]) for r in receiver.on("/std")
    ]
    assert by_env == [
        ("web", "DEPLOYMENT_STARTED"),
        ("web", "DEPLOYMENT_SUCCESSFUL"),
        ("api", "DEPLOYMENT_STARTED"),
        ("api", "DEPLOYMENT_FAILURE"),
    ]
    release = receiver.on("/std")[3].json()["payload"]["applications"]
    assert {"id": None, "name": "api", "version": "1.4.2", "chart": "api"} in release


@pytest.mark.parametrize("settings", [dataclasses.replace(FAST, sources=("deployments",))])
async def test_a_source_herald_does_not_run_is_reported(emu: Emulator, operator: Runtime) -> None:
    await emu.create(sourced("web", {"fluxKustomization": {"name": "shop"}}))
    await wait_for(
        lambda: source_condition(emu, "web").get("reason") == "SourceDisabled",
        timeout=10,
        what="the condition",
    )
    assert "HERALD_SOURCES" in source_condition(emu, "web")["message"]


async def test_removing_the_source_removes_the_condition(
    emu: Emulator, receiver: Receiver, shop: SimulatedDeployment
) -> None:
    await wait_for(lambda: bool(source_condition(emu, "web")), timeout=10, what="the condition")
    await emu.patch("Environment", NS, "web", {"spec": {"source": None}})
    await wait_for(lambda: not source_condition(emu, "web"), timeout=10, what="the condition removed")


async def test_sources_are_chosen_by_asking_the_api_server(emu: Emulator) -> None:
    kube = KubeClient(lambda: _connection(emu))
    try:
        assert await usable_sources(kube, None, None) == SOURCE_NAMES
        del emu.kmock.resources["argoproj.io/v1alpha1/applications"]
        assert await usable_sources(kube, (NS,), None) == ("deployments", "flux")
        assert await usable_sources(kube, (NS,), ("argocd",)) == ("argocd",)  # named: on once served
        emu.kmock["get", "/apis/apps/v1/deployments"] << 403
        assert await usable_sources(kube, None, ("deployments", "flux")) == ("flux",)  # never unreadable
    finally:
        await kube.aclose()


async def _connection(emu: Emulator) -> ApiConnection:
    return ApiConnection(server=emu.url)


async def test_herald_run_turns_on_the_sources_the_cluster_serves(emu: Emulator, receiver: Receiver) -> None:
    """The real CLI: no flag, so Herald asks the API server which sources to run."""
    del emu.kmock.resources["argoproj.io/v1alpha1/applications"]  # a cluster without Argo CD
    await emu.create(webhook("std", f"{receiver.url}/std"))
    await emu.create(sourced("web", {"deployments": {"selector": {"matchLabels": LABELS}}}))
    await emu.create(sourced("argo", {"argoCDApplication": {"name": "shop", "namespace": "argocd"}}))
    web = SimulatedDeployment(emu, NS, "web", labels=LABELS, image="ghcr.io/acme/web:1.0")
    await web.create()
    herald = OperatorProcess(emu)
    await herald.start()
    try:
        await web.progress()
        await web.complete()
        await arrived(receiver, 2)
        assert events(receiver) == ["DEPLOYMENT_STARTED", "DEPLOYMENT_SUCCESSFUL"]
        await wait_for(
            lambda: source_condition(emu, "argo").get("reason") == "SourceDisabled",
            timeout=10,
            what="argo off",
        )
        assert "sources on: deployments, flux" in herald.output()
    finally:
        await herald.stop()
