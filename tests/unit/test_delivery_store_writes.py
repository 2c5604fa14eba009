"""DeliveryStore: one writer at a time per Delivery, so the newest state is the one stored last."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Mapping
from typing import Any

from herald.delivery_object import owner_of
from herald.delivery_store import DeliveryStore
from herald.kube import DEFAULT_BACKOFF, Backoff
from herald.metrics import Metrics
from herald.models import (
    DeliveryOutcome,
    DeliveryRecord,
    DeploymentEvent,
    ObjectRef,
    PendingDelivery,
)

from .fake_api import FakeApi

NOW = datetime.datetime(2026, 11, 29, 12, 0, tzinfo=datetime.UTC)


class SlowFirstCreate(FakeApi):
    """The first create waits until released, as a slow API server answers one request late."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.creates = 0

    async def create(
        self,
        plural: str,
        namespace: str | None,
        body: Mapping[str, Any],
        *,
        backoff: Backoff = DEFAULT_BACKOFF,
    ) -> None:
        self.creates += 1
        if self.creates == 1:
            await self.release.wait()
        await super().create(plural, namespace, body, backoff=backoff)


def _delivery(outcome: DeliveryOutcome) -> PendingDelivery:
    event = DeploymentEvent.model_validate(
        {
            "eventType": "DEPLOYMENT_STARTED",
            "payloadId": "p-1",
            "createdAt": NOW.isoformat(),
            "environment": {"uid": "u-1", "name": "shop", "namespace": "demo", "type": "PRODUCTION"},
            "organization": {"name": "Acme"},
            "project": {"name": "shop"},
            "deployment": {"id": "d-1", "currentStatus": "DEPLOYING"},
        }
    )
    record = DeliveryRecord(
        payload_id="p-1",
        event=event.event_type,
        environment="demo/shop",
        deployment_id="d-1",
        time=NOW,
        outcome=outcome,
        attempts=0 if outcome is DeliveryOutcome.PENDING else 1,
        http_status=None if outcome is DeliveryOutcome.PENDING else 200,
    )
    return PendingDelivery(record=record, notification=event)


async def test_a_state_put_while_the_first_is_being_created_is_the_one_stored() -> None:
    """Pending is being created (slowly) when Succeeded arrives: a second writer must not create
    Succeeded meanwhile, or the slow create's 409 patches Pending over it for good."""
    api = SlowFirstCreate()
    store = DeliveryStore(api, metrics=Metrics(), finished=lambda _o: None, gone=lambda _o, _p: None, grace=0)
    owner = owner_of(ObjectRef(namespace="demo", name="hook"), uid="w-1", cluster=False, home="demo")
    store.put(owner, _delivery(DeliveryOutcome.PENDING))
    while api.creates == 0:
        await asyncio.sleep(0)
    store.put(owner, _delivery(DeliveryOutcome.SUCCEEDED))
    for _ in range(20):
        await asyncio.sleep(0)  # let any other writer run
    api.release.set()
    for _ in range(20):
        await asyncio.sleep(0)  # the slow create returns (409 if another writer created it)
    await store.close(timeout=5)
    (stored,) = api.of()
    assert stored["status"]["outcome"] == "Succeeded"
    assert stored["metadata"]["labels"]["herald.dev/outcome"] == "Succeeded"


async def test_a_retired_delivery_is_deleted_if_it_was_created_and_never_created_otherwise() -> None:
    """Finished and outlived by newer ones queued behind it: nothing of it is worth a write but
    the deletion of an object that exists; whoever waits for it to be stored goes on."""
    api = FakeApi()
    store = DeliveryStore(
        api, metrics=Metrics(), finished=lambda _o: None, gone=lambda _o, _p: None, grace=10
    )
    owner = owner_of(ObjectRef(namespace="demo", name="hook"), uid="w-1", cluster=False, home="demo")
    store.put(owner, _delivery(DeliveryOutcome.PENDING))  # its creation waits out the grace
    store.retire(owner, _delivery(DeliveryOutcome.SUCCEEDED))
    await asyncio.wait_for(store.stored([store.key(owner, "p-1")]), timeout=1)
    await store.close(timeout=1)
    assert api.writes == []

    store = DeliveryStore(api, metrics=Metrics(), finished=lambda _o: None, gone=lambda _o, _p: None, grace=0)
    store.put(owner, _delivery(DeliveryOutcome.PENDING))  # created at once
    await asyncio.wait_for(store.stored([store.key(owner, "p-1")]), timeout=1)
    store.retire(owner, _delivery(DeliveryOutcome.SUCCEEDED))
    await store.close(timeout=5)
    assert [verb for verb, _ in api.writes] == ["create", "delete"]
    assert api.of() == []
