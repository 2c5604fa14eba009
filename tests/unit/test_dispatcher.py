"""dispatcher.py with the Delivery store over an in-memory API: what is stored before an event counts
as notified, how few writes a delivery costs, back-pressure instead of drops, what a restart
resumes or migrates, redelivery, retention, and what holds deliveries without spending attempts
(a disabled webhook, Secrets Herald cannot use)."""

from __future__ import annotations

import asyncio
import contextvars
import datetime
import gc
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from herald.credentials import SECRET_LABEL
from herald.decision import new_record
from herald.delivery_object import (
    LABEL_OUTCOME,
    REDELIVER_ANNOTATION,
    REDELIVERED_ANNOTATION,
    owner_of,
    to_object,
)
from herald.delivery_store import Retention
from herald.dispatcher import Dispatcher, NotPersisted
from herald.kube import (
    DEFAULT_BACKOFF,
    ApiError,
    ApiForbidden,
    ApiServerError,
    ApiUnreachable,
    Backoff,
    Secret,
)
from herald.metrics import Metrics
from herald.models import (
    DeliveryOutcome,
    DeploymentEvent,
    PendingDelivery,
)
from herald.retry import AttemptResult, Verdict
from herald.settings import Settings
from herald.status import WebhookStatus, WebhookView, condition, parse_webhook
from herald.testing import wait_for

from .fake_api import FakeApi
from .test_status import event

SETTINGS = Settings(
    status_interval=0.05, retry_schedule=(0.0, 0.0, 0.0), retry_jitter=0.0, secret_cache_ttl=0.0
)
T0 = datetime.datetime(2026, 11, 29, 12, 0, tzinfo=datetime.UTC)


class Client:
    """Answers each delivery with the next scripted HTTP status (200 once the script runs out)."""

    def __init__(self, *statuses: int) -> None:
        self.script = list(statuses)
        self.sent: list[str] = []  # payload ids, in order
        self.gate = asyncio.Event()  # answers wait until it is set
        self.gate.set()

    async def send(self, request: Any, *, now: Any) -> AttemptResult:
        self.sent.append(request.payload_id)
        await self.gate.wait()
        status = self.script.pop(0) if self.script else 200
        ok = status < 300
        return AttemptResult(
            verdict=Verdict.SUCCESS if ok else Verdict.RETRY,
            http_status=status,
            error=None if ok else f"HTTP {status}",
            reason=None if ok else "HTTPError",
            retry_after=None,
            duration_ms=1,
            response_excerpt=b"",
        )

    async def aclose(self) -> None:
        pass


class Sink:
    def __init__(self, failure: Exception | None = None) -> None:
        self.failure = failure
        self.patches: list[dict[str, Any]] = []

    async def patch_status(
        self, *, plural: str, namespace: str | None, name: str, status: Callable[[], Mapping[str, Any]]
    ) -> None:
        if self.failure is not None:
            raise self.failure
        self.patches.append(dict(status()))


class Secrets:
    """Secrets by name; a name mapped to an exception fails to read with it."""

    def __init__(self, secrets: Mapping[str, Secret | ApiError] | None = None) -> None:
        self.secrets = dict(secrets or {})
        self.reads = 0

    async def read_secret(self, namespace: str, name: str) -> Secret | None:
        self.reads += 1
        found = self.secrets.get(name)
        if isinstance(found, ApiError):
            raise found
        return found


def opted_in(**data: str) -> Secret:
    return Secret(data=data, labels={SECRET_LABEL: "true"})


def view(*, generation: int = 1, **spec: Any) -> WebhookView:
    body = {
        "metadata": {"name": "hook", "namespace": "ns", "uid": "u", "generation": generation},
        "spec": {
            "url": "https://receiver.example/hook",
            "kind": "STANDARD",
            "events": ["DEPLOYMENT_STARTED"],
            **spec,
        },
    }
    return parse_webhook(body, cluster=False)


class Harness:
    def __init__(
        self,
        client: Client | None = None,
        *,
        sink: Sink | None = None,
        secrets: Secrets | None = None,
        api: FakeApi | None = None,
        settings: Settings = SETTINGS,
    ) -> None:
        self.client = client or Client()
        self.sink = sink or Sink()
        self.api = api or FakeApi()
        self.posted: list[tuple[str, str]] = []  # (reason, message)
        self.d = Dispatcher(
            settings=settings,
            client=self.client,  # type: ignore[arg-type]
            sink=self.sink,
            api=self.api,
            secrets=secrets or Secrets(),
            post_event=lambda _meta, _type, reason, message: self.posted.append((reason, message)),
            metrics=Metrics(),
            clock=time.monotonic,
            wallclock=time.time,
        )

    def status(self, hook: WebhookView) -> WebhookStatus:
        found = self.d.status_of(cluster=False, ref=hook.ref)
        assert found is not None
        return found

    def pending(self, hook: WebhookView) -> tuple[PendingDelivery, ...]:
        return self.d.pending_of(cluster=False, ref=hook.ref)

    def ready(self, hook: WebhookView) -> tuple[str, str, str]:
        found = condition(self.status(hook), "Ready")
        return (found.status, found.reason, found.message) if found is not None else ("", "", "")

    def queue(self, hook: WebhookView, n: int) -> None:
        """Submit one delivery without waiting for it to be stored (whether it is, is not the point)."""
        stored = asyncio.ensure_future(self.d.submit([(hook, event(n))]).stored)
        stored.add_done_callback(lambda f: f.cancelled() or f.exception())

    def outcomes(self) -> dict[str, str]:
        """Each stored Delivery's payload id and outcome, as kubectl would show them."""
        return {o["spec"]["payloadId"]: o["status"]["outcome"] for o in self.api.of()}


def stored_delivery(
    hook: WebhookView, n: int, outcome: DeliveryOutcome, *, attempts: int = 0
) -> dict[str, Any]:
    record = new_record(event(n), now=T0).model_copy(update={"outcome": outcome, "attempts": attempts})
    owner = owner_of(hook.ref, uid=hook.uid, cluster=False, home="herald-system")
    return to_object(owner, PendingDelivery(record=record, notification=event(n)))


# ---------------------------------------------------------------- stored before notified, and how


async def test_an_event_is_not_notified_when_herald_stops_before_its_deliveries_are_stored() -> None:
    """The ledger waits on ``Submission.stored``: it must fail, not complete, on such a stop."""
    h = Harness()
    h.api.failure = ApiForbidden("create refused", status=403)
    stored = asyncio.ensure_future(h.d.submit([(view(), event(1))]).stored)
    await h.d.close()
    with pytest.raises(NotPersisted):
        await asyncio.wait_for(stored, timeout=10)


async def test_a_prompt_delivery_is_stored_once_with_its_outcome() -> None:
    h = Harness()
    try:
        await asyncio.wait_for(h.d.submit([(view(), event(1))]).stored, timeout=10)
        assert h.outcomes() == {"p-1": "Succeeded"}
        assert [verb for verb, _ in h.api.writes] == ["create"]
        [obj] = h.api.of()
        assert obj["metadata"]["labels"][LABEL_OUTCOME] == "Succeeded"
        assert obj["metadata"]["ownerReferences"][0]["uid"] == "u"
    finally:
        await h.d.close()


async def test_a_slow_delivery_is_stored_pending_then_its_outcome_patched() -> None:
    h = Harness()
    h.client.gate.clear()
    try:
        await asyncio.wait_for(h.d.submit([(view(), event(1))]).stored, timeout=10)
        assert h.outcomes() == {"p-1": "Pending"}  # the ledger may name it now: it exists
        h.client.gate.set()
        await wait_for(lambda: h.outcomes() == {"p-1": "Succeeded"}, timeout=10, what="the outcome stored")
        assert [verb for verb, _ in h.api.writes] == ["create", "patch"]
    finally:
        await h.d.close()


async def test_deliveries_to_a_deleted_webhook_do_not_keep_their_event_unnotified() -> None:
    hook = view()
    h = Harness()
    h.api.failure = ApiServerError("down", status=503)
    stored = asyncio.ensure_future(h.d.submit([(hook, event(1))]).stored)
    await h.d.forget(cluster=False, ref=hook.ref)  # the webhook was deleted: nothing left to store
    await asyncio.wait_for(stored, timeout=10)
    await h.d.close()


async def test_a_webhook_status_is_a_summary_cleared_of_any_queue() -> None:
    h = Harness(Client(503))
    hook = view()
    try:
        for n in range(3):
            await asyncio.wait_for(h.d.submit([(hook, event(n))]).stored, timeout=10)
        await wait_for(lambda: len(h.client.sent) == 4, timeout=10, what="three deliveries and a retry")
        await wait_for(
            lambda: bool(h.sink.patches) and h.sink.patches[-1]["counters"]["delivered"] == 3,
            timeout=10,
            what="the summary",
        )
        last = h.sink.patches[-1]
        assert (last["pending"], last["sent"], last["deliveries"]) == (None, None, None)
        assert last["pendingDeliveries"] == 0
        assert last["counters"]["retried"] == 1
        assert last["lastDelivery"]["outcome"] == "Succeeded"
        assert last["lastDelivery"]["name"] in {o["metadata"]["name"] for o in h.api.of()}
    finally:
        await h.d.close()


# ---------------------------------------------------------------- back-pressure, never a drop


async def test_at_the_backlog_bound_events_are_deferred_not_dropped() -> None:
    h = Harness(settings=Settings(**{**SETTINGS.__dict__, "max_pending": 2}))
    h.client.gate.clear()
    hook = view()
    try:
        first = [h.d.submit([(hook, event(n))]) for n in range(2)]
        assert all(s.deferred == () for s in first)
        refused = h.d.submit([(hook, event(2))])
        assert [v.ref for v in refused.deferred] == [hook.ref]
        await refused.stored
        again = h.d.submit([(hook, event(3))])
        assert again.deferred
        await again.stored
        assert [reason for reason, _ in h.posted].count("BacklogFull") == 1  # said once per spell
        assert h.status(hook).counters.deferred == 2
        h.client.gate.set()
        await wait_for(lambda: not h.pending(hook), timeout=10, what="the backlog drained")
        taken = h.d.submit([(hook, event(2))])
        assert taken.deferred == ()  # taken once there is room
        await taken.stored
        await wait_for(lambda: "p-2" in h.client.sent, timeout=10, what="the deferred event sent")
        await asyncio.gather(*(s.stored for s in first))
    finally:
        await h.d.close()


# ---------------------------------------------------------------- a restart: look up, resume, migrate


@pytest.mark.parametrize(
    ("outcome", "sent"),
    [
        (None, True),
        (DeliveryOutcome.SUCCEEDED, False),
        (DeliveryOutcome.FAILED, False),
        (DeliveryOutcome.RETRYING, True),
    ],
    ids=["absent", "succeeded", "failed", "retrying"],
)
async def test_an_event_derived_again_is_looked_up_before_it_is_sent(
    outcome: DeliveryOutcome | None, sent: bool
) -> None:
    hook = view()
    api = FakeApi()
    if outcome is not None:
        api.add(stored_delivery(hook, 1, outcome, attempts=2))
    h = Harness(api=api)
    try:
        await asyncio.wait_for(h.d.submit([(hook, event(1))], verify=True).stored, timeout=10)
        if sent:
            await wait_for(lambda: h.outcomes().get("p-1") == "Succeeded", timeout=10, what="sent")
            assert h.client.sent == ["p-1"]
        else:
            assert h.client.sent == []
            assert h.outcomes() == {"p-1": outcome.value if outcome else ""}
        if outcome is DeliveryOutcome.RETRYING:  # resumed with its attempts, not from scratch
            [obj] = h.api.of()
            assert obj["status"]["attempts"] == 3
    finally:
        await h.d.close()


async def test_pending_delivery_objects_are_resumed_after_a_restart() -> None:
    hook = view()
    api = FakeApi()
    for n, outcome in enumerate(
        (DeliveryOutcome.PENDING, DeliveryOutcome.RETRYING, DeliveryOutcome.SUCCEEDED)
    ):
        api.add(stored_delivery(hook, n, outcome, attempts=n))
    h = Harness(api=api)
    try:
        h.d.observe(hook)
        assert await h.d.resume() == 2
        await wait_for(lambda: sorted(h.client.sent) == ["p-0", "p-1"], timeout=10, what="both resumed")
        await wait_for(lambda: set(h.outcomes().values()) == {"Succeeded"}, timeout=10, what="stored")
        assert not any(verb == "create" for verb, _ in h.api.writes)
    finally:
        await h.d.close()


def legacy_status(hook: WebhookView) -> dict[str, Any]:
    """What Herald 0.1 wrote: one delivery pending with its notification, one finished and kept."""
    pending = PendingDelivery(record=new_record(event(1), now=T0), notification=event(1))
    done = new_record(event(2), now=T0).model_copy(update={"outcome": DeliveryOutcome.FAILED, "attempts": 8})

    def dump(value: Any) -> Any:
        return value.model_dump(mode="json", by_alias=True, exclude_none=True)

    return {
        "observedGeneration": 1,
        "counters": {"delivered": 5, "failed": 1, "retried": 2, "dropped": 0},
        "pending": [dump(pending)],
        "deliveries": [dump(pending.record), dump(done)],
        "sent": [dump(event(2))],
    }


async def test_a_herald_0_1_status_becomes_delivery_objects_and_is_cleared_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("herald.delivery_store.REFUSED_DELAY", 0.1)
    hook = view()
    h = Harness()
    h.api.failure = ApiServerError("not yet", status=503)
    try:
        h.d.observe(hook, status=legacy_status(hook))
        # The store tries, and is refused, again and again: long past the summary's 0.2 s grace, no
        # patch may clear the 0.1 fields while their deliveries exist nowhere else.
        await wait_for(lambda: h.api.refused >= 4, timeout=10, what="creates refused for a while")
        assert h.sink.patches == []
        h.api.failure = None
        await wait_for(lambda: len(h.api.of()) == 2, timeout=10, what="two Delivery objects")
        await wait_for(lambda: h.client.sent == ["p-1"], timeout=10, what="the pending one sent")
        await wait_for(
            lambda: h.outcomes() == {"p-1": "Succeeded", "p-2": "Failed"}, timeout=10, what="stored"
        )
        await wait_for(lambda: bool(h.sink.patches), timeout=10, what="the status rewritten")
        assert (h.sink.patches[0]["pending"], h.sink.patches[0]["sent"]) == (None, None)
        assert h.status(hook).counters.delivered == 6  # the 0.1 counters carry on
    finally:
        await h.d.close()


# ---------------------------------------------------------------- redelivery, deletion, retention


async def test_a_redeliver_annotation_on_a_delivery_sends_it_again_once() -> None:
    hook = view()
    api = FakeApi()
    failed = stored_delivery(hook, 1, DeliveryOutcome.FAILED, attempts=8)
    failed["metadata"]["annotations"] = {REDELIVER_ANNOTATION: "now"}
    api.add(failed)
    name, namespace = failed["metadata"]["name"], failed["metadata"]["namespace"]
    h = Harness(api=api)
    try:
        h.d.observe(hook)
        h.d.redeliver_requested(namespace, name, "now")
        await wait_for(lambda: h.outcomes() == {"p-1": "Succeeded"}, timeout=10, what="sent again")
        [obj] = h.api.of()
        assert obj["metadata"]["annotations"][REDELIVERED_ANNOTATION] == "now"
        assert obj["status"]["attempts"] == 1  # a fresh retry schedule; the log keeps the story
        h.d.redeliver_requested(namespace, name, "now")  # acted on already
        await wait_for(lambda: not h.d._background, timeout=10, what="the request read")
        assert h.client.sent == ["p-1"]
    finally:
        await h.d.close()


async def test_redeliver_failed_on_a_webhook_sends_its_retained_failed_deliveries() -> None:
    hook = view()
    api = FakeApi()
    for n, outcome in enumerate((DeliveryOutcome.FAILED, DeliveryOutcome.SUCCEEDED, DeliveryOutcome.FAILED)):
        api.add(stored_delivery(hook, n, outcome, attempts=1))
    h = Harness(api=api)
    try:
        h.d.observe(hook.model_copy(update={"redeliver": "failed"}))
        await wait_for(lambda: sorted(h.client.sent) == ["p-0", "p-2"], timeout=10, what="the failed ones")
        await wait_for(lambda: set(h.outcomes().values()) == {"Succeeded"}, timeout=10, what="stored")
    finally:
        await h.d.close()


async def test_a_pending_delivery_whose_object_is_deleted_is_not_sent() -> None:
    h = Harness(Client(503, 503))
    hook = view()
    slow = Settings(**{**SETTINGS.__dict__, "retry_schedule": (3600.0,)})
    h.d.settings = slow
    try:
        await asyncio.wait_for(h.d.submit([(hook, event(1))]).stored, timeout=10)
        await wait_for(lambda: h.outcomes() == {"p-1": "Retrying"}, timeout=10, what="a retry scheduled")
        [obj] = h.api.of()
        h.d.object_deleted(obj["metadata"]["namespace"], obj["metadata"]["name"])
        assert h.pending(hook) == ()
    finally:
        await h.d.close()


async def test_finished_deliveries_are_pruned_to_the_count_and_pending_ones_never() -> None:
    settings = Settings(**{**SETTINGS.__dict__, "retain": 3})
    h = Harness(settings=settings)
    hook = view()
    try:
        for n in range(2 * h.d.retention.slack):  # swept every `slack` finished deliveries
            await asyncio.wait_for(h.d.submit([(hook, event(n))]).stored, timeout=10)
        h.client.gate.clear()
        await asyncio.wait_for(h.d.submit([(hook, event(99))]).stored, timeout=10)  # stays pending
        await wait_for(lambda: len(h.api.of()) == 4, timeout=10, what="pruned to 3 finished and 1 pending")
        assert sorted(h.outcomes().values()) == ["Pending", "Succeeded", "Succeeded", "Succeeded"]
        # A sweep reads the API server's watch cache, not every Delivery of the namespace in etcd.
        sweeps = [cached for selector, cached in h.api.listed if selector and "outcome in" in selector]
        assert sweeps
        assert all(sweeps)
    finally:
        h.client.gate.set()
        await h.d.close()


def created(n: int) -> DeploymentEvent:
    """Event ``n``, derived ``n`` seconds after event 0 (retention's newest are the latest derived)."""
    return event(n).model_copy(update={"created_at": T0 + datetime.timedelta(seconds=n)})


async def test_a_draining_backlog_deletes_what_retention_would_prune_instead_of_patching_it() -> None:
    """Six queued, retain 2: each of the first four finishes with at least two newer ones behind
    it, so its object is deleted (retention would prune it once they finish); the last two are
    patched and kept. One write each instead of a patch now and a delete later."""
    settings = Settings(**{**SETTINGS.__dict__, "retain": 2})
    h = Harness(settings=settings)
    hook = view()
    h.client.gate.clear()
    try:
        for n in range(6):
            await asyncio.wait_for(h.d.submit([(hook, created(n))]).stored, timeout=10)
        assert sorted(h.outcomes().values()) == ["Pending"] * 6  # created: the ledger may name them
        h.client.gate.set()
        await wait_for(lambda: len(h.client.sent) == 6 and not h.pending(hook), timeout=10, what="all sent")
        await wait_for(lambda: len(h.api.of()) == 2, timeout=10, what="the four outlived deleted")
        assert h.outcomes() == {"p-4": "Succeeded", "p-5": "Succeeded"}
        writes = [verb for verb, _ in h.api.writes]
        assert (writes.count("create"), writes.count("patch"), writes.count("delete")) == (6, 2, 4)
        assert h.status(hook).counters.delivered == 6
    finally:
        h.client.gate.set()
        await h.d.close()


async def test_a_delivery_finishing_behind_an_older_retrying_one_is_kept() -> None:
    """Retention keeps the newest finished: one that finishes while an older delivery is still
    retrying is not outlived by the queue, however long it is."""
    settings = Settings(**{**SETTINGS.__dict__, "retain": 1, "retry_schedule": (600.0,)})
    h = Harness(Client(503), settings=settings)  # the first attempt fails: it retries in 10 min
    hook = view()
    try:
        await asyncio.wait_for(h.d.submit([(hook, created(0))]).stored, timeout=10)
        await wait_for(lambda: h.outcomes().get("p-0") == "Retrying", timeout=10, what="p-0 retrying")
        h.client.gate.clear()
        for n in (1, 2):
            await asyncio.wait_for(h.d.submit([(hook, created(n))]).stored, timeout=10)
        h.client.gate.set()
        await wait_for(
            lambda: (h.outcomes().get("p-1"), h.outcomes().get("p-2")) == ("Succeeded", "Succeeded"),
            timeout=10,
            what="p-1 and p-2 stored",
        )
        assert "delete" not in [verb for verb, _ in h.api.writes]
    finally:
        h.client.gate.set()
        await h.d.close()


async def test_deliveries_derived_together_do_not_outlive_one_another() -> None:
    """Events derived in one reading share their creation time: none counts as newer, so none is
    deleted on finishing, however many are queued (retention orders them, not the queue)."""
    settings = Settings(**{**SETTINGS.__dict__, "retain": 1})
    h = Harness(settings=settings)
    hook = view()
    h.client.gate.clear()
    try:
        for n in range(3):
            await asyncio.wait_for(h.d.submit([(hook, event(n))]).stored, timeout=10)
        h.client.gate.set()
        await wait_for(
            lambda: sorted(h.outcomes().values()) == ["Succeeded"] * 3, timeout=10, what="all three stored"
        )
        assert "delete" not in [verb for verb, _ in h.api.writes]
    finally:
        h.client.gate.set()
        await h.d.close()


async def test_what_finishes_during_a_sweep_is_swept_once_it_ends() -> None:
    """A webhook is swept by one task at a time; the count reached meanwhile is not forgotten."""

    class HeldDeletes(FakeApi):
        def __init__(self) -> None:
            super().__init__()
            self.release, self.deleting = asyncio.Event(), asyncio.Event()

        async def delete(
            self, plural: str, namespace: str | None, name: str, *, backoff: Backoff = DEFAULT_BACKOFF
        ) -> bool:
            self.deleting.set()
            await self.release.wait()
            return await super().delete(plural, namespace, name, backoff=backoff)

    hook, api = view(), HeldDeletes()
    retention = Retention(
        api,
        settings=Settings(**{**SETTINGS.__dict__, "retain": 1}),
        metrics=Metrics(),
        wallclock=lambda: datetime.datetime.now(datetime.UTC),
        namespaces=lambda: [None],
        redeliver=lambda *_: None,
    )
    owner = owner_of(hook.ref, uid=hook.uid, cluster=False, home="herald-system")
    try:
        for n in range(retention.slack + 1):
            api.add(stored_delivery(hook, n, DeliveryOutcome.SUCCEEDED))
            if n:
                retention.finished(owner)  # the first sweep starts at `slack`
        await asyncio.wait_for(api.deleting.wait(), timeout=10)  # it listed, and its deletes wait
        for n in range(retention.slack + 1, 2 * retention.slack + 1):
            api.add(stored_delivery(hook, n, DeliveryOutcome.SUCCEEDED))
            retention.finished(owner)  # finished during the sweep: counted, not swept yet
        api.release.set()
        await wait_for(lambda: len(api.of()) == 1, timeout=10, what="pruned to the one retained")
    finally:
        await retention.close()


async def test_a_scan_deletes_finished_deliveries_past_their_age() -> None:
    hook = view()
    api = FakeApi()
    for n, outcome in enumerate(
        (DeliveryOutcome.SUCCEEDED, DeliveryOutcome.RETRYING, DeliveryOutcome.FAILED)
    ):
        obj = stored_delivery(hook, n, outcome)
        obj["metadata"]["creationTimestamp"] = "2020-01-01T00:00:00Z"
        api.add(obj)
    fresh = stored_delivery(hook, 3, DeliveryOutcome.SUCCEEDED)
    fresh["metadata"]["creationTimestamp"] = datetime.datetime.now(datetime.UTC).isoformat()
    api.add(fresh)
    h = Harness(api=api)
    try:
        await h.d.retention.scan()
        assert sorted(h.outcomes()) == ["p-1", "p-3"]  # the pending one stays, however old
    finally:
        await h.d.close()


# ---------------------------------------------------------------- enabled: false holds everything


async def test_disabling_holds_pending_retries_and_pings_and_enabling_resumes_them() -> None:
    h = Harness(Client(503))
    hook = view()
    try:
        h.client.gate.clear()
        h.d.observe(hook)
        h.queue(hook, 1)
        await wait_for(lambda: len(h.client.sent) == 1, timeout=10, what="the first attempt")
        disabled = view(generation=2, enabled=False).model_copy(update={"ping": "p1"})
        h.d.observe(disabled)  # disabled while the first attempt is in flight, and a ping asked for
        h.client.gate.set()  # the 503: its retry is due at once (retry_schedule 0)
        await wait_for(
            lambda: any(p.record.attempts == 1 for p in h.pending(hook)), timeout=10, what="the 503 recorded"
        )
        await wait_for(lambda: h.outcomes().get("p-1") == "Retrying", timeout=10, what="stored as retrying")
        assert len(h.client.sent) == 1  # neither the retry nor the ping was attempted
        assert len(h.pending(hook)) == 2
        assert "disabled" in h.ready(hook)[2]

        h.d.observe(view(generation=3, enabled=True).model_copy(update={"ping": "p1"}))
        await wait_for(lambda: len(h.client.sent) == 3, timeout=10, what="the retry and the ping")
        await wait_for(lambda: not h.pending(hook), timeout=10, what="both delivered")
        await wait_for(lambda: set(h.outcomes().values()) == {"Succeeded"}, timeout=10, what="stored")
        attempts = {o["spec"]["payloadId"]: o["status"]["attempts"] for o in h.api.of()}
        assert attempts["p-1"] == 2  # the 503, then the retry: nothing lost, nothing counted twice
        assert sorted(attempts.values()) == [1, 2]
    finally:
        await h.d.close()


# ---------------------------------------------------------------- no attempt without the receiver


@pytest.mark.parametrize(
    "failure",
    [
        ApiServerError("Kubernetes API answered 503", status=503),
        ApiUnreachable("Kubernetes API unreachable: PoolTimeout"),
        ApiForbidden("Kubernetes API answered 403", status=403),
    ],
    ids=["503", "pool-timeout", "403"],
)
async def test_an_unreadable_secret_holds_the_delivery_without_spending_an_attempt(failure: ApiError) -> None:
    secrets = Secrets({"creds": failure})
    hook = view(secretRef={"name": "creds"})
    h = Harness(secrets=secrets)
    try:
        h.queue(hook, 1)
        await wait_for(lambda: h.ready(hook)[1] == "SecretUnreadable", timeout=10, what="Ready=False")
        reads = secrets.reads
        await wait_for(lambda: secrets.reads > reads, timeout=10, what="the Secret read again")
        [pending] = h.pending(hook)
        assert pending.record.attempts == 0
        assert pending.record.outcome is DeliveryOutcome.PENDING
        assert h.client.sent == []
        assert "ns/creds" in h.ready(hook)[2]

        secrets.secrets["creds"] = opted_in(secret="s3cr3t")  # the API server answers again
        await wait_for(lambda: h.outcomes() == {"p-1": "Succeeded"}, timeout=10, what="the delivery")
        [obj] = h.api.of()
        assert obj["status"]["attempts"] == 1
        assert h.ready(hook)[0] == "True"
    finally:
        await h.d.close()


# ---------------------------------------------------------------- Secrets opt in


@pytest.mark.parametrize("field", ["secretRef", "signingSecretRef", "urlSecretRef", "caSecretRef"])
async def test_a_secret_without_the_opt_in_label_is_not_used(field: str) -> None:
    unlabelled = Secret(
        data={"secret": "v", "signingKey": "whsec_" + "A" * 40, "url": "https://x.example", "ca.crt": "x"},
        labels={"app": "payments"},
    )
    secrets = Secrets({"creds": unlabelled})
    spec: dict[str, Any] = {field: {"name": "creds"}}
    if field == "urlSecretRef":
        spec["url"] = None
    hook = view(**spec)
    h = Harness(secrets=secrets)
    try:
        h.queue(hook, 1)
        await wait_for(lambda: h.ready(hook)[1] == "SecretNotAllowed", timeout=10, what="SecretNotAllowed")
        value, _, message = h.ready(hook)
        assert value == "False"
        assert f"{field}: Secret ns/creds" in message
        assert f"{SECRET_LABEL}=true" in message
        assert h.client.sent == []
        assert h.pending(hook)[0].record.attempts == 0

        secrets.secrets["creds"] = Secret(data=unlabelled.data, labels={SECRET_LABEL: "true"})
        if field == "caSecretRef":  # the CA is only checked by a send; reaching it is the point
            await wait_for(lambda: len(h.client.sent) == 1, timeout=10, what="the attempt once opted in")
        else:
            await wait_for(lambda: not h.pending(hook), timeout=10, what="the delivery once opted in")
    finally:
        await h.d.close()


@pytest.mark.parametrize("value", ["false", "True", "yes", ""])
async def test_only_the_exact_label_value_true_opts_in(value: str) -> None:
    secrets = Secrets({"creds": Secret(data={"secret": "v"}, labels={SECRET_LABEL: value})})
    hook = view(secretRef={"name": "creds"})
    h = Harness(secrets=secrets)
    try:
        h.d.observe(hook)
        await wait_for(lambda: h.ready(hook)[1] == "SecretNotAllowed", timeout=10, what="SecretNotAllowed")
    finally:
        await h.d.close()


# ---------------------------------------------------------------- memory

_CAUSE: contextvars.ContextVar[object] = contextvars.ContextVar("cause")


class _Cause:
    """Stands for kopf's cause, which holds the whole watched object."""


async def test_a_webhook_keeps_nothing_of_the_handler_call_that_announced_it() -> None:
    """kopf sets context variables (the cause, the body) for a handler; a task started in it would
    copy them and keep them as long as it runs: for a webhook's worker, as long as the webhook."""
    h = Harness()
    try:
        cause = _Cause()
        held = weakref.ref(cause)

        def handler(cause: _Cause) -> None:
            _CAUSE.set(cause)
            h.d.observe(view(), status={"observedGeneration": 0})  # its status needs writing too
            h.d.observe(view(generation=2))

        contextvars.copy_context().run(handler, cause)
        del cause
        await wait_for(lambda: not h.d._background, timeout=10, what="the webhook validated")
        await wait_for(lambda: bool(h.sink.patches), timeout=10, what="its status written")
        gc.collect()
        assert held() is None
    finally:
        await h.d.close()


# ---------------------------------------------------------------- the summary across restarts


async def test_a_restart_on_a_current_status_writes_nothing() -> None:
    """A failover with thousands of webhooks must not rewrite thousands of statuses."""
    hook = view()
    first = Harness()
    try:
        await asyncio.wait_for(first.d.submit([(hook, event(1))]).stored, timeout=10)
        await wait_for(
            lambda: bool(first.sink.patches) and first.sink.patches[-1]["counters"]["delivered"] == 1,
            timeout=10,
            what="the delivery summed up",
        )
    finally:
        await first.d.close()
    persisted = first.sink.patches[-1]
    assert {c["type"]: c["reason"] for c in persisted["conditions"]}["Ready"] == "Delivered"

    second = Harness(api=first.api)
    try:
        second.d.observe(hook, status=persisted)
        await wait_for(lambda: not second.d._background, timeout=10, what="the webhook validated")
        assert second.sink.patches == []
    finally:
        await second.d.close()


async def test_removing_an_annotation_lets_the_same_value_be_asked_for_again() -> None:
    h = Harness()
    hook = view()
    try:
        h.d.observe(hook.model_copy(update={"ping": "1"}))
        await wait_for(lambda: len(h.client.sent) == 1, timeout=10, what="the ping")
        ping_id = h.client.sent[0]
        await wait_for(lambda: h.outcomes() == {ping_id: "Succeeded"}, timeout=10, what="the ping stored")
        asked = hook.model_copy(update={"ping": "1", "redeliver": ping_id})
        h.d.observe(asked)
        await wait_for(lambda: len(h.client.sent) == 2, timeout=10, what="the redelivery")
        h.d.observe(asked)  # the same values again: acted on once
        h.d.observe(hook)  # both annotations removed
        assert (h.status(hook).handled_ping, h.status(hook).handled_redeliver) == (None, None)
        h.d.observe(hook.model_copy(update={"ping": "1"}))  # set again: acted on again
        await wait_for(lambda: len(h.client.sent) == 3, timeout=10, what="a second ping")
        await wait_for(lambda: not h.pending(hook), timeout=10, what="the second ping finished")
        h.d.observe(asked)
        await wait_for(lambda: len(h.client.sent) == 4, timeout=10, what="a second redelivery")
        assert h.client.sent == [ping_id] * 4  # one payload id: ping, redelivery, ping, redelivery
        assert len(h.api.of()) == 1  # one Delivery object for it throughout
    finally:
        await h.d.close()


async def test_a_delivery_read_pending_just_before_it_finished_is_not_sent_again() -> None:
    """A startup listing (or a lookup) that read a Delivery while this process was finishing it."""
    h = Harness()
    hook = view()
    try:
        await asyncio.wait_for(h.d.submit([(hook, event(1))]).stored, timeout=10)
        await wait_for(lambda: h.outcomes() == {"p-1": "Succeeded"}, timeout=10, what="delivered")
        stale = stored_delivery(hook, 1, DeliveryOutcome.PENDING)  # what the read returned
        h.api.objects.clear()
        h.api.add(stale)
        assert await h.d.resume() == 1  # read as pending...
        await wait_for(lambda: not h.d._background, timeout=10, what="settled")
        assert h.client.sent == ["p-1"]  # ...but not sent a second time
        assert h.pending(hook) == ()
    finally:
        await h.d.close()


async def test_a_lookup_that_fails_never_replaces_a_delivery_resumed_meanwhile() -> None:
    """The lookup of a derived-again event fails (sent anyway: at least once); the resumed copy
    of the same delivery, queued while it was failing, is the one kept, never both."""
    hook = view()
    api = FakeApi()
    api.add(stored_delivery(hook, 1, DeliveryOutcome.RETRYING, attempts=2))
    h = Harness(api=api)
    lookups = asyncio.Event()
    real_get = api.get

    async def slow_failing_get(*args: Any, **kwargs: Any) -> Any:
        await lookups.wait()
        raise ApiServerError("down", status=503)

    api.get = slow_failing_get  # type: ignore[method-assign]
    try:
        h.d.observe(hook)
        submitted = h.d.submit([(hook, event(1))], verify=True)
        assert await h.d.resume() == 1  # queued from its object while the lookup hangs
        lookups.set()
        await asyncio.wait_for(submitted.stored, timeout=10)
        await wait_for(lambda: h.outcomes() == {"p-1": "Succeeded"}, timeout=10, what="delivered")
        await wait_for(lambda: not h.d._background, timeout=10, what="settled")
        assert h.client.sent == ["p-1"]
        [obj] = h.api.of()
        assert obj["status"]["attempts"] == 3  # the resumed one, attempts carried on
    finally:
        api.get = real_get  # type: ignore[method-assign]
        await h.d.close()
