"""Issue 5: what a person running Herald relies on — metrics, Kubernetes Events, test pings and
redelivery, JSON logs, health probes and two replicas — against the emulator, in-process and as
real ``herald run`` processes."""

from __future__ import annotations

import asyncio
import datetime
import json
import signal
import time
from collections.abc import Mapping
from typing import Any

import httpx
import kmock
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from herald.handlers import Runtime
from herald.kube import API_GROUP, API_VERSION
from herald.metrics import Metrics
from herald.models import DeliveryOutcome, EventType, WebhookKind
from herald.testing import Emulator, Receiver, herald_watches, wait_for
from tests.cluster.controlplane import free_port

from .conftest import NS, deliveries, deploy, environment, pending, secret, status_of, webhook
from .operator_process import OperatorProcess

PING = "herald.dev/ping"
REDELIVER = "herald.dev/redeliver"
LEASE_NAMESPACE = "herald-system"
LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases"
WATCHES = herald_watches(sources=True)  # one replica's (the emulator serves every source's kind)
REPLICA_ENV = {
    "HERALD_LEADER_ELECTION": "true",
    "HERALD_LEASE_NAMESPACE": LEASE_NAMESPACE,
    "HERALD_LEASE_DURATION": "3",
}
Labels = frozenset[tuple[str, str]]
Samples = dict[tuple[str, Labels], float]  # (sample name, labels) -> value
# Label values a metric may carry: bounded sets only, never a name, a URL or a secret.
BOUNDED_LABELS = {
    "kind": {k.value for k in WebhookKind},
    "event": {e.value for e in EventType},
    "outcome": {o.value for o in DeliveryOutcome},
    "verb": {"create", "patch", "delete"},
}


# ---------------------------------------------------------------- helpers


LOOPBACKS = ("[::1]", "127.0.0.1")  # what the kubelet and Prometheus reach on a dual-stack pod


def samples(text: str) -> Samples:
    """Herald's samples from a Prometheus text exposition."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for metric in text_string_to_metric_families(text)
        for s in metric.samples
        if s.name.startswith("herald_") and not s.name.endswith("_created")
    }


def family(values: Samples, name: str) -> dict[Labels, float]:
    """One metric's non-zero samples by labels."""
    return {labels: v for (n, labels), v in values.items() if n == name and v}


def labels(**pairs: str) -> Labels:
    return frozenset(pairs.items())


def scrape(metrics: Metrics) -> Samples:
    return samples(generate_latest(metrics.registry).decode())


def k8s_events(emu: Emulator, *, kind: str, name: str) -> list[dict[str, Any]]:
    """Kubernetes Events posted about one object, oldest first."""
    return [
        dict(obj.raw)
        for (resource, _ns, _name), obj in list(emu.kmock.objects.items())
        if resource.plural == "events"
        and not obj.deleted
        and obj.raw.get("involvedObject", {}).get("kind") == kind
        and obj.raw.get("involvedObject", {}).get("name") == name
    ]


def reasons(emu: Emulator, *, kind: str, name: str) -> list[tuple[str, str]]:
    return [(e["type"], e["reason"]) for e in k8s_events(emu, kind=kind, name=name)]


async def annotate(emu: Emulator, name: str, *, annotations: Mapping[str, str]) -> None:
    await emu.patch("Webhook", NS, name, {"metadata": {"annotations": dict(annotations)}})


def payload_ids(receiver: Receiver, path: str) -> list[str]:
    return [r.json()["payload_id"] for r in receiver.on(path)]


def settled(emu: Emulator, name: str, *, finished: int) -> bool:
    """The webhook's status shows ``finished`` deliveries done and nothing pending."""
    status = status_of(emu, "Webhook", NS, name)
    counters = status.get("counters") or {}
    return (
        not status.get("pendingDeliveries")
        and counters.get("delivered", 0) + counters.get("failed", 0) == finished
    )


async def status_code(http: httpx.AsyncClient, path: str) -> int | None:
    try:
        return (await http.get(path)).status_code
    except httpx.TransportError:  # the process is not listening yet
        return None


async def wait_for_status(http: httpx.AsyncClient, path: str, *, expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (code := await status_code(http, path)) != expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {path} to answer {expected} ({code})")
        await asyncio.sleep(0.05)


def lease_holder(emu: Emulator) -> str | None:
    for (resource, ns, name), obj in list(emu.kmock.objects.items()):
        if resource.plural == "leases" and ns == LEASE_NAMESPACE and name == "herald" and not obj.deleted:
            holder: str | None = obj.raw.get("spec", {}).get("holderIdentity")
            return holder
    return None


def holds_lease(emu: Emulator, proc: OperatorProcess) -> bool:
    """The Lease's identity is ``host-pid-random``: the process whose pid it names leads."""
    holder = lease_holder(emu)
    return proc.proc is not None and holder is not None and f"-{proc.proc.pid}-" in holder


# ---------------------------------------------------------------- metrics


async def test_metrics_count_a_scenario(
    emu: Emulator, receiver: Receiver, operator: Runtime, metrics: Metrics
) -> None:
    await emu.create(webhook("std", f"{receiver.url}/std"))
    await emu.create(environment("web"))
    steps: tuple[tuple[str, str, list[int], int], ...] = (  # deployment, state, receiver answers, finished
        ("d-1", "QUEUED", [], 1),  # STARTED: 200
        ("d-1", "DEPLOYED", [404], 2),  # SUCCESSFUL: 404, failed for good
        ("d-2", "QUEUED", [503], 3),  # STARTED: 503, retried, 200
        ("d-2", "DEPLOYED", [], 4),  # SUCCESSFUL: 200
    )
    for deployment_id, state, answers, finished in steps:
        receiver.scripts["/std"] = list(answers)
        await deploy(emu, "web", deployment_id, state)
        if answers == [503]:  # while the retry waits, the gauge counts it
            await wait_for(
                lambda: scrape(metrics).get(("herald_pending_deliveries", labels())) == 1,
                timeout=10,
                what="one pending delivery on the gauge",
            )
        await wait_for(lambda: settled(emu, "std", finished=finished), timeout=10, what=f"{finished} done")

    values = scrape(metrics)
    std = WebhookKind.STANDARD.value
    assert family(values, "herald_deliveries_total") == {
        labels(kind=std, event="DEPLOYMENT_STARTED", outcome="Succeeded"): 2,
        labels(kind=std, event="DEPLOYMENT_SUCCESSFUL", outcome="Succeeded"): 1,
        labels(kind=std, event="DEPLOYMENT_SUCCESSFUL", outcome="Failed"): 1,
    }
    assert family(values, "herald_delivery_attempts_total") == {
        labels(result="success"): 3,
        labels(result="HTTPError"): 2,  # the 404 and the 503
    }
    assert values[("herald_delivery_duration_seconds_count", labels())] == 5
    assert values[("herald_pending_deliveries", labels())] == 0
    assert family(values, "herald_deployment_events_total") == {
        labels(event="DEPLOYMENT_STARTED"): 2,
        labels(event="DEPLOYMENT_SUCCESSFUL"): 2,
    }


async def test_metrics_endpoint_of_herald_run(emu: Emulator, receiver: Receiver) -> None:
    port = free_port()
    path = "/std/token-in-the-path"
    await emu.create(secret("hook-secret", {"secret": "s3cr3t-value"}))
    await emu.create(webhook("std", f"{receiver.url}{path}", secretRef={"name": "hook-secret"}))
    await emu.create(environment("web"))
    proc = OperatorProcess(emu, {"HERALD_METRICS_PORT": str(port)})
    try:
        await proc.start()  # inside: a failed start still stops the process
        await deploy(emu, "web", "d-1", "DEPLOYED")
        await wait_for(lambda: settled(emu, "std", finished=2), timeout=15, what="two deliveries done")
        async with httpx.AsyncClient(trust_env=False) as http:
            responses = [await http.get(f"http://{host}:{port}/metrics") for host in LOOPBACKS]
    finally:
        assert await proc.stop() == 0
    assert [r.status_code for r in responses] == [200, 200]
    text = responses[0].text
    assert samples(responses[1].text) == samples(text)
    values = samples(text)
    std = WebhookKind.STANDARD.value
    assert family(values, "herald_deliveries_total") == {
        labels(kind=std, event="DEPLOYMENT_STARTED", outcome="Succeeded"): 1,
        labels(kind=std, event="DEPLOYMENT_SUCCESSFUL", outcome="Succeeded"): 1,
    }
    assert family(values, "herald_delivery_attempts_total") == {labels(result="success"): 2}
    assert values[("herald_delivery_duration_seconds_count", labels())] == 2
    assert values[("herald_pending_deliveries", labels())] == 0
    assert family(values, "herald_deployment_events_total") == {
        labels(event="DEPLOYMENT_STARTED"): 1,
        labels(event="DEPLOYMENT_SUCCESSFUL"): 1,
    }
    for secret_or_name in ("s3cr3t-value", "token-in-the-path", "127.0.0.1", str(receiver.port), NS):
        assert secret_or_name not in text
    for _name, pairs in values:
        for key, value in pairs:
            if key in BOUNDED_LABELS:
                assert value in BOUNDED_LABELS[key], (key, value)
            elif key == "result":  # "success" or a failure reason's name
                assert value.isalpha(), value
            else:
                assert key == "le", key


# ---------------------------------------------------------------- Kubernetes Events

# webhook: what its receiver answers, and the Kubernetes Events it must get, in order
# (FAST retries three times: four attempts in all).
EVENT_CASES: dict[str, tuple[list[int], list[tuple[str, str]]]] = {
    "recovers": ([503, 200], [("Warning", "DeliveryFailed"), ("Normal", "Recovered")]),
    "exhausted": ([503, 503, 503, 503], [("Warning", "DeliveryFailed"), ("Warning", "RetriesExhausted")]),
    "rejected": ([404], [("Warning", "DeliveryFailed")]),
    "gone": ([410], [("Warning", "Paused")]),
    "fine": ([200], []),
}


async def test_webhook_events_tell_the_story(emu: Emulator, receiver: Receiver, operator: Runtime) -> None:
    for name, (answers, _events) in EVENT_CASES.items():
        receiver.scripts[f"/{name}"] = list(answers)
        await emu.create(webhook(name, f"{receiver.url}/{name}", events=("DEPLOYMENT_STARTED",)))
    await emu.create(environment("web"))
    await deploy(emu, "web", "d-1", "QUEUED")
    for name, (answers, expected) in EVENT_CASES.items():
        await wait_for(
            lambda: len(receiver.on(f"/{name}")) == len(answers),  # awaited at once: the loop's values
            timeout=15,
            what=f"{name}: every attempt",
        )
        await wait_for(
            lambda: len(reasons(emu, kind="Webhook", name=name)) >= len(expected),
            timeout=10,
            what=f"{name}: {len(expected)} Events",
        )
    got = {name: reasons(emu, kind="Webhook", name=name) for name in EVENT_CASES}
    assert got == {name: expected for name, (_answers, expected) in EVENT_CASES.items()}
    for name in EVENT_CASES:
        uid = (emu.get("Webhook", NS, name) or {})["metadata"]["uid"]
        for event in k8s_events(emu, kind="Webhook", name=name):
            assert event["involvedObject"]["namespace"] == NS
            assert event["involvedObject"]["uid"] == uid
            assert "127.0.0.1" not in event["message"]
    (exhausted,) = [
        e for e in k8s_events(emu, kind="Webhook", name="exhausted") if e["reason"] != "DeliveryFailed"
    ]
    assert "4 attempts" in exhausted["message"]


async def test_each_deployment_event_is_a_kubernetes_event_on_the_environment(
    emu: Emulator, receiver: Receiver, operator: Runtime
) -> None:
    await emu.create(webhook("std", f"{receiver.url}/std"))
    await emu.create(environment("web"))
    await deploy(emu, "web", "d-1", "QUEUED")
    await deploy(emu, "web", "d-1", "DEPLOYING")  # already started: no new Event
    await deploy(emu, "web", "d-1", "DEPLOYED")
    expected = [("Normal", "DeploymentStarted"), ("Normal", "DeploymentSuccessful")]
    await wait_for(
        lambda: reasons(emu, kind="Environment", name="web") == expected,
        timeout=10,
        what="DeploymentStarted then DeploymentSuccessful on the Environment",
    )
    uid = (emu.get("Environment", NS, "web") or {})["metadata"]["uid"]
    for event in k8s_events(emu, kind="Environment", name="web"):
        assert event["involvedObject"]["uid"] == uid
        assert event["involvedObject"]["apiVersion"] == "herald.dev/v1alpha1"
        assert "d-1" in event["message"]
    await wait_for(lambda: settled(emu, "std", finished=2), timeout=10, what="both deliveries")
    assert reasons(emu, kind="Environment", name="web") == expected


# ---------------------------------------------------------------- ping and redeliver


async def test_ping_sends_a_test_delivery_once_per_value(
    emu: Emulator, receiver: Receiver, operator: Runtime
) -> None:
    await emu.create(webhook("std", f"{receiver.url}/std"))
    await annotate(emu, "std", annotations={PING: "1"})
    await wait_for(lambda: len(receiver.on("/std")) == 1, timeout=10, what="the test delivery")
    body = receiver.on("/std")[0].json()
    assert body["event_type"] == "WEBHOOK_TEST"
    assert body["payload_type"] == "TEST"
    assert body["payload"]["id"] == "test-1"
    await wait_for(
        lambda: status_of(emu, "Webhook", NS, "std").get("handledPing") == "1", timeout=10, what="handledPing"
    )
    await wait_for(lambda: settled(emu, "std", finished=1), timeout=10, what="the ping recorded")
    record = deliveries(emu, "std")[0]
    assert (record["event"], record["outcome"], record["payloadId"]) == (
        "WEBHOOK_TEST",
        "Succeeded",
        body["payload_id"],
    )

    # The same value, seen again with a new generation (made visible by observedGeneration), is
    # not acted on; a new value is, and being handled after, it is the barrier.
    await emu.patch("Webhook", NS, "std", {"metadata": {"generation": 2}, "spec": {"description": "x"}})
    await wait_for(
        lambda: status_of(emu, "Webhook", NS, "std").get("observedGeneration") == 2,
        timeout=10,
        what="the new generation observed",
    )
    await annotate(emu, "std", annotations={PING: "2"})
    await wait_for(lambda: len(receiver.on("/std")) >= 2, timeout=10, what="the second ping")
    await wait_for(
        lambda: status_of(emu, "Webhook", NS, "std").get("handledPing") == "2", timeout=10, what="handledPing"
    )
    assert [r.json()["payload"]["id"] for r in receiver.on("/std")] == ["test-1", "test-2"]
    assert len(set(payload_ids(receiver, "/std"))) == 2


async def test_handled_ping_survives_a_restart(emu: Emulator, receiver: Receiver) -> None:
    await emu.create(webhook("std", f"{receiver.url}/std"))
    await emu.create(environment("web"))
    first = OperatorProcess(emu)
    try:
        await first.start()
        await annotate(emu, "std", annotations={PING: "1"})
        await wait_for(lambda: len(receiver.on("/std")) == 1, timeout=10, what="the test delivery")
        await wait_for(
            lambda: status_of(emu, "Webhook", NS, "std").get("handledPing") == "1",
            timeout=10,
            what="handledPing persisted",
        )
    finally:
        assert await first.stop() == 0
    second = OperatorProcess(emu)
    try:
        await second.start()
        # Barrier: a delivery through the same webhook's queue, which a re-sent ping would precede.
        await deploy(emu, "web", "d-1", "QUEUED")
        await wait_for(lambda: len(receiver.on("/std")) >= 2, timeout=10, what="the deployment delivery")
        await annotate(emu, "std", annotations={PING: "2"})
        await wait_for(lambda: len(receiver.on("/std")) >= 3, timeout=10, what="a new ping")
    finally:
        assert await second.stop() == 0
    sent = [(r.json()["event_type"], r.json()["payload"]["id"]) for r in receiver.on("/std")]
    assert sent == [("WEBHOOK_TEST", "test-1"), ("DEPLOYMENT_STARTED", "d-1"), ("WEBHOOK_TEST", "test-2")]


async def test_redeliver_failed_one_and_unknown(emu: Emulator, receiver: Receiver, operator: Runtime) -> None:
    await emu.create(webhook("std", f"{receiver.url}/std"))
    await emu.create(environment("web"))
    receiver.scripts["/std"] = [404, 404]  # STARTED and SUCCESSFUL both fail for good
    await deploy(emu, "web", "d-1", "DEPLOYED")
    await wait_for(lambda: settled(emu, "std", finished=2), timeout=10, what="two failed deliveries")
    assert status_of(emu, "Webhook", NS, "std")["counters"]["failed"] == 2
    originals = {r.json()["payload_id"]: r.json() for r in receiver.on("/std")}
    assert len(originals) == 2

    # `failed`: every failed delivery in the history, again, with its payload_id; the receiver is fine now.
    await annotate(emu, "std", annotations={REDELIVER: "failed"})
    await wait_for(lambda: len(receiver.on("/std")) == 4, timeout=10, what="both failed deliveries re-sent")
    resent = receiver.on("/std")[2:]
    assert sorted(r.json()["payload_id"] for r in resent) == sorted(originals)
    assert all(r.json() == originals[r.json()["payload_id"]] for r in resent)
    assert [r.status for r in resent] == [200, 200]

    def acknowledged(value: str) -> bool:
        return status_of(emu, "Webhook", NS, "std").get("handledRedeliver") == value

    await wait_for(lambda: acknowledged("failed"), timeout=10, what="handledRedeliver=failed")
    await wait_for(
        lambda: status_of(emu, "Webhook", NS, "std").get("counters", {}).get("delivered") == 2,
        timeout=10,
        what="the redeliveries recorded",
    )
    outcomes = {r["payloadId"]: r["outcome"] for r in deliveries(emu, "std")}
    assert outcomes == dict.fromkeys(originals, "Succeeded")

    # One payload_id, by name.
    chosen = next(iter(originals))
    await annotate(emu, "std", annotations={REDELIVER: chosen})
    await wait_for(lambda: len(receiver.on("/std")) == 5, timeout=10, what="the chosen redelivery")
    assert receiver.on("/std")[4].json() == originals[chosen]
    await wait_for(lambda: acknowledged(chosen), timeout=10, what=f"handledRedeliver={chosen}")

    # An unknown payload_id: a Warning Event naming it, acknowledged, and the operator carries on.
    await annotate(emu, "std", annotations={REDELIVER: "no-such-payload"})

    def warned() -> bool:
        return any(
            e["type"] == "Warning" and e["reason"] == "Redeliver" and "no-such-payload" in e["message"]
            for e in k8s_events(emu, kind="Webhook", name="std")
        )

    await wait_for(warned, timeout=10, what="a Warning Event about the unknown payload_id")
    await wait_for(lambda: acknowledged("no-such-payload"), timeout=10, what="the unknown one acknowledged")
    await annotate(emu, "std", annotations={PING: "after"})
    await wait_for(lambda: len(receiver.on("/std")) == 6, timeout=10, what="a ping afterwards")
    assert receiver.on("/std")[5].json()["event_type"] == "WEBHOOK_TEST"


# ---------------------------------------------------------------- logs and health


async def test_json_logs_name_the_delivery(emu: Emulator, receiver: Receiver) -> None:
    await emu.create(webhook("std", f"{receiver.url}/std"))
    await emu.create(environment("web"))
    proc = OperatorProcess(emu, args=("--log-format", "json"))
    try:
        await proc.start()
        await deploy(emu, "web", "d-1", "QUEUED")
        await wait_for(lambda: len(receiver.on("/std")) == 1, timeout=10, what="the delivery")
        await wait_for(lambda: '"payload_id"' in proc.output(), timeout=10, what="the delivery's log line")
    finally:
        assert await proc.stop() == 0
    lines = [line for line in proc.output().splitlines() if line.strip()]
    assert len(lines) > 5
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise AssertionError(f"not a JSON line: {line!r}") from exc
    assert all({"time", "level", "logger", "message"} <= set(p) for p in parsed)
    about = [p for p in parsed if "payload_id" in p]
    assert about, "no log line names a delivery"
    delivered = next(p for p in about if p["message"].startswith("delivered"))
    assert delivered["webhook"] == f"{NS}/std"
    assert delivered["environment"] == f"{NS}/web"
    assert delivered["event"] == "DEPLOYMENT_STARTED"
    assert delivered["payload_id"] == receiver.on("/std")[0].json()["payload_id"]


async def test_standby_is_live_and_ready_without_watching(emu: Emulator) -> None:
    """A replica waiting for the Lease is healthy: live, and ready too, or a rolling update of the
    two-replica Deployment (maxUnavailable 0) could never replace the leader. It watches nothing
    until it leads."""
    port = free_port()
    now = datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    held = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "herald", "namespace": LEASE_NAMESPACE},
        "spec": {"holderIdentity": "another-replica", "leaseDurationSeconds": 3600, "renewTime": now},
    }
    assert (await emu.kmock.post(LEASES, json=held)).status < 300
    proc = OperatorProcess(emu, {**REPLICA_ENV, "HERALD_HEALTH_PORT": str(port)})
    try:
        await proc.start(wait=False)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False) as http:
            await wait_for_status(http, "/healthz", expected=200, timeout=30)
            await wait_for(lambda: "waiting to lead" in proc.output(), timeout=10, what="the standby's log")
            await wait_for_status(http, "/readyz", expected=200, timeout=10)  # once the API answered
            assert emu.watches() == 0
            assert "acquired" not in proc.output()
            await emu.kmock.delete(f"{LEASES}/herald")  # the other replica is gone
            await wait_for(
                lambda: emu.watches() >= WATCHES, timeout=30, what="the watch streams once leading"
            )
            await wait_for_status(http, "/readyz", expected=200, timeout=30)
            assert await status_code(http, "/healthz") == 200
    finally:
        assert await proc.stop() == 0


@pytest.mark.parametrize("plural", ["webhooks", "environments"])
async def test_readiness_follows_the_watch_streams(emu: Emulator, plural: str) -> None:
    """Not ready while the API server refuses to list Webhooks or Environments (so their watch
    stream is not open and deployment events are not handled)."""
    port = free_port()
    outage = {"on": True, "refused": 0}

    def refuse(_request: object) -> None:
        if not outage["on"]:
            raise NotImplementedError  # kmock: not this reaction; the emulator answers
        outage["refused"] += 1
        raise kmock.KubernetesError(status=503, reason="ServiceUnavailable", message="API server outage")

    emu.kmock["list", f"/apis/{API_GROUP}/{API_VERSION}/{plural}"] << refuse
    proc = OperatorProcess(emu, {"HERALD_HEALTH_PORT": str(port)})
    try:
        await proc.start(wait=False)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False) as http:
            await wait_for_status(http, "/healthz", expected=200, timeout=30)
            await wait_for(lambda: outage["refused"] >= 1, timeout=30, what="a refused list of Webhooks")
            assert await status_code(http, "/readyz") == 503
            outage["on"] = False
            await wait_for_status(http, "/readyz", expected=200, timeout=30)
            assert emu.watches() >= WATCHES
        async with httpx.AsyncClient(trust_env=False) as http:
            for host in LOOPBACKS:  # the kubelet probes the pod's IP, IPv6 on an IPv6 cluster
                assert await status_code(http, f"http://{host}:{port}/healthz") == 200
                assert await status_code(http, f"http://{host}:{port}/readyz") == 200
    finally:
        assert await proc.stop() == 0


# ---------------------------------------------------------------- two replicas


async def test_two_replicas_deliver_once_and_hand_over(emu: Emulator, receiver: Receiver) -> None:
    await emu.create(webhook("std", f"{receiver.url}/std"))
    names = ["env-0", "env-1", "env-2", "barrier"]
    for name in names:
        await emu.create(environment(name))
    env = {**REPLICA_ENV, "HERALD_RETRY_SCHEDULE": ",".join(["0.3"] * 30)}
    replicas = [OperatorProcess(emu, env), OperatorProcess(emu, env)]
    try:
        for replica in replicas:
            await replica.start(wait=False)
        await wait_for(
            lambda: emu.watches() >= WATCHES and any(holds_lease(emu, r) for r in replicas),
            timeout=30,
            what="one replica leading and watching",
        )
        active, standby = replicas if holds_lease(emu, replicas[0]) else replicas[::-1]
        await wait_for(lambda: "waiting to lead" in standby.output(), timeout=30, what="the standby waiting")

        # The active replica delivers; the standby does nothing.
        await deploy(emu, "env-0", "d-1", "DEPLOYED")
        await wait_for(lambda: settled(emu, "std", finished=2), timeout=15, what="two deliveries")

        # The receiver goes down with four deliveries pending; the active replica is SIGKILLed.
        receiver.scripts["/std"] = [503] * 1000
        for name in ("env-1", "env-2"):
            await deploy(emu, name, "d-1", "DEPLOYED")

        def pending_persisted() -> bool:
            stored = pending(emu, "std")
            return len(stored) == 4 and all(p.get("attempts", 0) >= 1 for p in stored)

        await wait_for(pending_persisted, timeout=20, what="four pending deliveries persisted")
        assert emu.watches() == WATCHES  # the standby opened none
        assert "acquired" not in standby.output()
        active.kill()
        killed_at = time.monotonic()
        await wait_for(lambda: emu.watches() >= 2 * WATCHES, timeout=20, what="the standby taking over")
        assert time.monotonic() - killed_at < 10
        assert holds_lease(emu, standby)

        receiver.scripts["/std"] = []  # the receiver recovers
        await wait_for(lambda: settled(emu, "std", finished=6), timeout=30, what="all six delivered")
        await deploy(emu, "barrier", "b-1", "QUEUED")
        await wait_for(lambda: settled(emu, "std", finished=7), timeout=15, what="the barrier delivered")
    finally:
        for replica in replicas:
            replica.kill()
    accepted: dict[str, int] = {}
    for request in receiver.on("/std"):
        if request.status == 200:
            pid = request.json()["payload_id"]
            accepted[pid] = accepted.get(pid, 0) + 1
    assert len(accepted) == 7
    assert set(accepted.values()) == {1}
    assert status_of(emu, "Webhook", NS, "std")["counters"]["delivered"] == 7


async def test_sigterm_of_the_leader_hands_over_within_seconds(emu: Emulator, receiver: Receiver) -> None:
    """A rollout: the leader stops gracefully and releases the Lease, so the standby takes over at
    its next poll (2 s) instead of after the 30 s lease, and delivers."""
    await emu.create(webhook("std", f"{receiver.url}/std"))
    await emu.create(environment("web"))
    env = {**REPLICA_ENV, "HERALD_LEASE_DURATION": "30"}
    replicas = [OperatorProcess(emu, env), OperatorProcess(emu, env)]
    try:
        for replica in replicas:
            await replica.start(wait=False)
        await wait_for(
            lambda: emu.watches() >= WATCHES and any(holds_lease(emu, r) for r in replicas),
            timeout=30,
            what="one replica leading and watching",
        )
        leader, standby = replicas if holds_lease(emu, replicas[0]) else replicas[::-1]
        await wait_for(lambda: "waiting to lead" in standby.output(), timeout=30, what="the standby waiting")
        assert leader.proc is not None
        leader.proc.send_signal(signal.SIGTERM)  # as the kubelet does; the emulator keeps serving
        await wait_for(
            lambda: holds_lease(emu, standby) and emu.watches() >= 2 * WATCHES,
            timeout=10,  # a third of the lease: only a released Lease is taken this soon
            what="the standby leading and watching",
        )
        assert await leader.stop() == 0
        assert "released" in leader.output()
        await deploy(emu, "web", "d-1", "QUEUED")
        await wait_for(lambda: len(receiver.on("/std")) == 1, timeout=10, what="the standby's delivery")
    finally:
        for replica in replicas:
            replica.kill()


async def test_a_leader_cut_off_from_the_lease_steps_down(emu: Emulator) -> None:
    """Its Lease writes black-holed (they never answer), the leader stops at the renew deadline
    (2 s of a 3 s lease), not at the HTTP client's 30 s timeout, and exits non-zero."""
    black_hole = {"on": False, "held": 0}

    def hang(_request: object) -> Any:
        if not black_hole["on"]:
            raise NotImplementedError  # kmock: not this reaction; the emulator answers
        black_hole["held"] += 1
        return asyncio.Event().wait()  # awaited by kmock: never answers

    emu.kmock["patch", f"{LEASES}/herald"] << hang
    proc = OperatorProcess(emu, REPLICA_ENV)
    try:
        await proc.start()
        assert "acquired" in proc.output()
        black_hole["on"] = True
        await wait_for(
            lambda: proc.proc is not None and proc.proc.poll() is not None, timeout=15, what="step-down"
        )
        assert black_hole["held"] >= 1
        assert "not renewed within 2.0 s; stepping down" in proc.output()
    finally:
        code = await proc.stop()
    assert code == 1
