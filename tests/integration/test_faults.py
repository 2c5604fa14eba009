"""Issue 3: deliveries that survive failing receivers, watch drops and a SIGKILLed operator."""

from __future__ import annotations

import asyncio
import dataclasses
import time

from herald.handlers import Runtime
from herald.settings import Settings
from herald.testing import Emulator, Receiver, running_operator, wait_for

from .conftest import FAST, NS, condition, deliveries, deploy, environment, pending, status_of, webhook
from .operator_process import OperatorProcess


async def test_503_three_times_then_200(emu: Emulator, receiver: Receiver, operator: Runtime) -> None:
    receiver.scripts["/flaky"] = [503, 503, 503, 200]
    await emu.create(webhook("flaky", f"{receiver.url}/flaky", events=("DEPLOYMENT_STARTED",)))
    await emu.create(environment("web"))
    await deploy(emu, "web", "d-1", "QUEUED")
    await wait_for(lambda: len(receiver.on("/flaky")) == 4, timeout=10, what="four attempts")

    def recorded() -> bool:
        records = deliveries(emu, "flaky")
        delivered = status_of(emu, "Webhook", NS, "flaky").get("counters", {}).get("delivered")
        return bool(records) and records[0]["outcome"] == "Succeeded" and delivered == 1

    await wait_for(recorded, timeout=10, what="the success on its Delivery and the webhook's status")
    ids = {r.json()["payload_id"] for r in receiver.on("/flaky")}
    assert len(ids) == 1
    assert {r.headers.get("webhook-id") for r in receiver.on("/flaky")} <= {None, *ids}
    record = deliveries(emu, "flaky")[0]
    assert record["attempts"] == 4
    assert [a["httpStatus"] for a in record["attemptLog"]] == [503, 503, 503, 200]
    assert all(a["durationMs"] >= 0 for a in record["attemptLog"])
    status = status_of(emu, "Webhook", NS, "flaky")
    assert status["counters"]["delivered"] == 1
    assert status["counters"]["retried"] == 3
    assert condition(emu, "Webhook", NS, "flaky", "Degraded")["status"] == "False"


async def test_429_retry_after_is_honoured(emu: Emulator, receiver: Receiver, operator: Runtime) -> None:
    receiver.scripts["/limited"] = [(429, {"Retry-After": "2"}), 200]
    await emu.create(webhook("limited", f"{receiver.url}/limited", events=("DEPLOYMENT_STARTED",)))
    await emu.create(environment("web"))
    await deploy(emu, "web", "d-1", "QUEUED")
    await wait_for(
        lambda: len(receiver.on("/limited")) == 1 and bool(deliveries(emu, "limited")),
        timeout=10,
        what="the first attempt",
    )
    await wait_for(lambda: len(receiver.on("/limited")) == 2, timeout=10, what="the retry")
    first, second = receiver.on("/limited")
    assert second.at - first.at >= 2.0 - 0.05  # FAST's schedule alone would retry after 0.2 s


async def test_refused_connections_then_receiver_comes_up(emu: Emulator, operator: Runtime) -> None:
    late = Receiver()
    await late.start()
    port = late.port
    await late.stop()  # the port is now closed: connections are refused
    await emu.create(webhook("late", f"http://127.0.0.1:{port}/late", events=("DEPLOYMENT_STARTED",)))
    await emu.create(environment("web"))
    await deploy(emu, "web", "d-1", "QUEUED")

    def refused_recorded() -> bool:
        records = deliveries(emu, "late")
        return bool(records) and records[0]["attempts"] >= 1 and "Connect" in (records[0].get("error") or "")

    await wait_for(refused_recorded, timeout=10, what="a refused attempt on the status")
    up = Receiver()
    await up.start(port=port)
    try:
        await wait_for(lambda: len(up.on("/late")) == 1, timeout=10, what="delivery once the receiver is up")
        await wait_for(
            lambda: deliveries(emu, "late")[0]["outcome"] == "Succeeded", timeout=10, what="success recorded"
        )
    finally:
        await up.stop()


async def test_hanging_receiver_does_not_delay_others(
    emu: Emulator, receiver: Receiver, operator: Runtime
) -> None:
    receiver.scripts["/hang"] = [1.5]  # answers only after 1.5 s
    await emu.create(webhook("hang", f"{receiver.url}/hang", events=("DEPLOYMENT_STARTED",)))
    await emu.create(webhook("prompt", f"{receiver.url}/prompt", events=("DEPLOYMENT_STARTED",)))
    await emu.create(environment("web"))
    await deploy(emu, "web", "d-1", "QUEUED")
    await wait_for(lambda: receiver.on("/hang") and receiver.on("/prompt"), timeout=10, what="both requests")
    hang, prompt = receiver.on("/hang")[0], receiver.on("/prompt")[0]
    # The prompt receiver was served while the hanging one was still holding its request.
    assert prompt.at < hang.at + 1.5


async def test_redirect_is_not_followed(emu: Emulator, receiver: Receiver, operator: Runtime) -> None:
    receiver.scripts["/moved"] = [(301, {"Location": f"{receiver.url}/elsewhere"})]
    await emu.create(webhook("moved", f"{receiver.url}/moved", events=("DEPLOYMENT_STARTED",)))
    await emu.create(environment("web"))
    await deploy(emu, "web", "d-1", "QUEUED")
    await wait_for(
        lambda: bool(deliveries(emu, "moved")) and deliveries(emu, "moved")[0]["outcome"] == "Failed",
        timeout=10,
        what="the redirect recorded as failed",
    )
    record = deliveries(emu, "moved")[0]
    assert record["httpStatus"] == 301
    assert record["attempts"] == 1
    assert receiver.on("/elsewhere") == []
    assert len(receiver.on("/moved")) == 1


async def test_410_pauses_until_the_spec_changes(
    emu: Emulator, receiver: Receiver, operator: Runtime
) -> None:
    receiver.scripts["/gone"] = [410]
    await emu.create(webhook("gone", f"{receiver.url}/gone", events=("DEPLOYMENT_STARTED",)))
    await emu.create(environment("web"))
    await emu.create(environment("barrier"))
    await emu.create(webhook("witness", f"{receiver.url}/witness", events=("DEPLOYMENT_STARTED",)))
    await deploy(emu, "web", "d-1", "QUEUED")
    await wait_for(
        lambda: condition(emu, "Webhook", NS, "gone").get("reason") == "Gone",
        timeout=10,
        what="Ready=False Gone",
    )
    assert condition(emu, "Webhook", NS, "gone")["status"] == "False"
    await deploy(emu, "barrier", "b-1", "QUEUED")
    await wait_for(lambda: len(receiver.on("/witness")) == 2, timeout=10, what="the witness's deliveries")
    await wait_for(lambda: len(pending(emu, "gone")) == 2, timeout=10, what="queued")
    assert len(receiver.on("/gone")) == 1  # paused: the second event waits, unsent
    # A spec change (new generation) lifts the pause; both waiting deliveries go out.
    await emu.patch("Webhook", NS, "gone", {"metadata": {"generation": 2}, "spec": {"description": "fixed"}})
    await wait_for(
        lambda: len(receiver.on("/gone")) == 3, timeout=10, what="deliveries after the spec change"
    )
    await wait_for(
        lambda: condition(emu, "Webhook", NS, "gone").get("status") == "True", timeout=10, what="Ready again"
    )


async def test_watch_drops_and_relists_send_no_duplicates(emu: Emulator, receiver: Receiver) -> None:
    settings = dataclasses.replace(FAST, watch_timeout=1)  # every watch ends and re-lists every second
    async with running_operator(emu, settings):
        await emu.create(webhook("std", f"{receiver.url}/std"))
        for i in range(5):
            await emu.create(environment(f"env-{i}"))
        for i in range(5):
            await deploy(emu, f"env-{i}", "d-1", "DEPLOYED")
        await wait_for(lambda: len(receiver.on("/std")) == 10, timeout=15, what="ten deliveries")
        relists = len([r for r in list(emu.kmock._requests) if "watch=true" in str(r.url)])
        marker_time = time.monotonic()
        await wait_for(
            lambda: len([r for r in list(emu.kmock._requests) if "watch=true" in str(r.url)]) >= relists + 6,
            timeout=15,
            what="several watch re-lists after the deliveries",
        )
        await emu.create(environment("barrier"))
        await deploy(emu, "barrier", "b-1", "QUEUED")
        await wait_for(lambda: len(receiver.on("/std")) >= 11, timeout=10, what="the barrier")
    sent = [(r.json()["payload"]["environment"]["name"], r.json()["event_type"]) for r in receiver.on("/std")]
    assert len(sent) == len(set(sent)) == 11
    assert all(r.at < marker_time for r in receiver.on("/std")[:10])


async def test_500_rapid_changes_across_50_environments(emu: Emulator, receiver: Receiver) -> None:
    # Emulator, operator and receiver share one event loop here: generous timeouts (connecting
    # included) keep a busy loop from turning slow answers into retries (which would be correct,
    # but not exactly-once, and a retried STARTED would go after its terminal event).
    async with running_operator(
        emu, dataclasses.replace(FAST, delivery_timeout=20, connect_timeout=20)
    ) as runtime:
        await _storm(emu, receiver, runtime)


async def _storm(emu: Emulator, receiver: Receiver, runtime: Runtime) -> None:
    await emu.create(webhook("std", f"{receiver.url}/std"))
    names = [f"env-{i:02d}" for i in range(50)]
    for name in names:
        await emu.create(environment(name))
    emu.kmock._requests.clear()  # kmock rescans its request log on every request
    ok = ["QUEUED", "BUILDING", "DEPLOYING", "DEPLOYING", "DEPLOYING", "DEPLOYING", "DEPLOYING", "DEPLOYING",
          "DEPLOYING", "DEPLOYED"]  # fmt: skip
    bad = [*ok[:-1], "DEPLOYMENT_ERROR"]
    for step in range(10):
        await asyncio.gather(
            *(
                deploy(emu, name, f"d-{name}", (ok if i % 2 else bad)[step], logs=[f"step {step}"])
                for i, name in enumerate(names)
            )
        )
        emu.kmock._requests.clear()  # kmock's cost per request grows with its request log
    # Generous: the emulator serves this storm from the test's own event loop, on a shared machine.
    await wait_for(lambda: len(receiver.on("/std")) >= 100, timeout=90, what="100 deliveries")

    def settled() -> bool:
        return status_of(emu, "Webhook", NS, "std").get("counters", {}).get("delivered") == 100

    await wait_for(settled, timeout=15, what="all 100 recorded")
    sent = [(r.json()["payload"]["environment"]["name"], r.json()["event_type"]) for r in receiver.on("/std")]
    expected = {(n, "DEPLOYMENT_STARTED") for n in names}
    expected |= {(n, "DEPLOYMENT_SUCCESSFUL" if i % 2 else "DEPLOYMENT_FAILURE") for i, n in enumerate(names)}
    assert sorted(sent) == sorted(expected)
    patches = runtime.metrics.registry.get_sample_value("herald_status_patches_total") or 0
    assert 0 < patches <= len(sent)  # coalesced: never more than one status patch per delivery
    for name in names:  # STARTED reached the receiver before its terminal event
        order = [e for n, e in sent if n == name]
        assert order[0] == "DEPLOYMENT_STARTED"


async def test_sigkill_with_pending_deliveries_loses_and_duplicates_nothing(
    emu: Emulator, receiver: Receiver, settings: Settings
) -> None:
    receiver.scripts["/down"] = [503] * 1000  # down until the test says otherwise
    await emu.create(webhook("down", f"{receiver.url}/down"))
    for i in range(3):
        await emu.create(environment(f"env-{i}"))
    env = {"HERALD_RETRY_SCHEDULE": "0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3,0.3"}
    first = OperatorProcess(emu, env)
    await first.start()
    try:
        for i in range(3):
            await deploy(emu, f"env-{i}", "d-1", "DEPLOYED")

        def all_pending_persisted() -> bool:
            stored = pending(emu, "down")
            return len(stored) == 6 and all(p.get("attempts", 0) >= 1 for p in stored)

        await wait_for(
            all_pending_persisted, timeout=20, what="six pending deliveries persisted with attempts"
        )
    finally:
        first.kill()  # SIGKILL: no cleanup, no final status write
    attempts_before = {p["payloadId"]: p["attempts"] for p in pending(emu, "down")}
    second = OperatorProcess(emu, env)
    await second.start()
    # The receiver recovers only now: a request the first process sent just before it died is still
    # answered 503 (a 200 would be a delivery its sender never learnt of: at least once resends it).
    receiver.scripts["/down"] = []
    try:

        def delivered() -> bool:
            return status_of(emu, "Webhook", NS, "down").get("counters", {}).get("delivered") == 6

        await wait_for(delivered, timeout=30, what="all six delivered after the restart")
        barrier_at = len(receiver.on("/down"))
        await emu.create(environment("barrier"))
        await deploy(emu, "barrier", "b-1", "QUEUED")
        await wait_for(
            lambda: len(receiver.on("/down")) > barrier_at, timeout=20, what="the barrier delivery"
        )
    finally:
        second.kill()
    successes: dict[str, int] = {}
    after_success: list[str] = []
    for request in receiver.on("/down"):
        pid = request.json()["payload_id"]
        if successes.get(pid):
            after_success.append(pid)
        if request.status == 200:
            successes[pid] = successes.get(pid, 0) + 1
    assert len(successes) == 7  # six resumed + the barrier
    assert all(count == 1 for count in successes.values())
    assert after_success == []
    records = {r["payloadId"]: r for r in deliveries(emu, "down")}
    for pid, before in attempts_before.items():
        assert records[pid]["attempts"] > before  # the count carried over the restart
    assert pending(emu, "down") == []


async def test_at_the_pending_bound_events_wait_and_none_is_dropped(
    emu: Emulator, receiver: Receiver
) -> None:
    receiver.scripts["/down"] = [503, 503]  # both first attempts fail, then the receiver is back
    settings = dataclasses.replace(FAST, max_pending=2, retry_schedule=(1.0,))
    async with running_operator(emu, settings):
        await emu.create(webhook("down", f"{receiver.url}/down"))
        await emu.create(environment("web"))
        await deploy(emu, "web", "d-1", "DEPLOYED")  # two events: the backlog is full
        await wait_for(lambda: len(receiver.on("/down")) == 2, timeout=10, what="both first attempts")
        await deploy(emu, "web", "d-2", "DEPLOYED")  # two more: they wait, they are not dropped

        def deferred() -> bool:
            return status_of(emu, "Webhook", NS, "down").get("counters", {}).get("deferred", 0) >= 2

        await wait_for(deferred, timeout=10, what="the events held back counted")
        warnings = [
            o.raw
            for (res, _ns, _name), o in emu.kmock.objects.items()
            if res.plural == "events" and not o.deleted and o.raw.get("reason") == "BacklogFull"
        ]
        assert [w["type"] for w in warnings] == ["Warning"]  # said once per spell, not per event

        def all_delivered() -> bool:
            records = deliveries(emu, "down")
            return len(records) == 4 and all(r["outcome"] == "Succeeded" for r in records)

        await wait_for(all_delivered, timeout=30, what="all four delivered once the backlog drained")
    ok = [r.json() for r in receiver.on("/down") if r.status == 200]
    assert sorted((e["payload"]["id"], e["event_type"]) for e in ok) == [
        ("d-1", "DEPLOYMENT_STARTED"),
        ("d-1", "DEPLOYMENT_SUCCESSFUL"),
        ("d-2", "DEPLOYMENT_STARTED"),
        ("d-2", "DEPLOYMENT_SUCCESSFUL"),
    ]
