"""Issue 15 end to end: new kinds, template errors on Ready, rate limits and endpoint health,
with the real operator against the emulator and scripted local receivers."""

from __future__ import annotations

import json

from herald.handlers import Runtime
from herald.metrics import Metrics
from herald.testing import Emulator, Receiver, wait_for

from .conftest import NS, condition, deliveries, deploy, environment, pending, status_of, webhook
from .test_operations import annotate, family, labels, reasons, scrape

ENABLE = "herald.dev/enable"


def delivered(emu: Emulator, name: str) -> int:
    return int((status_of(emu, "Webhook", NS, name).get("counters") or {}).get("delivered", 0))


# ---------------------------------------------------------------- kinds and templates


async def test_a_broken_template_shows_on_ready_when_applied(
    emu: Emulator, receiver: Receiver, operator: Runtime
) -> None:
    body = '{\n  "event": {{ event_type | tojson }},\n  "oops": {{ payload.nope | tojson }}\n}'
    await emu.create(
        webhook(
            "tpl",
            f"{receiver.url}/tpl",
            kind="CUSTOM",
            events=("DEPLOYMENT_STARTED",),
            template={"body": body},
        )
    )
    await wait_for(
        lambda: condition(emu, "Webhook", NS, "tpl").get("reason") == "InvalidSpec",
        timeout=10,
        what="Ready=False InvalidSpec",
    )
    ready = condition(emu, "Webhook", NS, "tpl")
    assert ready["status"] == "False"
    assert ready["message"].startswith("spec.template.body: line 3: 'dict object' has no attribute 'nope'")
    fixed = {"body": '{"event": {{ event_type | tojson }}}', "headers": {"X-Team": "shop"}}
    await emu.patch("Webhook", NS, "tpl", {"metadata": {"generation": 2}, "spec": {"template": fixed}})
    await wait_for(
        lambda: condition(emu, "Webhook", NS, "tpl").get("status") == "True", timeout=10, what="Ready=True"
    )
    await emu.create(environment("web"))
    await deploy(emu, "web", "d-1", "QUEUED")
    await wait_for(lambda: len(receiver.on("/tpl")) == 1, timeout=10, what="the delivery once fixed")
    arrived = receiver.on("/tpl")[0]
    assert json.loads(arrived.body) == {"event": "DEPLOYMENT_STARTED"}
    assert arrived.headers["X-Team"] == "shop"
    assert arrived.headers["Content-Type"] == "application/json"


async def test_a_template_failing_on_a_real_event_fails_that_delivery_only(
    emu: Emulator, receiver: Receiver, operator: Runtime
) -> None:
    body = '{% if payload.project.name == "boom" %}{{ nope }}{% endif %}'
    body += '{"p": {{ payload.project.name | tojson }}}'
    await emu.create(
        webhook(
            "tpl",
            f"{receiver.url}/tpl",
            kind="CUSTOM",
            events=("DEPLOYMENT_STARTED",),
            template={"body": body},
        )
    )
    await emu.create(environment("bad", project="boom"))
    await emu.create(environment("good", project="shop"))
    await deploy(emu, "bad", "d-1", "QUEUED")
    await deploy(emu, "good", "d-1", "QUEUED")
    await wait_for(lambda: len(receiver.on("/tpl")) == 1, timeout=10, what="the good event's delivery")

    def failed() -> list[dict[str, object]]:
        records = deliveries(emu, "tpl")
        return [r for r in records if r.get("outcome") == "Failed"]

    await wait_for(lambda: len(failed()) == 1, timeout=10, what="the bad event's delivery failed")
    [record] = failed()
    assert record["environment"] == f"{NS}/bad"
    assert record["attempts"] == 1  # not retried: the same template fails the same way
    assert record["error"] == "TemplateError: line 1: 'nope' is undefined"
    assert json.loads(receiver.on("/tpl")[0].body) == {"p": "shop"}


async def test_cloudevents_binary_mode_over_http(
    emu: Emulator, receiver: Receiver, operator: Runtime
) -> None:
    await emu.create(
        webhook(
            "ce",
            f"{receiver.url}/ce",
            kind="CLOUDEVENTS",
            events=("DEPLOYMENT_STARTED",),
            cloudEvents={"mode": "binary"},
        )
    )
    await emu.create(environment("web"))
    await deploy(emu, "web", "d-1", "QUEUED")
    await wait_for(lambda: len(receiver.on("/ce")) == 1, timeout=10, what="the CloudEvent")
    arrived = receiver.on("/ce")[0]
    assert arrived.headers["ce-type"] == "dev.herald.deployment.started"
    assert arrived.headers["ce-id"] == arrived.json()["payload_id"]
    assert arrived.headers["ce-source"] == f"/apis/herald.dev/v1alpha1/namespaces/{NS}/environments/web"


# ---------------------------------------------------------------- rate limits


async def test_deliveries_above_the_rate_wait_in_order_and_none_is_dropped(
    emu: Emulator, receiver: Receiver, operator: Runtime
) -> None:
    await emu.create(
        webhook(
            "slow",
            f"{receiver.url}/slow",
            events=("DEPLOYMENT_STARTED",),
            rateLimit={"perSecond": 4, "burst": 1},
        )
    )
    names = [f"env-{i}" for i in range(5)]
    for name in names:
        await emu.create(environment(name))
    for name in names:
        await deploy(emu, name, "d-1", "QUEUED")
    await wait_for(lambda: delivered(emu, "slow") == 5, timeout=15, what="five deliveries recorded")
    arrivals = receiver.on("/slow")
    assert len(arrivals) == 5  # none dropped, none sent twice
    created = sorted(arrivals, key=lambda r: r.json()["created_at"])
    assert [r.json()["payload_id"] for r in arrivals] == [r.json()["payload_id"] for r in created]
    # 4 a second, burst 1: the fifth goes at least 1 s after the first. Arrival times carry each
    # request's own latency (the first one also connects), so only the span is compared, loosely:
    # without the limit, all five arrive within a few milliseconds.
    assert arrivals[-1].at - arrivals[0].at >= 0.8


async def test_teams_defaults_to_one_a_second(emu: Emulator, receiver: Receiver, operator: Runtime) -> None:
    await emu.create(webhook("teams", f"{receiver.url}/teams", kind="TEAMS", events=("DEPLOYMENT_STARTED",)))
    await emu.create(webhook("std", f"{receiver.url}/std", events=("DEPLOYMENT_STARTED",)))
    for name in ("a", "b", "c"):
        await emu.create(environment(name))
    for name in ("a", "b", "c"):
        await deploy(emu, name, "d-1", "QUEUED")
    await wait_for(lambda: len(receiver.on("/teams")) == 3, timeout=15, what="three Teams messages")
    teams = receiver.on("/teams")
    assert all(r.json()["attachments"][0]["content"]["type"] == "AdaptiveCard" for r in teams)
    assert teams[-1].at - teams[0].at >= 1.6  # one a second: the third at least 2 s after the first
    std = receiver.on("/std")
    assert len(std) == 3
    assert std[-1].at < teams[-1].at  # the STANDARD webhook has no limit and did not wait


async def test_retry_after_slows_that_webhook_alone(
    emu: Emulator, receiver: Receiver, operator: Runtime
) -> None:
    receiver.scripts["/busy"] = [(429, {"Retry-After": "2"})]
    await emu.create(webhook("busy", f"{receiver.url}/busy", events=("DEPLOYMENT_STARTED",)))
    await emu.create(webhook("calm", f"{receiver.url}/calm", events=("DEPLOYMENT_STARTED",)))
    await emu.create(environment("first"))
    await emu.create(environment("second"))
    await deploy(emu, "first", "d-1", "QUEUED")
    await wait_for(lambda: len(receiver.on("/busy")) == 1, timeout=10, what="the 429")
    await deploy(emu, "second", "d-1", "QUEUED")
    await wait_for(lambda: len(receiver.on("/calm")) == 2, timeout=10, what="the other webhook's deliveries")
    assert len(receiver.on("/busy")) == 1  # held: its second event waits for the Retry-After
    await wait_for(lambda: len(receiver.on("/busy")) == 3, timeout=10, what="both deliveries after the hold")
    refused, *after = receiver.on("/busy")
    assert all(r.at - refused.at >= 2.0 - 0.05 for r in after)
    assert receiver.on("/calm")[1].at < after[0].at  # the other webhook did not wait


# ---------------------------------------------------------------- endpoint health


async def test_a_receiver_failing_for_disable_after_is_disabled_until_enabled(
    emu: Emulator, receiver: Receiver, operator: Runtime, metrics: Metrics
) -> None:
    receiver.scripts["/down"] = [503] * 20
    await emu.create(
        webhook("down", f"{receiver.url}/down", events=("DEPLOYMENT_STARTED",), disableAfter="1s")
    )
    await emu.create(environment("web"))
    await emu.create(environment("later"))
    await deploy(emu, "web", "d-1", "QUEUED")
    await wait_for(
        lambda: condition(emu, "Webhook", NS, "down").get("reason") == "EndpointDisabled",
        timeout=10,
        what="Ready=False EndpointDisabled",
    )
    ready = condition(emu, "Webhook", NS, "down")
    assert ready["status"] == "False"
    assert "disableAfter 1s" in ready["message"]
    assert ENABLE in ready["message"]
    assert ("Warning", "EndpointDisabled") in reasons(emu, kind="Webhook", name="down")
    assert family(scrape(metrics), "herald_endpoints_disabled_total") == {labels(kind="STANDARD"): 1.0}
    attempts = len(receiver.on("/down"))
    await deploy(emu, "later", "d-1", "QUEUED")
    await wait_for(
        lambda: len(pending(emu, "down")) == 2,
        timeout=10,
        what="both kept",
    )
    assert len(receiver.on("/down")) == attempts  # disabled: nothing more is attempted
    receiver.scripts["/down"] = []  # the receiver is fixed
    await annotate(emu, "down", annotations={ENABLE: "fixed-1"})
    await wait_for(lambda: delivered(emu, "down") == 2, timeout=10, what="both delivered once enabled")
    await wait_for(
        lambda: condition(emu, "Webhook", NS, "down").get("status") == "True", timeout=10, what="Ready=True"
    )
    assert status_of(emu, "Webhook", NS, "down").get("failingSince") is None
    assert status_of(emu, "Webhook", NS, "down")["handledEnable"] == "fixed-1"
