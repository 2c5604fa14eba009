"""The Deployment source against kube-controller-manager's own Deployment and ReplicaSet
controllers: the revisions, ``observedGeneration`` and conditions they really write. There is no
scheduler or kubelet, so no pod ever runs: a Deployment of zero replicas rolls out at once, and
one that needs a pod exceeds its progress deadline."""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from herald.testing import Receiver, project_root, wait_for
from tests.cluster.controlplane import ControlPlane

from .conftest import HeraldProcess, apply, environment, get_json, kubectl, webhook

Start = Callable[..., Awaitable[HeraldProcess]]
SELECTED = {"part-of": "shop"}


@pytest.fixture(scope="session")
def sources_installed(installed: ControlPlane) -> ControlPlane:
    """deploy/ with the optional sources component, from a kustomization of one's own (README)."""
    with tempfile.TemporaryDirectory(prefix="herald-overlay-") as folder:
        deploy = os.path.relpath(project_root() / "deploy", folder)
        (pathlib.Path(folder) / "kustomization.yaml").write_text(
            f"resources:\n  - {deploy}\ncomponents:\n  - {deploy}/components/sources\n"
        )
        installed.kubectl("apply", "--validate=false", "-k", folder)
    return installed


def deployment(name: str, namespace: str, *, image: str, replicas: int, deadline: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": SELECTED},
        "spec": {
            "replicas": replicas,
            "progressDeadlineSeconds": deadline,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


async def test_a_rollout_and_a_missed_progress_deadline_from_the_real_controllers(
    sources_installed: ControlPlane, namespace: str, receiver: Receiver, start_herald: Start
) -> None:
    plane = sources_installed
    await apply(
        plane,
        webhook(
            "hook",
            namespace,
            f"{receiver.url}/hook",
            events=["DEPLOYMENT_STARTED", "DEPLOYMENT_SUCCESSFUL", "DEPLOYMENT_FAILURE"],
        ),
        environment(
            "shop", namespace, source={"deployments": {"selector": {"matchLabels": {"part-of": "shop"}}}}
        ),
        deployment("web", namespace, image="registry.invalid/web:1", replicas=0, deadline=600),
    )
    herald = await start_herald(HERALD_NAMESPACE=namespace)
    assert "sources on: deployments" in herald.output()

    def events() -> list[tuple[str, str]]:
        return [(r.json()["payload"]["id"], r.json()["event_type"]) for r in receiver.on("/hook")]

    await wait_for(lambda: len(events()) >= 2, timeout=60, what="the first rollout's two deliveries")
    (first, started), (same, successful) = events()[:2]
    assert (started, successful) == ("DEPLOYMENT_STARTED", "DEPLOYMENT_SUCCESSFUL")
    assert first == same
    images = [
        a.get("image") or a.get("images") for a in receiver.on("/hook")[1].json()["payload"]["applications"]
    ]
    assert "registry.invalid/web:1" in json.dumps(images)

    # A new template that needs a pod: no scheduler places it, the deadline passes.
    await apply(plane, deployment("web", namespace, image="registry.invalid/web:2", replicas=1, deadline=2))
    await wait_for(lambda: len(events()) >= 4, timeout=90, what="the second rollout's two deliveries")
    (second, started), (again, failed) = events()[2:4]
    assert (started, failed) == ("DEPLOYMENT_STARTED", "DEPLOYMENT_FAILURE")
    assert second == again != first
    status = (await get_json(plane, "-n", namespace, "environment", "shop"))["status"]["deployment"]
    assert status["triggeredBy"] == "herald/deployments"
    assert status["currentStatus"] == "DEPLOYMENT_ERROR"
    conditions = (await get_json(plane, "-n", namespace, "deployment", "web"))["status"]["conditions"]
    assert any(c["reason"] == "ProgressDeadlineExceeded" for c in conditions)
    assert len(events()) == 4
    await kubectl(plane, "-n", namespace, "delete", "deployment", "web", "--wait=false")
