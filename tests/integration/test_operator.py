"""Issue 2 end to end: events detected, matched, delivered, and recorded on the webhook's status."""

from __future__ import annotations

import json

from herald.events import LEDGER_ANNOTATION
from herald.handlers import Runtime
from herald.testing import Emulator, Receiver, wait_for

from .conftest import NS, condition, deliveries, deploy, environment, pending, secret, status_of, webhook
from .operator_process import OperatorProcess

ALL = ("DEPLOYMENT_STARTED", "DEPLOYMENT_SUCCESSFUL", "DEPLOYMENT_CANCELLED", "DEPLOYMENT_FAILURE")


def events_at(receiver: Receiver, path: str) -> list[str]:
    return [r.json()["event_type"] for r in receiver.on(path)]


async def test_deployment_is_delivered_and_recorded(
    emu: Emulator, receiver: Receiver, operator: Runtime
) -> None:
    await emu.create(secret("hook-secret", {"secret": "s3cr3t-value"}))
    await emu.create(webhook("std", f"{receiver.url}/std", secretRef={"name": "hook-secret"}))
    await emu.create(environment("web"))
    for state in ("QUEUED", "DEPLOYING", "DEPLOYED"):
        await deploy(emu, "web", "d-1", state)
    await wait_for(lambda: len(receiver.on("/std")) >= 2, timeout=10, what="two deliveries")

    assert events_at(receiver, "/std") == ["DEPLOYMENT_STARTED", "DEPLOYMENT_SUCCESSFUL"]
    started, done = (r.json() for r in receiver.on("/std"))
    headers = receiver.on("/std")[1].headers
    assert headers["Qovery-Secret"] == "s3cr3t-value"
    assert headers["Qovery-Signature"] == "s3cr3t-value"
    assert headers["User-Agent"].startswith("herald/")
    assert headers["Content-Type"] == "application/json"
    env_uid = emu.get("Environment", NS, "web")["metadata"]["uid"]
    assert done["payload_type"] == "DEPLOYMENT"
    assert done["payload"]["id"] == "d-1"
    assert done["payload"]["current_status"] == "DEPLOYED"
    assert done["payload"]["environment"]["id"] == env_uid
    assert done["payload"]["environment"]["namespace"] == NS
    assert done["payload"]["project"]["name"] == "shop-frontend"
    assert done["payload"]["applications"][0]["name"] == "web"
    assert started["payload_id"] != done["payload_id"]

    def recorded() -> bool:
        status = status_of(emu, "Webhook", NS, "std")
        return status.get("counters", {}).get("delivered") == 2 and not pending(emu, "std")

    await wait_for(recorded, timeout=10, what="both deliveries on the status")
    status = status_of(emu, "Webhook", NS, "std")
    assert status["observedGeneration"] == 1
    assert condition(emu, "Webhook", NS, "std")["status"] == "True"
    latest = deliveries(emu, "std")[0]
    assert latest["event"] == "DEPLOYMENT_SUCCESSFUL"
    assert latest["outcome"] == "Succeeded"
    assert latest["httpStatus"] == 200
    assert latest["attempts"] == 1
    assert latest["payloadId"] == done["payload_id"]
    assert latest["environment"] == f"{NS}/web"
    assert latest["deploymentId"] == "d-1"
    assert status["lastDelivery"]["payloadId"] == done["payload_id"]
    assert "s3cr3t-value" not in json.dumps(emu.get("Webhook", NS, "std"))

    def ledger() -> object:
        annotations = emu.get("Environment", NS, "web")["metadata"].get("annotations", {})
        return json.loads(annotations.get(LEDGER_ANNOTATION, "{}")).get("deployments", {}).get("d-1")

    await wait_for(
        lambda: ledger() == ["DEPLOYMENT_STARTED", "DEPLOYMENT_SUCCESSFUL"], timeout=10, what="ledger"
    )


async def test_first_state_seen_terminal_sends_started_first(
    emu: Emulator, receiver: Receiver, operator: Runtime
) -> None:
    await emu.create(webhook("std", f"{receiver.url}/std"))
    await emu.create(
        environment("web", status={"deployment": {"id": "d-9", "currentStatus": "DEPLOYMENT_ERROR"}})
    )
    await wait_for(lambda: len(receiver.on("/std")) >= 2, timeout=10, what="two deliveries")
    assert events_at(receiver, "/std") == ["DEPLOYMENT_STARTED", "DEPLOYMENT_FAILURE"]


async def test_unchanged_writes_and_new_ids(emu: Emulator, receiver: Receiver, operator: Runtime) -> None:
    await emu.create(webhook("std", f"{receiver.url}/std"))
    await emu.create(environment("web"))

    async def step(state: str, deployment_id: str, *, expect: int, **extra: object) -> None:
        await deploy(emu, "web", deployment_id, state, **extra)
        await wait_for(lambda: len(receiver.on("/std")) >= expect, timeout=10, what=f"{expect} deliveries")

    await step("DEPLOYING", "d-1", expect=1)
    await step("DEPLOYING", "d-1", expect=1, logs=["step 1"])  # a write that changes no state
    await step("BUILDING", "d-1", expect=1)  # the same deployment, already started
    await step("CANCELED", "d-1", expect=2)
    await step("DEPLOYED", "d-1", expect=2)  # a second outcome of one deployment: nothing
    await step("QUEUED", "d-2", expect=3)  # a new id starts a new cycle
    await step("STOPPED", "d-2", expect=3)  # stop states are not deployment events
    await step("DEPLOYED", "d-3", expect=5)  # the barrier: everything before it was handled
    sent = [(r.json()["payload"]["id"], r.json()["event_type"]) for r in receiver.on("/std")]
    assert sent == [
        ("d-1", "DEPLOYMENT_STARTED"),
        ("d-1", "DEPLOYMENT_CANCELLED"),
        ("d-2", "DEPLOYMENT_STARTED"),
        ("d-3", "DEPLOYMENT_STARTED"),
        ("d-3", "DEPLOYMENT_SUCCESSFUL"),
    ]


async def test_restart_resends_nothing(emu: Emulator, receiver: Receiver) -> None:
    """Two real ``herald run`` processes, one after the other, against the same cluster state."""
    await emu.create(webhook("std", f"{receiver.url}/std"))
    await emu.create(environment("web"))
    await emu.create(environment("barrier"))
    first = OperatorProcess(emu)
    await first.start()
    try:
        await deploy(emu, "web", "d-1", "DEPLOYED")
        await wait_for(lambda: len(receiver.on("/std")) == 2, timeout=10, what="first deliveries")

        def ledger_written() -> bool:
            annotations = emu.get("Environment", NS, "web")["metadata"].get("annotations", {})
            return LEDGER_ANNOTATION in annotations

        await wait_for(ledger_written, timeout=10, what="the notified ledger")
    finally:
        assert await first.stop() == 0
    # A new operator process re-lists everything: nothing already notified may be sent again,
    # not even when a status write touches the deployment without changing its state.
    second = OperatorProcess(emu)
    await second.start()
    try:
        await deploy(emu, "web", "d-1", "DEPLOYED", message="rewritten")
        await deploy(emu, "barrier", "b-1", "DEPLOYED")
        await wait_for(lambda: len(receiver.on("/std")) >= 4, timeout=10, what="the barrier's deliveries")
        await deploy(emu, "barrier", "b-2", "QUEUED")
        await wait_for(lambda: len(receiver.on("/std")) >= 5, timeout=10, what="the second barrier")
    finally:
        assert await second.stop() == 0
    sent = [(r.json()["payload"]["id"], r.json()["event_type"]) for r in receiver.on("/std")]
    assert sent.count(("d-1", "DEPLOYMENT_STARTED")) == 1
    assert sent.count(("d-1", "DEPLOYMENT_SUCCESSFUL")) == 1
    assert len(sent) == 5


async def test_filters_and_scopes(emu: Emulator, receiver: Receiver, operator: Runtime) -> None:
    u = receiver.url
    await emu.create(
        {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": NS, "labels": {"notify": "yes"}}}
    )
    await emu.create({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "team-b", "labels": {}}})
    await emu.create(webhook("all", f"{u}/all"))
    await emu.create(webhook("staging-only", f"{u}/staging", environmentTypesFilter=["STAGING"]))
    await emu.create(webhook("shop-glob", f"{u}/glob", projectNamesFilter=["SHOP-*", "billing"]))
    await emu.create(webhook("other-glob", f"{u}/other", projectNamesFilter=["shop"]))
    await emu.create(webhook("disabled", f"{u}/disabled", enabled=False))
    await emu.create(webhook("success-only", f"{u}/success", events=("DEPLOYMENT_SUCCESSFUL",)))
    await emu.create(webhook("elsewhere", f"{u}/elsewhere", namespace="team-b"))
    await emu.create(webhook("cluster-all", f"{u}/cluster", cluster=True))
    await emu.create(
        webhook(
            "cluster-sel", f"{u}/selected", cluster=True, namespaceSelector={"matchLabels": {"notify": "yes"}}
        )
    )
    await emu.create(
        webhook(
            "cluster-miss", f"{u}/missed", cluster=True, namespaceSelector={"matchLabels": {"notify": "no"}}
        )
    )
    await emu.create(environment("web"))
    await deploy(emu, "web", "d-1", "DEPLOYED")
    await wait_for(lambda: len(receiver.on("/success")) == 1, timeout=10, what="success-only")
    await wait_for(lambda: len(receiver.on("/selected")) == 2, timeout=10, what="namespaceSelector match")
    await wait_for(
        lambda: len(receiver.on("/all")) == 2 and len(receiver.on("/cluster")) == 2, timeout=10, what="all"
    )
    await wait_for(lambda: len(receiver.on("/glob")) == 2, timeout=10, what="glob")
    for path in ("/staging", "/other", "/disabled", "/elsewhere", "/missed"):
        assert receiver.on(path) == [], path
    assert events_at(receiver, "/success") == ["DEPLOYMENT_SUCCESSFUL"]


async def test_slack_webhook_with_url_from_secret(
    emu: Emulator, receiver: Receiver, operator: Runtime
) -> None:
    slack_url = f"{receiver.url}/services/T000/B000/XXXXSECRETTOKEN"
    await emu.create(secret("slack", {"url": slack_url}))
    await emu.create(
        webhook("slack", "", kind="SLACK", urlSecretRef={"name": "slack"}, events=("DEPLOYMENT_FAILURE",))
    )
    await emu.create(environment("web", project="<!channel> & co"))
    await deploy(emu, "web", "d-1", "BUILD_ERROR")
    path = "/services/T000/B000/XXXXSECRETTOKEN"
    await wait_for(lambda: len(receiver.on(path)) == 1, timeout=10, what="the slack message")
    message = receiver.on(path)[0].json()
    assert message["text"]
    assert "&lt;!channel&gt; &amp; co" in json.dumps(message)
    assert "<!channel>" not in json.dumps(message)
    await wait_for(
        lambda: status_of(emu, "Webhook", NS, "slack").get("counters", {}).get("delivered") == 1,
        timeout=10,
        what="status",
    )
    assert "XXXXSECRETTOKEN" not in json.dumps(emu.get("Webhook", NS, "slack"))


async def test_missing_secret_holds_deliveries_visibly_then_recovers(
    emu: Emulator, receiver: Receiver, operator: Runtime
) -> None:
    await emu.create(webhook("std", f"{receiver.url}/std", secretRef={"name": "later"}))
    await wait_for(
        lambda: condition(emu, "Webhook", NS, "std").get("reason") == "SecretNotFound",
        timeout=10,
        what="Ready=False SecretNotFound",
    )
    assert condition(emu, "Webhook", NS, "std")["status"] == "False"
    assert "later" in condition(emu, "Webhook", NS, "std")["message"]
    await emu.create(environment("web"))
    await deploy(emu, "web", "d-1", "QUEUED")

    def held() -> bool:
        records = deliveries(emu, "std")
        return bool(records) and records[0].get("outcome") == "Pending"

    # Held, not failed: no attempt is counted while Herald cannot reach the receiver's Secret.
    await wait_for(held, timeout=10, what="the delivery stored pending")
    assert deliveries(emu, "std")[0].get("attempts", 0) == 0
    assert receiver.on("/std") == []
    await emu.create(secret("later", {"secret": "now-here"}))
    await wait_for(
        lambda: len(receiver.on("/std")) == 1, timeout=10, what="delivery after the Secret appears"
    )
    assert receiver.on("/std")[0].headers["Qovery-Secret"] == "now-here"
    await wait_for(
        lambda: condition(emu, "Webhook", NS, "std").get("status") == "True",
        timeout=10,
        what="Ready=True again",
    )


async def test_bad_input_is_reported_and_isolated(
    emu: Emulator, receiver: Receiver, operator: Runtime
) -> None:
    both = webhook("both", f"{receiver.url}/both", urlSecretRef={"name": "x"})
    await emu.create(both)
    bad_kind = webhook("bad-kind", f"{receiver.url}/bad", kind="DISCORD")
    await emu.create(bad_kind)
    await emu.create(webhook("good", f"{receiver.url}/good"))
    await emu.create(
        environment("garbled", status={"deployment": {"id": "g-1", "currentStatus": "EXPLODED"}})
    )
    await emu.create(environment("no-status"))
    await emu.create({**environment("not-a-dict"), "status": {"deployment": ["nope"]}})
    await emu.create(environment("web"))
    await deploy(emu, "web", "d-1", "DEPLOYED")
    await wait_for(lambda: len(receiver.on("/good")) == 2, timeout=10, what="the good deliveries")
    await wait_for(
        lambda: condition(emu, "Webhook", NS, "both").get("reason") == "InvalidSpec",
        timeout=10,
        what="InvalidSpec",
    )
    assert "exactly one of url and urlSecretRef" in condition(emu, "Webhook", NS, "both")["message"]
    await wait_for(
        lambda: condition(emu, "Webhook", NS, "bad-kind").get("reason") == "InvalidSpec",
        timeout=10,
        what="bad kind",
    )
    assert "kind" in condition(emu, "Webhook", NS, "bad-kind")["message"]
    assert receiver.on("/both") == []
    assert receiver.on("/bad") == []
    assert all(r.json()["payload"]["id"] == "d-1" for r in receiver.on("/good"))


async def test_ready_recovers_when_the_secret_appears_without_deliveries(
    emu: Emulator, receiver: Receiver, operator: Runtime
) -> None:
    await emu.create(webhook("std", f"{receiver.url}/std", signingSecretRef={"name": "keys"}))
    await wait_for(
        lambda: condition(emu, "Webhook", NS, "std").get("reason") == "SecretNotFound",
        timeout=10,
        what="missing",
    )
    await emu.create(secret("keys", {"signingKey": "whsec_" + "A" * 40}))
    await wait_for(
        lambda: condition(emu, "Webhook", NS, "std").get("status") == "True",
        timeout=10,
        what="Ready=True by itself",
    )
    assert receiver.received == []
