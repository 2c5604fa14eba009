"""ledger.py: bounded, coalescing, ordered writes of the notified ledger."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any, cast

from herald.events import LEDGER_ANNOTATION
from herald.kube import ApiNotFound, ApiServerError, KubeClient
from herald.ledger import LEDGER_WRITERS, LedgerWriter
from herald.models import NotifiedLedger
from herald.testing import wait_for


class FakeKube:
    """Answers each patch when the test releases it, recording what was written."""

    def __init__(self) -> None:
        self.written: list[tuple[str, dict[str, Any]]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.failures: list[Exception] = []

    async def patch_annotations(
        self, *, plural: str, namespace: str | None, name: str, annotations: Mapping[str, str]
    ) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.gate.wait()
            if self.failures:
                raise self.failures.pop(0)
            self.written.append((name, json.loads(annotations[LEDGER_ANNOTATION])))
        finally:
            self.in_flight -= 1


def ledger(*ids: str) -> NotifiedLedger:
    return NotifiedLedger.model_validate({"deployments": {i: ["DEPLOYMENT_STARTED"] for i in ids}})


def writer(kube: FakeKube) -> LedgerWriter:
    return LedgerWriter(cast(KubeClient, kube))


async def test_writes_are_bounded_and_each_environment_gets_its_newest_ledger() -> None:
    kube = FakeKube()
    kube.gate.clear()
    w = writer(kube)
    for i in range(10):
        w.enqueue(f"u{i}", "ns", f"env-{i}", ledger(f"d{i}"))
    await wait_for(lambda: kube.in_flight == LEDGER_WRITERS, timeout=5, what="writers busy")
    w.enqueue("u9", "ns", "env-9", ledger("d9b"))  # stored while queued: the write carries both
    kube.gate.set()
    await wait_for(lambda: w.idle, timeout=5, what="the queue drained")
    assert kube.most_in_flight == LEDGER_WRITERS
    assert sorted(name for name, _ in kube.written) == sorted(f"env-{i}" for i in range(10))
    assert dict(kube.written)["env-9"]["deployments"].keys() == {"d9", "d9b"}
    await w.close(timeout=1)


async def test_queued_writes_for_one_environment_coalesce_and_never_overlap() -> None:
    kube = FakeKube()
    kube.gate.clear()
    w = writer(kube)
    w.enqueue("u1", "ns", "env", ledger("a"))
    await wait_for(lambda: kube.in_flight == 1, timeout=5, what="the first write in flight")
    for newest in ("b", "c", "d"):  # three more events stored while the first write is in flight
        w.enqueue("u1", "ns", "env", ledger(newest))
    await asyncio.sleep(0)
    assert kube.most_in_flight == 1
    kube.gate.set()
    await wait_for(lambda: w.idle, timeout=5, what="the queue drained")
    assert len(kube.written) == 2  # the one in flight, then one with the newest ledger
    # Every ledger stored so far: a later write never drops what an earlier one named.
    assert kube.written[-1][1]["deployments"].keys() == {"a", "b", "c", "d"}
    await w.close(timeout=1)


async def test_the_writer_does_not_retry_what_the_client_gave_up_on_and_drops_a_gone_environment() -> None:
    """Retrying is the API client's (one policy); the writer makes one write per queued ledger."""
    kube = FakeKube()
    kube.failures = [
        ApiServerError("503 after the client's retries", status=503),
        ApiNotFound("gone", status=404),
    ]
    w = writer(kube)
    w.enqueue("u1", "ns", "env-1", ledger("a"))
    await wait_for(lambda: w.idle and len(kube.failures) == 1, timeout=5, what="u1 refused once")
    # Idle with the second failure unused: the writer gave up on u1 without a retry of its own.
    assert len(kube.failures) == 1
    assert kube.written == []
    w.enqueue("u1", "ns", "env-1", ledger("a"))
    await wait_for(lambda: w.idle and not kube.failures, timeout=5, what="u1 dropped as gone")
    assert kube.written == []
    w.enqueue("u2", "ns", "env-2", ledger("b"))
    await wait_for(lambda: w.idle and kube.written, timeout=5, what="u2 written")
    assert [name for name, _ in kube.written] == ["env-2"]
    await w.close(timeout=1)


async def test_close_lets_queued_writes_land() -> None:
    kube = FakeKube()
    w = writer(kube)
    for i in range(5):
        w.enqueue(f"u{i}", "ns", f"env-{i}", ledger("a"))
    await w.close(timeout=5)
    assert len(kube.written) == 5
