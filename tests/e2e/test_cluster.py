"""Herald against a real Kubernetes API server: the CRDs, the examples and ``kubectl`` as a person
uses them, with ``herald run`` as a local process delivering to a local receiver.

Opt-in and skipped otherwise (``make test`` collects it and skips it with the reason). To run it
with kind (https://kind.sigs.k8s.io)::

    kind create cluster --name herald-e2e      # writes the context into ~/.kube/config
    make e2e                                   # HERALD_E2E=1 pytest tests/e2e
    kind delete cluster --name herald-e2e

Any cluster works (k3d, minikube, a shared one): ``make e2e`` uses whatever ``KUBECONFIG``
points at, and needs ``kubectl`` 1.24+ on PATH and rights to apply CRDs, create namespaces and
post Events. No image is built: Herald runs on this machine with the kube config, so its
receiver is ``127.0.0.1`` (allowed with ``HERALD_EGRESS_ALLOW``). The suite installs or upgrades
Herald's CRDs and leaves them; the examples go to a namespace ``herald-e2e-<random>`` and a
ClusterWebhook ``deployment-audit-<random>``, deleted afterwards. A Herald already running in
the cluster would deliver the same events too (and fail to reach this machine's loopback):
use a cluster without one.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Awaitable, Callable

import pytest
from standardwebhooks import Webhook

from herald.testing import Receiver, wait_for

from .conftest import Examples, kubectl_async, webhooks_json

pytestmark = pytest.mark.e2e

DEPLOYMENT = "e2e-deploy-1"


async def eventually(check: Callable[[], Awaitable[bool]], *, timeout: float, what: str) -> None:
    """Poll an async check (a kubectl call) until it holds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.5)


async def move(examples: Examples, state: str) -> None:
    patch = {
        "status": {"deployment": {"id": DEPLOYMENT, "currentStatus": state, "desiredStatus": "DEPLOYED"}}
    }
    await kubectl_async(
        "-n",
        examples.namespace,
        "patch",
        "environment",
        examples.environment,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(patch),
    )


async def test_a_deployment_reaches_the_receiver_and_kubectl(
    examples: Examples, receiver: Receiver, herald: subprocess.Popen[bytes]
) -> None:
    for state in ("QUEUED", "DEPLOYING", "DEPLOYED"):
        await move(examples, state)
    standard, slack, audit = (examples.paths[n] for n in (examples.standard, examples.slack, examples.audit))
    await wait_for(
        lambda: (
            len(receiver.on(standard)) >= 2 and len(receiver.on(slack)) >= 1 and len(receiver.on(audit)) >= 2
        ),
        timeout=60,
        what="every example webhook's deliveries",
    )

    # What the receivers got: STANDARD twice, signed; SLACK once, for the outcome; the audit twice.
    for path in (standard, audit):
        sent = [r.json() for r in receiver.on(path)]
        assert [s["event_type"] for s in sent] == ["DEPLOYMENT_STARTED", "DEPLOYMENT_SUCCESSFUL"]
        assert {s["payload"]["id"] for s in sent} == {DEPLOYMENT}
        assert {s["payload"]["environment"]["namespace"] for s in sent} == {examples.namespace}
        assert {s["payload"]["project"]["name"] for s in sent} == {"shop-frontend"}
        assert all(r.headers["Qovery-Secret"] == examples.shared_secret for r in receiver.on(path))
    for request in receiver.on(standard):
        Webhook(examples.signing_key).verify(request.body, request.headers)  # raises if not signed
    (message,) = [r.json() for r in receiver.on(slack)]
    assert message["text"]

    # What kubectl shows: delivery counts and outcomes on the status, never a secret.
    async def recorded() -> bool:
        items = webhooks_json(await kubectl_async("-n", examples.namespace, "get", "webhooks", "-o", "json"))
        counters = {name: (item.get("status") or {}).get("counters", {}) for name, item in items.items()}
        return bool(
            counters.get(examples.standard, {}).get("delivered") == 2
            and counters.get(examples.slack, {}).get("delivered") == 1
        )

    await eventually(recorded, timeout=30, what="both Webhooks' status")
    raw = await kubectl_async("-n", examples.namespace, "get", "webhooks", "-o", "json")
    items = webhooks_json(raw)
    for name in (examples.standard, examples.slack):
        status = items[name]["status"]
        assert status["lastDelivery"]["outcome"] == "Succeeded"
        assert status["lastDelivery"]["event"] == "DEPLOYMENT_SUCCESSFUL"
        assert status["lastDelivery"]["environment"] == f"{examples.namespace}/{examples.environment}"
        assert status["pendingDeliveries"] == 0
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True"
        assert not status.get("pending")  # Herald 0.1's queue on the status is gone

    # Each delivery is a Delivery object beside its Webhook (the ClusterWebhook's in Herald's namespace,
    # here the suite's), owned by it and named in its status.
    listed = await kubectl_async("-n", examples.namespace, "get", "deliveries", "-o", "json")
    deliveries = json.loads(listed)["items"]
    by_webhook: dict[str, list[tuple[str, str, str]]] = {}
    for item in deliveries:
        spec = item["spec"]
        by_webhook.setdefault(spec["webhook"]["name"], []).append(
            (spec["event"], spec["deploymentId"], item["status"]["outcome"])
        )
        assert item["metadata"]["ownerReferences"][0]["name"] == spec["webhook"]["name"]
    both = [
        ("DEPLOYMENT_STARTED", DEPLOYMENT, "Succeeded"),
        ("DEPLOYMENT_SUCCESSFUL", DEPLOYMENT, "Succeeded"),
    ]
    assert sorted(by_webhook[examples.standard]) == both
    assert sorted(by_webhook[examples.audit]) == both
    assert by_webhook[examples.slack] == [("DEPLOYMENT_SUCCESSFUL", DEPLOYMENT, "Succeeded")]
    names = {item["metadata"]["name"] for item in deliveries}
    assert {items[n]["status"]["lastDelivery"]["name"] for n in (examples.standard, examples.slack)} <= names
    assert examples.shared_secret not in raw
    assert examples.signing_key not in raw
    assert examples.paths[examples.slack] not in raw  # the Slack URL is a credential

    async def audited() -> bool:
        item = json.loads(await kubectl_async("get", "clusterwebhook", examples.audit, "-o", "json"))
        return bool((item.get("status") or {}).get("counters", {}).get("delivered") == 2)

    await eventually(audited, timeout=30, what="the ClusterWebhook's status")

    # The printer columns and the `herald` category, as a person reads them.
    table = await kubectl_async("-n", examples.namespace, "get", "webhooks")
    assert table.split("\n", 1)[0].split()[:4] == ["NAME", "KIND", "ENABLED", "READY"]
    row = next(line for line in table.splitlines() if line.startswith(examples.standard))
    assert "Succeeded" in row.split()
    everything = await kubectl_async("-n", examples.namespace, "get", "herald", "-o", "name")
    assert f"environment.herald.dev/{examples.environment}" in everything.split()

    # `kubectl describe environment` tells the story through Kubernetes Events.
    async def described() -> bool:
        events = json.loads(
            await kubectl_async(
                "-n",
                examples.namespace,
                "get",
                "events",
                "--field-selector",
                f"involvedObject.name={examples.environment}",
                "-o",
                "json",
            )
        )
        return {"DeploymentStarted", "DeploymentSuccessful"} <= {
            str(e.get("reason")) for e in events["items"]
        }

    await eventually(described, timeout=30, what="DeploymentStarted and DeploymentSuccessful Events")
    assert herald.poll() is None  # still running


async def test_ping_by_annotation(
    examples: Examples, receiver: Receiver, herald: subprocess.Popen[bytes]
) -> None:
    """`kubectl annotate` asks for a test delivery; the status, as the API server keeps it, says so."""
    await kubectl_async(
        "-n", examples.namespace, "annotate", "webhook", examples.standard, "herald.dev/ping=e2e-1"
    )
    path = examples.paths[examples.standard]
    await wait_for(lambda: len(receiver.on(path)) >= 1, timeout=60, what="the test delivery")
    (ping,) = [r.json() for r in receiver.on(path)]
    assert (ping["event_type"], ping["payload_type"]) == ("WEBHOOK_TEST", "TEST")

    async def acknowledged() -> bool:
        item = json.loads(
            await kubectl_async("-n", examples.namespace, "get", "webhook", examples.standard, "-o", "json")
        )
        status = item.get("status") or {}
        last = status.get("lastDelivery") or {}
        return status.get("handledPing") == "e2e-1" and last.get("outcome") == "Succeeded"

    await eventually(acknowledged, timeout=30, what="handledPing and the test delivery on the status")
