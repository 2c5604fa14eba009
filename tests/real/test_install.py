"""Installing Herald on a real API server as the README says: what the emulator never checks
(structural CRD schemas, pruning, admission validation) is checked here."""

from __future__ import annotations

import json
from typing import Any

import yaml

from herald.testing import load_manifests, project_root
from tests.cluster.controlplane import ControlPlane

from .conftest import kubectl

HERALD_KINDS = {"Webhook", "ClusterWebhook", "Environment"}


def test_deploy_kustomization_installs_everything(installed: ControlPlane) -> None:
    crds = json.loads(installed.kubectl("get", "crd", "-o", "json"))["items"]
    established = {
        c["metadata"]["name"]
        for c in crds
        if any(x["type"] == "Established" and x["status"] == "True" for x in c["status"]["conditions"])
    }
    wanted = {doc["metadata"]["name"] for doc in load_manifests(project_root() / "crds")}
    assert wanted <= established
    for kind, name in (
        ("serviceaccount", "herald"),
        ("deployment", "herald"),
        ("role", "herald-leader-election"),
    ):
        installed.kubectl("-n", "herald-system", "get", kind, name)
    installed.kubectl("get", "clusterrole", "herald")


async def test_examples_apply_and_read_back_unpruned(installed: ControlPlane) -> None:
    """Every field the examples set survives the server's schema: nothing Herald reads is pruned."""
    await kubectl(installed, "apply", "--validate=false", "-k", str(project_root() / "deploy" / "examples"))
    try:
        for doc in load_manifests(project_root() / "deploy" / "examples"):
            if doc["kind"] not in HERALD_KINDS:
                continue
            meta = doc["metadata"]
            scope = ["-n", meta["namespace"]] if meta.get("namespace") else []
            stored = json.loads(
                await kubectl(installed, *scope, "get", doc["kind"].lower(), meta["name"], "-o", "json")
            )
            assert _subset(doc["spec"], stored["spec"]), f"{doc['kind']} {meta['name']}: {stored['spec']}"
    finally:
        await kubectl(
            installed,
            "delete",
            "-k",
            str(project_root() / "deploy" / "examples"),
            "--wait=false",
            check=False,
        )


def _subset(given: Any, stored: Any) -> bool:
    if isinstance(given, dict):
        return isinstance(stored, dict) and all(
            k in stored and _subset(v, stored[k]) for k, v in given.items()
        )
    if isinstance(given, list):
        return isinstance(stored, list) and len(given) == len(stored) and all(map(_subset, given, stored))
    return bool(given == stored)


async def test_a_bad_webhook_is_refused_with_a_message_naming_the_field(
    installed: ControlPlane, namespace: str
) -> None:
    bad = {
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "Webhook",
        "metadata": {"name": "bad", "namespace": namespace},
        "spec": {"kind": "CARRIER_PIGEON", "events": [], "url": "ftp://example.com"},
    }
    answer = await kubectl(
        installed, "apply", "--validate=false", "-f", "-", stdin=yaml.safe_dump(bad), check=False
    )
    assert "spec.kind" in answer
    assert "spec.events" in answer
    assert "spec.url" in answer


async def test_a_webhook_secret_ref_naming_a_namespace_is_refused_saying_why(
    installed: ControlPlane, namespace: str
) -> None:
    hook = {
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "Webhook",
        "metadata": {"name": "elsewhere", "namespace": namespace},
        "spec": {
            "kind": "STANDARD",
            "events": ["DEPLOYMENT_STARTED"],
            "url": "https://example.com/hook",
            "secretRef": {"name": "s", "namespace": "kube-system"},
        },
    }
    answer = await kubectl(
        installed, "apply", "--validate=false", "-f", "-", stdin=yaml.safe_dump(hook), check=False
    )
    assert "spec.secretRef.namespace" in answer
    assert "own namespace" in answer
