"""dispatcher.py's status flush: a long queue is rendered once, then only what changed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from herald.delivery import AttemptResult, OutgoingRequest
from herald.dispatcher import Dispatcher
from herald.metrics import Metrics
from herald.models import DeploymentEvent
from herald.retry import Verdict
from herald.settings import Settings
from herald.status import WebhookView, log_cap, parse_status, parse_webhook, to_patch
from herald.testing import wait_for

from .test_dispatcher import Secrets, Sink
from .test_status import event


class GatedClient:
    """Answers 200 to each delivery the test lets through."""

    def __init__(self) -> None:
        self.allowed = 0
        self.sent: list[str] = []

    async def send(self, request: OutgoingRequest, *, now: Any) -> AttemptResult:
        await wait_for(lambda: len(self.sent) < self.allowed, timeout=10, what="the test to allow a send")
        self.sent.append(request.payload_id)
        return AttemptResult(
            verdict=Verdict.SUCCESS,
            http_status=200,
            error=None,
            reason=None,
            retry_after=None,
            duration_ms=1,
            response_excerpt=b"",
        )

    async def aclose(self) -> None:
        pass


def view() -> WebhookView:
    body = {
        "metadata": {"name": "hook", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {
            "url": "https://receiver.example/hook",
            "kind": "STANDARD",
            "events": ["DEPLOYMENT_STARTED"],
        },
    }
    return parse_webhook(body, cluster=False)


def events(n: int) -> list[DeploymentEvent]:
    return [event(i) for i in range(n)]


SETTINGS = Settings(status_interval=0.05)


def make_dispatcher(client: GatedClient, sink: Sink) -> Dispatcher:
    return Dispatcher(
        settings=SETTINGS,
        client=client,  # type: ignore[arg-type]
        sink=sink,
        secrets=Secrets(),
        post_event=lambda *_: None,
        metrics=Metrics(),
        clock=time.monotonic,
        wallclock=time.time,
    )


async def test_each_flush_renders_only_the_pending_deliveries_that_changed() -> None:
    client, sink = GatedClient(), Sink()
    dispatcher = make_dispatcher(client, sink)
    hook = view()
    try:
        await asyncio.wait_for(dispatcher.submit([(hook, e) for e in events(30)]), timeout=10)
        first = sink.patches[-1]
        assert len(first["pending"]) == 30
        client.allowed = 5  # five deliveries finish; the other 25 stay pending, unchanged
        await wait_for(lambda: len(client.sent) == 5, timeout=10, what="five deliveries")
        await wait_for(
            lambda: len(sink.patches[-1]["pending"]) == 25, timeout=10, what="a flush after the five"
        )
        second = sink.patches[-1]
        status = dispatcher.status_of(cluster=False, ref=hook.ref)
        assert status is not None
        cap = log_cap(max_pending=SETTINGS.max_pending, history_limit=SETTINGS.history_limit)
        assert second == to_patch(status, cap=cap)  # the same patch as rendering everything afresh
        assert parse_status(second).pending == status.pending
        reused = {id(p) for p in first["pending"]} & {id(p) for p in second["pending"]}
        assert len(reused) >= 24  # what did not change was not rendered again
    finally:
        client.allowed = 10**6
        await dispatcher.close()


async def test_a_restart_on_a_current_status_writes_nothing() -> None:
    """A failover with thousands of webhooks must not rewrite thousands of statuses."""
    client, sink = GatedClient(), Sink()
    client.allowed = 1
    first = make_dispatcher(client, sink)
    hook = view()
    try:
        await asyncio.wait_for(first.submit([(hook, e) for e in events(1)]), timeout=10)
        await wait_for(
            lambda: bool(sink.patches) and sink.patches[-1]["counters"]["delivered"] == 1,
            timeout=10,
            what="the delivery recorded",
        )
    finally:
        await first.close()
    persisted = sink.patches[-1]
    assert {c["type"]: c["reason"] for c in persisted["conditions"]}["Ready"] == "Delivered"

    restarted_sink = Sink()
    second = make_dispatcher(GatedClient(), restarted_sink)
    try:
        second.observe(hook, status=persisted)
        await wait_for(lambda: not second._background, timeout=10, what="the webhook validated")
        # Unchanged in memory, so there is nothing to flush (a changed Ready reason would be).
        assert second.status_of(cluster=False, ref=hook.ref) == parse_status(persisted)
        assert restarted_sink.patches == []
    finally:
        await second.close()


async def test_removing_an_annotation_lets_the_same_value_be_asked_for_again() -> None:
    client = GatedClient()
    client.allowed = 10**6
    dispatcher = make_dispatcher(client, Sink())
    hook = view()
    try:
        dispatcher.observe(hook.model_copy(update={"ping": "1"}))
        await wait_for(lambda: len(client.sent) == 1, timeout=10, what="the ping")
        ping_id = client.sent[0]
        asked = hook.model_copy(update={"ping": "1", "redeliver": ping_id})
        dispatcher.observe(asked)
        await wait_for(lambda: len(client.sent) == 2, timeout=10, what="the redelivery")
        dispatcher.observe(asked)  # the same values again: acted on once
        dispatcher.observe(hook)  # both annotations removed
        status = dispatcher.status_of(cluster=False, ref=hook.ref)
        assert status is not None
        assert (status.handled_ping, status.handled_redeliver) == (None, None)
        dispatcher.observe(hook.model_copy(update={"ping": "1"}))  # set again: acted on again
        await wait_for(lambda: len(client.sent) == 3, timeout=10, what="a second ping")
        dispatcher.observe(asked)
        await wait_for(lambda: len(client.sent) == 4, timeout=10, what="a second redelivery")
        assert client.sent == [ping_id] * 4  # one payload id: ping, redelivery, ping, redelivery
    finally:
        await dispatcher.close()
