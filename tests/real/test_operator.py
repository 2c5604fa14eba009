"""``herald run`` against a real API server, with exactly the rights ``deploy/`` ships."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable

from herald.testing import Receiver, wait_for
from tests.cluster.controlplane import ControlPlane
from tests.cluster.faultproxy import Rule

from .conftest import (
    HERALD_NAMESPACE,
    HeraldProcess,
    Proxied,
    apply,
    environment,
    eventually,
    get_json,
    kubectl,
    move,
    webhook,
)

Start = Callable[..., Awaitable[HeraldProcess]]


def _secret(name: str, namespace: str, data: dict[str, str]) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": {"herald.dev/webhook-secret": "true"}},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


async def _events_of(plane: ControlPlane, namespace: str, kind: str, name: str) -> list[str]:
    items = (await get_json(plane, "-n", namespace, "events"))["items"]
    return [
        e["reason"]
        for e in items
        if e["involvedObject"]["kind"] == kind and e["involvedObject"]["name"] == name
    ]


async def test_delivers_as_its_service_account(
    installed: ControlPlane, namespace: str, receiver: Receiver, start_herald: Start
) -> None:
    """Token + CA file, RBAC from deploy/, leader election on: a Webhook and a ClusterWebhook
    both get STARTED then SUCCESSFUL, statuses and Events are written, nothing is forbidden."""
    audit = f"audit-{namespace}"
    await apply(
        installed,
        _secret("hook-secret", namespace, {"secret": "s3cret"}),
        webhook("shop-hook", namespace, f"{receiver.url}/shop", secretRef={"name": "hook-secret"}),
        {
            "apiVersion": "herald.dev/v1alpha1",
            "kind": "ClusterWebhook",
            "metadata": {"name": audit},
            "spec": {
                "kind": "STANDARD",
                "events": ["DEPLOYMENT_STARTED", "DEPLOYMENT_SUCCESSFUL"],
                "url": f"{receiver.url}/audit",
                "namespaceSelector": {"matchLabels": {"herald.dev/test-namespace": namespace}},
            },
        },
        environment("shop", namespace),
    )
    herald = await start_herald(
        HERALD_NAMESPACE=namespace, HERALD_LEADER_ELECTION="true", HERALD_LEASE_NAMESPACE=HERALD_NAMESPACE
    )
    try:
        for state in ("QUEUED", "DEPLOYING", "DEPLOYED"):
            await move(installed, namespace, "shop", "d-1", state)
        await wait_for(
            lambda: len(receiver.on("/shop")) >= 2 and len(receiver.on("/audit")) >= 2,
            timeout=60,
            what="deliveries to the Webhook and the ClusterWebhook",
        )
        for path in ("/shop", "/audit"):
            assert [r.json()["event_type"] for r in receiver.on(path)] == [
                "DEPLOYMENT_STARTED",
                "DEPLOYMENT_SUCCESSFUL",
            ]
        assert {r.headers["Qovery-Secret"] for r in receiver.on("/shop")} == {"s3cret"}

        async def recorded() -> bool:
            status = (await get_json(installed, "-n", namespace, "webhook", "shop-hook")).get("status") or {}
            return bool((status.get("counters") or {}).get("delivered") == 2)

        await eventually(recorded, timeout=30, what="the Webhook's status")
        status = (await get_json(installed, "-n", namespace, "webhook", "shop-hook"))["status"]
        assert next(c for c in status["conditions"] if c["type"] == "Ready")["status"] == "True"
        lease = await get_json(installed, "-n", HERALD_NAMESPACE, "lease", "herald")
        assert lease["spec"]["holderIdentity"]

        async def described() -> bool:
            return "DeploymentStarted" in await _events_of(installed, namespace, "Environment", "shop")

        await eventually(described, timeout=30, what="a DeploymentStarted Event on the Environment")
        # RBAC denials ("... is forbidden: User ... cannot ..."), but for the optional sources, whose
        # grants are a separate component (a namespace being deleted also answers 403: not this).
        refused = [
            line
            for line in herald.output().splitlines()
            if "is forbidden: User" in line and "herald.sources" not in line
        ]
        assert not refused, refused[:5]
    finally:
        await apply_delete(installed, "clusterwebhook", audit)


async def apply_delete(plane: ControlPlane, kind: str, name: str) -> None:
    await kubectl(plane, "delete", kind, name, "--ignore-not-found", "--wait=false")


async def test_watch_cut_with_410_and_throttled_status_writes_lose_nothing(
    installed: ControlPlane, namespace: str, receiver: Receiver, fault_proxy: Proxied, start_herald: Start
) -> None:
    """Through a proxy: the Environment watch is cut with 410 Gone and the first status writes
    are answered 429 with Retry-After; every event still arrives once and the status lands."""
    proxy = fault_proxy.proxy
    await apply(installed, webhook("hook", namespace, f"{receiver.url}/hook"), environment("env", namespace))
    cut = proxy.add(Rule("GET", r"/environments$", watch_gone=True, times=2))
    throttled = proxy.add(Rule("PATCH", r"/webhooks/hook/status$", status=429, retry_after="1", times=2))
    await start_herald(fault_proxy.kubeconfig, HERALD_NAMESPACE=namespace)
    for state in ("QUEUED", "DEPLOYED"):
        await move(installed, namespace, "env", "d-1", state)
    await move(installed, namespace, "env", "d-2", "BUILD_ERROR")
    await wait_for(lambda: len(receiver.on("/hook")) >= 4, timeout=60, what="four deliveries")

    async def recorded() -> bool:
        status = (await get_json(installed, "-n", namespace, "webhook", "hook")).get("status") or {}
        return bool((status.get("counters") or {}).get("delivered") == 4)

    await eventually(recorded, timeout=30, what="the status despite 429s")
    sent = [(r.json()["payload"]["id"], r.json()["event_type"]) for r in receiver.on("/hook")]
    assert sent == [
        ("d-1", "DEPLOYMENT_STARTED"),
        ("d-1", "DEPLOYMENT_SUCCESSFUL"),
        ("d-2", "DEPLOYMENT_STARTED"),
        ("d-2", "DEPLOYMENT_FAILURE"),
    ]
    assert cut.fired == 2
    assert throttled.fired == 2


async def test_sigterm_of_the_leader_hands_over_to_the_standby_within_seconds(
    installed: ControlPlane, namespace: str, receiver: Receiver, start_herald: Start
) -> None:
    """Two replicas on a real Lease (30 s): the leader releases it on SIGTERM, the standby takes
    it at its next poll and delivers, long before the lease could have expired."""
    lease = f"herald-{namespace}"
    env = {
        "HERALD_NAMESPACE": namespace,
        "HERALD_LEADER_ELECTION": "true",
        "HERALD_LEASE_NAMESPACE": HERALD_NAMESPACE,
        "HERALD_LEASE_NAME": lease,
        "HERALD_LEASE_DURATION": "30",
    }
    await apply(installed, webhook("hook", namespace, f"{receiver.url}/hook"), environment("env", namespace))
    first = await start_herald(**env)

    async def holder() -> str:
        found = await get_json(installed, "-n", HERALD_NAMESPACE, "lease", lease)
        return str(found["spec"].get("holderIdentity") or "")

    await eventually(lambda: _truthy(holder()), timeout=30, what="a leader")
    second = await start_herald(**env)
    assert first.proc is not None
    assert second.proc is not None
    leader, standby = (first, second) if f"-{first.proc.pid}-" in await holder() else (second, first)
    await move(installed, namespace, "env", "d-1", "QUEUED")
    await wait_for(lambda: len(receiver.on("/hook")) >= 1, timeout=30, what="the leader's delivery")
    assert await leader.stop() == 0
    await move(installed, namespace, "env", "d-1", "DEPLOYED")
    # Well inside the 30 s lease: only a released Lease lets the standby deliver this soon.
    await wait_for(lambda: len(receiver.on("/hook")) >= 2, timeout=12, what="the standby's delivery")
    assert standby.proc is not None
    assert f"-{standby.proc.pid}-" in await holder()
    assert [r.json()["event_type"] for r in receiver.on("/hook")] == [
        "DEPLOYMENT_STARTED",
        "DEPLOYMENT_SUCCESSFUL",
    ]


async def _truthy(value: Awaitable[str]) -> bool:
    return bool(await value)


async def test_clusterwebhook_events_show_in_kubectl_describe(
    installed: ControlPlane, namespace: str, receiver: Receiver, start_herald: Start
) -> None:
    name = f"pinged-{namespace}"
    await apply(
        installed,
        {
            "apiVersion": "herald.dev/v1alpha1",
            "kind": "ClusterWebhook",
            "metadata": {"name": name, "annotations": {"herald.dev/ping": "1"}},
            "spec": {
                "kind": "STANDARD",
                "events": ["DEPLOYMENT_STARTED"],
                "url": f"{receiver.url}/ping",
                "namespaceSelector": {"matchLabels": {"herald.dev/test-namespace": namespace}},
            },
        },
    )
    try:
        await start_herald(HERALD_NAMESPACE=namespace)
        await wait_for(lambda: len(receiver.on("/ping")) >= 1, timeout=30, what="the test delivery")
        assert receiver.on("/ping")[0].json()["event_type"] == "WEBHOOK_TEST"

        async def described() -> bool:
            return "PingQueued" in await kubectl(installed, "describe", "clusterwebhook", name)

        await eventually(described, timeout=30, what="the ping's Event in kubectl describe")
    finally:
        await kubectl(installed, "delete", "clusterwebhook", name, "--ignore-not-found", "--wait=false")


async def test_two_replicas_starting_together_elect_one_leader(
    installed: ControlPlane, namespace: str, receiver: Receiver, start_herald: Start
) -> None:
    """Both candidates find the Lease missing or free and write it; the API server's
    resourceVersion check answers one of them 409, so exactly one delivers, once."""
    lease = f"race-{namespace}"
    env = {
        "HERALD_NAMESPACE": namespace,
        "HERALD_LEADER_ELECTION": "true",
        "HERALD_LEASE_NAMESPACE": HERALD_NAMESPACE,
        "HERALD_LEASE_NAME": lease,
    }
    await apply(installed, webhook("hook", namespace, f"{receiver.url}/hook"), environment("env", namespace))
    first, second = await asyncio.gather(start_herald(**env), start_herald(**env))
    for state in ("QUEUED", "DEPLOYED"):
        await move(installed, namespace, "env", "d-1", state)
    await wait_for(lambda: len(receiver.on("/hook")) >= 2, timeout=30, what="the deliveries")
    found = await get_json(installed, "-n", HERALD_NAMESPACE, "lease", lease)
    holders = [h for h in (first, second) if h.proc and f"-{h.proc.pid}-" in found["spec"]["holderIdentity"]]
    assert len(holders) == 1
    assert found["spec"]["leaseTransitions"] == 0
    sent = [r.json()["event_type"] for r in receiver.on("/hook")]
    assert sent == ["DEPLOYMENT_STARTED", "DEPLOYMENT_SUCCESSFUL"]


async def test_an_api_server_in_trouble_burns_no_delivery_attempt(
    installed: ControlPlane, namespace: str, receiver: Receiver, fault_proxy: Proxied, start_herald: Start
) -> None:
    """Through a proxy: the Secret read answers 503 twice and every status write is slow; the
    deliveries go once the read works, each on its first attempt, and the status lands."""
    proxy = fault_proxy.proxy
    await apply(
        installed,
        _secret("hook-secret", namespace, {"secret": "s3cret"}),
        webhook("hook", namespace, f"{receiver.url}/hook", secretRef={"name": "hook-secret"}),
        environment("env", namespace),
    )
    unavailable = proxy.add(Rule("GET", r"/secrets/hook-secret$", status=503, times=2))
    slow = proxy.add(Rule("PATCH", r"/webhooks/hook/status$", delay=1.0, times=-1))
    await start_herald(fault_proxy.kubeconfig, HERALD_NAMESPACE=namespace)
    for state in ("QUEUED", "DEPLOYED"):
        await move(installed, namespace, "env", "d-1", state)
    await wait_for(lambda: len(receiver.on("/hook")) >= 2, timeout=60, what="both deliveries")
    assert {r.headers["Qovery-Secret"] for r in receiver.on("/hook")} == {"s3cret"}

    async def recorded() -> bool:
        status = (await get_json(installed, "-n", namespace, "webhook", "hook")).get("status") or {}
        return bool((status.get("counters") or {}).get("delivered") == 2)

    await eventually(recorded, timeout=30, what="the status through slow writes")
    status = (await get_json(installed, "-n", namespace, "webhook", "hook"))["status"]
    assert status["lastDelivery"]["attempts"] == 1
    assert len(receiver.on("/hook")) == 2
    assert unavailable.fired == 2
    assert slow.fired >= 1
