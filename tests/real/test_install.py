"""Installing Herald on a real API server as the README says: what the emulator never checks
(structural CRD schemas, pruning, admission validation) is checked here."""

from __future__ import annotations

import json
from typing import Any

import yaml

from herald.testing import load_manifests, project_root
from tests.cluster.controlplane import ControlPlane

from .conftest import DELIVERY_COLUMNS, apply, get_json, kubectl

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


def _delivery(
    namespace: str, webhook: str, payload_id: str, outcome: str, log_bytes: int = 0
) -> dict[str, Any]:
    """A Delivery as the contract describes it, its notification padded with ``log_bytes`` of logs."""
    line = "x" * 1000
    notification = {
        "eventType": "DEPLOYMENT_FAILURE",
        "payloadId": payload_id,
        "createdAt": "2026-01-01T12:00:00.123456Z",
        "environment": {"uid": "u1", "name": "production", "namespace": namespace, "type": "PRODUCTION"},
        "deployment": {"id": "deploy-43", "logs": [line] * (log_bytes // len(line))},
        "applications": [{"name": "storefront", "extra": {"nested": [1, 2.5, None, True]}}],
    }
    return {
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "Delivery",
        "metadata": {
            "name": f"{webhook}-{payload_id[:12]}",
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/managed-by": "herald",
                "herald.dev/webhook": webhook,
                "herald.dev/webhook-kind": "Webhook",
                "herald.dev/environment": "production",
                "herald.dev/environment-namespace": namespace,
                "herald.dev/event": "DEPLOYMENT_FAILURE",
                "herald.dev/outcome": outcome,
            },
        },
        "spec": {
            "webhook": {"kind": "Webhook", "name": webhook, "namespace": namespace},
            "environment": {"namespace": namespace, "name": "production", "uid": "u1"},
            "deploymentId": "deploy-43",
            "event": "DEPLOYMENT_FAILURE",
            "payloadId": payload_id,
            "createdAt": "2026-01-01T12:00:00.123456Z",
            "notification": notification,
        },
        "status": {
            "outcome": outcome,
            "attempts": 3,
            "httpStatus": 503,
            "error": "HTTP 503",
            "durationMs": 12,
            "lastAttemptAt": "2026-01-01T12:00:05Z",
            "finishedAt": "2026-01-01T12:00:05Z",
            "attemptLog": [
                {
                    "number": n,
                    "time": "2026-01-01T12:00:05Z",
                    "httpStatus": 503,
                    "error": "HTTP 503",
                    "durationMs": 12,
                }
                for n in (1, 2, 3)
            ],
        },
    }


async def test_a_large_delivery_is_stored_whole_and_listed_with_its_columns(
    installed: ControlPlane, namespace: str
) -> None:
    """Herald writes a Delivery with its outcome in one create (no status subresource): spec and
    status both survive, a 300 KB notification included, and kubectl shows and selects them."""
    failed = _delivery(namespace, "shop", "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "Failed", log_bytes=300_000)
    succeeded = _delivery(namespace, "shop", "aa" * 16, "Succeeded")
    for obj in (failed, succeeded):
        # create, not apply: apply would copy 300 KB into an annotation (at most 256 KiB in all).
        await kubectl(installed, "create", "--validate=false", "-f", "-", stdin=json.dumps(obj))
    stored = await get_json(installed, "-n", namespace, "delivery", failed["metadata"]["name"])
    assert len(json.dumps(stored["spec"]["notification"])) > 300_000
    assert stored["spec"] == failed["spec"]
    assert stored["status"] == failed["status"]

    table = (await kubectl(installed, "get", "deliveries", "-n", namespace)).splitlines()
    assert table[0].split() == DELIVERY_COLUMNS
    [row] = [line.split() for line in table[1:] if line.startswith(failed["metadata"]["name"])]
    assert row[1:7] == ["shop", "DEPLOYMENT_FAILURE", "production", "Failed", "3", "503"]

    selected = await kubectl(
        installed,
        "get",
        "deliveries",
        "-A",
        "-l",
        "herald.dev/outcome=Failed",
        "-o",
        "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}{'\\n'}{end}",
    )
    assert f"{namespace}/{failed['metadata']['name']}" in selected.split()
    assert f"{namespace}/{succeeded['metadata']['name']}" not in selected.split()
    short = await kubectl(installed, "get", "hdl", "-n", namespace, "-o", "name")
    assert sorted(short.split()) == sorted(
        f"delivery.herald.dev/{o['metadata']['name']}" for o in (failed, succeeded)
    )


async def test_a_herald_01_status_is_kept_for_migration(installed: ControlPlane, namespace: str) -> None:
    """A webhook status written by Herald 0.1 keeps its pending, sent and deliveries arrays under the
    new CRD (Herald migrates them at startup), and the summary can still be written next to them."""
    await apply(
        installed,
        {
            "apiVersion": "herald.dev/v1alpha1",
            "kind": "Webhook",
            "metadata": {"name": "old", "namespace": namespace},
            "spec": {"kind": "STANDARD", "events": ["DEPLOYMENT_FAILURE"], "url": "https://example.com/hook"},
        },
    )
    record = {
        "payloadId": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        "event": "DEPLOYMENT_FAILURE",
        "environment": f"{namespace}/production",
        "deploymentId": "deploy-43",
        "attempts": 1,
        "httpStatus": 503,
        "error": "HTTP 503",
        "time": "2026-01-01T12:00:00Z",
        "outcome": "Retrying",
        "durationMs": 12,
        "nextAttemptAt": "2026-01-01T12:00:05Z",
        "attemptLog": [{"number": 1, "time": "2026-01-01T12:00:00Z", "httpStatus": 503, "durationMs": 12}],
    }
    notification = _delivery(namespace, "old", record["payloadId"], "Retrying")["spec"]["notification"]
    # A merge patch drops null even inside a list (a create keeps it): Herald 0.1 never stored one.
    notification["applications"] = [{"name": "storefront", "extra": {"nested": [1, 2.5, True]}}]
    legacy = {
        "pending": [{"record": record, "notification": notification}],
        "sent": [notification],
        "deliveries": [record],
    }
    status = {**legacy, "lastDelivery": record, "counters": {"delivered": 1, "dropped": 2}}
    patch = json.dumps({"status": status})
    await kubectl(
        installed,
        "-n",
        namespace,
        "patch",
        "webhook",
        "old",
        "--subresource=status",
        "--type=merge",
        "-p",
        patch,
    )
    stored = (await get_json(installed, "-n", namespace, "webhook", "old"))["status"]
    assert {key: stored[key] for key in legacy} == legacy
    assert stored["counters"] == {"delivered": 1}, "what the summary no longer has is pruned"

    summary = json.dumps({"status": {"pendingDeliveries": 1, "counters": {"deferred": 3}}})
    await kubectl(
        installed,
        "-n",
        namespace,
        "patch",
        "webhook",
        "old",
        "--subresource=status",
        "--type=merge",
        "-p",
        summary,
    )
    stored = (await get_json(installed, "-n", namespace, "webhook", "old"))["status"]
    assert {key: stored[key] for key in legacy} == legacy
    assert stored["pendingDeliveries"] == 1


async def test_a_bad_delivery_is_refused_naming_the_field(installed: ControlPlane, namespace: str) -> None:
    good = _delivery(namespace, "shop", "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "Failed")
    no_payload = {**good, "spec": {k: v for k, v in good["spec"].items() if k != "payloadId"}}
    done = {**good, "status": {**good["status"], "outcome": "Done"}}
    cluster_with_namespace = {
        **good,
        "spec": {**good["spec"], "webhook": {**good["spec"]["webhook"], "kind": "ClusterWebhook"}},
    }
    for obj, field in (
        (no_payload, "spec.payloadId"),
        (done, "status.outcome"),
        (cluster_with_namespace, "spec.webhook"),
    ):
        answer = await kubectl(
            installed, "create", "--validate=false", "-f", "-", stdin=json.dumps(obj), check=False
        )
        assert "is invalid" in answer, answer
        assert field in answer, answer
