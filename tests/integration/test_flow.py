"""Issue 11 (items 4, 5, 7, 10, 11) on the emulator: namespaceSelector fails closed, a webhook
deleted during a watch gap stops receiving, a concurrent change loses no event, ClusterWebhook
Events are where `kubectl describe` looks, and nobody listening costs no write."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import kmock

from herald.events import LEDGER_ANNOTATION
from herald.handlers import Runtime
from herald.models import ObjectRef
from herald.testing import Emulator, Receiver, running_operator, wait_for

from .conftest import FAST, NS, deploy, environment, webhook

NOT_PROD = {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}


def k8s_events(emu: Emulator, *, kind: str, name: str) -> list[tuple[str | None, dict[str, Any]]]:
    """(the Event's own namespace, the Event) for every Event about one object, oldest first."""
    return [
        (ns, dict(obj.raw))
        for (resource, ns, _name), obj in list(emu.kmock.objects.items())
        if resource.plural == "events"
        and not obj.deleted
        and obj.raw.get("involvedObject", {}).get("kind") == kind
        and obj.raw.get("involvedObject", {}).get("name") == name
    ]


def event_types(receiver: Receiver, path: str) -> list[str]:
    return [r.json()["event_type"] for r in receiver.on(path)]


async def namespace(emu: Emulator, name: str, labels: dict[str, str]) -> None:
    await emu.create({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": name, "labels": labels}})


def silently_delete(emu: Emulator, kind: str, namespace: str | None, name: str) -> None:
    """Delete an object with no DELETED event: what a watch misses when it ends with 410 Gone."""
    plural = emu.plurals[kind][0]
    for (resource, ns, obj_name), obj in list(emu.kmock.objects.items()):
        if resource.plural == plural and ns == namespace and obj_name == name:
            obj.delete()
            return
    raise LookupError(name)


# ---------------------------------------------------------------- item 10


async def test_clusterwebhook_events_name_no_namespace(
    emu: Emulator, receiver: Receiver, operator: Runtime
) -> None:
    """`kubectl describe clusterwebhook` lists Events whose involvedObject has no namespace."""
    receiver.scripts["/audit"] = [404]
    await emu.create(webhook("audit", f"{receiver.url}/audit", cluster=True, events=("DEPLOYMENT_STARTED",)))
    await emu.create(environment("web"))
    await deploy(emu, "web", "d-1", "QUEUED")
    await wait_for(
        lambda: any(
            e["reason"] == "DeliveryFailed" for _, e in k8s_events(emu, kind="ClusterWebhook", name="audit")
        ),
        timeout=10,
        what="a DeliveryFailed Event on the ClusterWebhook",
    )
    uid = (emu.get("ClusterWebhook", None, "audit") or {})["metadata"]["uid"]
    for ns, event in k8s_events(emu, kind="ClusterWebhook", name="audit"):
        assert ns == "default"
        assert "namespace" not in event["involvedObject"]
        assert event["involvedObject"]["uid"] == uid
        assert "eventTime" not in event


# ---------------------------------------------------------------- item 4


async def test_an_unreadable_namespace_matches_no_selector_until_it_is_read(
    emu: Emulator, receiver: Receiver, operator: Runtime
) -> None:
    outage = {"on": True, "refused": 0}

    def refuse(_request: object) -> None:
        if not outage["on"]:
            raise NotImplementedError  # kmock: not this reaction; the Namespace is served
        outage["refused"] += 1
        raise kmock.KubernetesError(status=503, reason="ServiceUnavailable", message="etcd is slow")

    emu.kmock["get", f"/api/v1/namespaces/{NS}"] << refuse
    await namespace(emu, NS, {"env": "staging"})
    await emu.create(webhook("local", f"{receiver.url}/local"))
    await emu.create(
        webhook("not-prod", f"{receiver.url}/not-prod", cluster=True, namespaceSelector=NOT_PROD)
    )
    await emu.create(environment("web"))
    await deploy(emu, "web", "d-1", "DEPLOYED")

    await wait_for(lambda: len(receiver.on("/local")) == 2, timeout=10, what="the namespace's own webhook")
    await wait_for(
        lambda: any(
            e["reason"] == "NamespaceUnreadable" and f"namespace {NS}" in e["message"]
            for _, e in k8s_events(emu, kind="ClusterWebhook", name="not-prod")
        ),
        timeout=10,
        what="a Warning naming the namespace on the ClusterWebhook",
    )
    await wait_for(lambda: outage["refused"] >= 2, timeout=10, what="the namespace read retried")
    assert receiver.on("/not-prod") == []  # a NotIn selector never matched against {}
    annotations = (emu.get("Environment", NS, "web") or {})["metadata"].get("annotations", {})
    assert LEDGER_ANNOTATION not in annotations  # nothing recorded while a webhook is undecided

    outage["on"] = False
    await wait_for(lambda: len(receiver.on("/not-prod")) == 2, timeout=15, what="delivery once readable")
    assert event_types(receiver, "/not-prod") == ["DEPLOYMENT_STARTED", "DEPLOYMENT_SUCCESSFUL"]
    await wait_for(
        lambda: (
            LEDGER_ANNOTATION in (emu.get("Environment", NS, "web") or {})["metadata"].get("annotations", {})
        ),
        timeout=10,
        what="the ledger once every webhook is decided",
    )
    assert len(receiver.on("/local")) == 2  # the retry re-queued nothing already queued


# ---------------------------------------------------------------- item 7


async def test_webhooks_created_while_an_environment_is_handled_lose_no_event(
    emu: Emulator, receiver: Receiver, operator: Runtime
) -> None:
    """ClusterWebhooks arrive while the handler awaits a namespace read: the event still goes out."""
    gate = asyncio.Event()
    reads = {"n": 0}

    async def hold(_request: object) -> None:
        reads["n"] += 1
        await gate.wait()
        raise NotImplementedError  # then the Namespace is served

    emu.kmock["get", f"/api/v1/namespaces/{NS}"] << hold
    await namespace(emu, NS, {"team": "a"})
    await emu.create(
        webhook(
            "team-a", f"{receiver.url}/team-a", cluster=True, namespaceSelector={"matchLabels": {"team": "a"}}
        )
    )
    await emu.create(webhook("z-last", f"{receiver.url}/z-last", cluster=True))
    await emu.create(environment("web"))
    await deploy(emu, "web", "d-1", "QUEUED")
    await wait_for(lambda: reads["n"] >= 1, timeout=10, what="the handler reading the namespace")
    for n in range(5):
        await emu.create(webhook(f"late-{n}", f"{receiver.url}/late", cluster=True))
    await wait_for(lambda: len(operator.index.cluster()) == 7, timeout=10, what="the late webhooks indexed")
    gate.set()
    await wait_for(lambda: len(receiver.on("/team-a")) == 1, timeout=10, what="the selected ClusterWebhook")
    await wait_for(lambda: len(receiver.on("/z-last")) == 1, timeout=10, what="the other ClusterWebhook")


# ---------------------------------------------------------------- item 11


def environment_patches(emu: Emulator, name: str) -> int:
    """PATCHes of the Environment object itself (its status is written by the test's controller)."""
    path = f"/namespaces/{NS}/environments/{name}"
    return sum(
        1
        for r in list(emu.kmock._requests)
        if r.method == "PATCH" and str(r.url).split("?")[0].endswith(path)
    )


async def test_an_event_nobody_listens_to_writes_nothing(
    emu: Emulator, receiver: Receiver, operator: Runtime
) -> None:
    await emu.create(webhook("failures", f"{receiver.url}/failures", events=("DEPLOYMENT_FAILURE",)))
    await emu.create(environment("web"))
    for state in ("QUEUED", "DEPLOYING", "DEPLOYED"):
        await deploy(emu, "web", "d-1", state)  # nobody takes STARTED or SUCCESSFUL
    await deploy(emu, "web", "d-2", "DEPLOYMENT_ERROR")  # after d-1's watch events: a barrier
    await wait_for(lambda: len(receiver.on("/failures")) == 1, timeout=10, what="the failure's delivery")
    await wait_for(
        lambda: (
            LEDGER_ANNOTATION in (emu.get("Environment", NS, "web") or {})["metadata"].get("annotations", {})
        ),
        timeout=10,
        what="the ledger of what was queued",
    )
    assert environment_patches(emu, "web") == 1  # d-2's ledger only
    reasons = [e["reason"] for _, e in k8s_events(emu, kind="Environment", name="web")]
    assert reasons == ["DeploymentFailure"]


# ---------------------------------------------------------------- item 5


async def test_a_webhook_deleted_during_a_watch_gap_stops_receiving(
    emu: Emulator, receiver: Receiver
) -> None:
    settings = dataclasses.replace(FAST, watch_timeout=1)  # kopf re-lists, Herald reconciles, twice a second
    async with running_operator(emu, settings) as operator:
        await emu.create(webhook("stays", f"{receiver.url}/stays", events=("DEPLOYMENT_STARTED",)))
        await emu.create(webhook("gone", f"{receiver.url}/gone", events=("DEPLOYMENT_STARTED",)))
        await emu.create(environment("web"))
        await deploy(emu, "web", "d-1", "QUEUED")
        await wait_for(
            lambda: len(receiver.on("/stays")) == len(receiver.on("/gone")) == 1, timeout=10, what="both"
        )
        silently_delete(emu, "Webhook", NS, "gone")
        gone = ObjectRef(namespace=NS, name="gone")
        await wait_for(
            lambda: operator.dispatcher.status_of(cluster=False, ref=gone) is None,
            timeout=15,
            what="the deleted webhook's worker forgotten",
        )
        assert "gone" not in {v.ref.name for v in operator.index.namespaced(NS)}
        await deploy(emu, "web", "d-2", "QUEUED")
        await wait_for(lambda: len(receiver.on("/stays")) == 2, timeout=10, what="the next deployment")
    assert len(receiver.on("/gone")) == 1


async def test_a_webhook_whose_status_answers_404_stops_receiving(
    emu: Emulator, receiver: Receiver, operator: Runtime
) -> None:
    """With no re-list in sight (watch_timeout 300 s), the 404 on the status patch after the
    webhook's last delivery drops it at once."""
    await emu.create(webhook("stays", f"{receiver.url}/stays", events=("DEPLOYMENT_STARTED",)))
    await emu.create(webhook("gone", f"{receiver.url}/gone", events=("DEPLOYMENT_STARTED",)))
    await emu.create(environment("web"))
    silently_delete(emu, "Webhook", NS, "gone")
    await deploy(emu, "web", "d-1", "QUEUED")  # Herald still believes in it: one last delivery
    await wait_for(lambda: len(receiver.on("/gone")) == 1, timeout=10, what="the last delivery")
    gone = ObjectRef(namespace=NS, name="gone")
    await wait_for(
        lambda: operator.dispatcher.status_of(cluster=False, ref=gone) is None,
        timeout=10,
        what="the webhook forgotten after its status answered 404",
    )
    await deploy(emu, "web", "d-2", "QUEUED")
    await wait_for(lambda: len(receiver.on("/stays")) == 2, timeout=10, what="the next deployment")
    assert len(receiver.on("/gone")) == 1
