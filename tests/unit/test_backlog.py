"""Backlog: a payload is queued once whichever way it comes in (new, looked up, adopted), a read
made before it finished does not queue it again, and a stop tells whoever waits on a lookup."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable
from typing import Any

import pytest

from herald.backlog import RECENT_WINDOW, Backlog
from herald.decision import new_record
from herald.delivery_object import owner_of, to_object
from herald.delivery_store import DeliveryStore, NotPersisted
from herald.metrics import Metrics
from herald.models import DeliveryOutcome, DeploymentEvent, ObjectRef, PendingDelivery

from .fake_api import FakeApi

NOW = datetime.datetime(2026, 11, 29, 12, 0, tzinfo=datetime.UTC)
OWNER = owner_of(ObjectRef(namespace="demo", name="hook"), uid="w-1", cluster=False, home="demo")


def event(payload_id: str, *, at: datetime.datetime = NOW) -> DeploymentEvent:
    return DeploymentEvent.model_validate(
        {
            "eventType": "DEPLOYMENT_STARTED",
            "payloadId": payload_id,
            "createdAt": at.isoformat(),
            "environment": {"uid": "u-1", "name": "shop", "namespace": "demo", "type": "PRODUCTION"},
            "organization": {"name": "Acme"},
            "project": {"name": "shop"},
            "deployment": {"id": payload_id, "currentStatus": "DEPLOYING"},
        }
    )


def delivery(payload_id: str, outcome: DeliveryOutcome, attempts: int) -> PendingDelivery:
    notification = event(payload_id)
    record = new_record(notification, now=NOW).model_copy(update={"outcome": outcome, "attempts": attempts})
    return PendingDelivery(record=record, notification=notification)


class Harness:
    def __init__(self) -> None:
        self.api = FakeApi()
        self.store = DeliveryStore(
            self.api, metrics=Metrics(), finished=lambda _o: None, gone=lambda _o, _p: None, grace=0
        )
        self.clock = 0.0
        self.changes = 0
        self.tasks: list[asyncio.Task[None]] = []
        self.backlog = Backlog(
            self.store,
            lambda: OWNER,
            now=lambda: NOW,
            clock=lambda: self.clock,
            spawn=self.spawn,
            lookups=asyncio.Semaphore(4),
            changed=self.changed,
            name="demo/hook",
        )

    def spawn(self, coro: Awaitable[None], *, name: str) -> None:
        async def run() -> None:
            await coro

        self.tasks.append(asyncio.create_task(run(), name=name))

    def changed(self) -> None:
        self.changes += 1

    def queued(self) -> dict[str, tuple[str, int]]:
        return {d.record.payload_id: (d.record.outcome.value, d.record.attempts) for d in self.backlog}

    async def looked_up(self) -> None:
        await asyncio.gather(*self.tasks)

    def stored(self, found: PendingDelivery) -> None:
        self.api.add(to_object(OWNER, found))


async def test_a_payload_is_queued_once_whichever_way_it_comes_in() -> None:
    h = Harness()
    h.backlog.add(event("new"), verify=False)
    h.stored(delivery("resumed", DeliveryOutcome.RETRYING, attempts=2))  # an earlier Herald's
    h.stored(delivery("done", DeliveryOutcome.SUCCEEDED, attempts=1))
    for payload_id in ("unknown", "resumed", "done"):
        h.backlog.add(event(payload_id), verify=True)
    assert h.backlog.looking_up
    assert len(h.backlog) == 4  # counted while looked up
    assert "unknown" in h.backlog
    await h.looked_up()
    assert not h.backlog.looking_up
    assert h.queued() == {"new": ("Pending", 0), "unknown": ("Pending", 0), "resumed": ("Retrying", 2)}
    # The restart's listing reads "resumed" again, with fewer attempts than held: nothing changes.
    changes = h.changes
    h.backlog.adopt(delivery("resumed", DeliveryOutcome.RETRYING, attempts=1))
    h.backlog.adopt(delivery("new", DeliveryOutcome.PENDING, attempts=0))
    assert h.queued() == {"new": ("Pending", 0), "unknown": ("Pending", 0), "resumed": ("Retrying", 2)}
    assert h.changes == changes
    await h.store.close(timeout=1)


async def test_a_read_made_before_a_delivery_finished_does_not_queue_it_again() -> None:
    h = Harness()
    h.backlog.add(event("p-1"), verify=False)
    h.backlog.finish("p-1")
    assert "p-1" not in h.backlog
    h.backlog.adopt(delivery("p-1", DeliveryOutcome.PENDING, attempts=0))  # listed before it finished
    assert "p-1" not in h.backlog
    h.stored(delivery("p-1", DeliveryOutcome.PENDING, attempts=0))
    h.backlog.add(event("p-1"), verify=True)  # a lookup that read it pending, just as late
    await h.looked_up()
    assert "p-1" not in h.backlog
    h.clock = RECENT_WINDOW + 1
    h.backlog.finish("p-2")  # remembering one more lets the old ones go
    h.backlog.adopt(delivery("p-1", DeliveryOutcome.PENDING, attempts=0))
    assert "p-1" in h.backlog  # long after: no read can be that late, so it is pending indeed
    await h.store.close(timeout=1)


async def test_a_stop_tells_whoever_waits_on_a_lookup_that_nothing_was_stored() -> None:
    h = Harness()
    gate = asyncio.Event()

    async def slow_get(*args: Any, **kwargs: Any) -> None:
        await gate.wait()

    h.api.get = slow_get  # type: ignore[method-assign]
    h.backlog.add(event("p-1"), verify=True)
    waiting = h.backlog.verified("p-1")
    assert waiting is not None
    h.backlog.close("demo/hook")
    with pytest.raises(NotPersisted, match="demo/hook"):
        await waiting
    gate.set()
    await h.looked_up()
    await h.store.close(timeout=1)


@pytest.mark.parametrize(
    ("queued", "retain", "outlived"),
    [
        ([1, 2, 3], 3, True),  # three newer ones queued: it is pruned once they finish
        ([1, 2], 3, False),  # fewer than retain behind it
        ([0, 1, 2], 3, False),  # one derived together with it (same creation time): not newer
        ([-1, 1, 2], 3, False),  # an older one still queued (retrying): it may finish after it
    ],
)
async def test_outlived_only_by_enough_strictly_newer_deliveries(
    queued: list[int], retain: int, outlived: bool
) -> None:
    h = Harness()
    for n, seconds in enumerate(queued):
        h.backlog.add(event(f"q-{n}", at=NOW + datetime.timedelta(seconds=seconds)), verify=False)
    finished = PendingDelivery(record=new_record(event("done"), now=NOW), notification=event("done"))
    assert h.backlog.outlived(finished, retain=retain) is outlived
    await h.store.close(timeout=1)
