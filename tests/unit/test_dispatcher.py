"""dispatcher.py's decisions: what is stored before an event counts as notified, what holds
deliveries without spending attempts (a disabled webhook, Secrets Herald cannot use), and which
Secrets Herald reads at all."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from herald.delivery import AttemptResult, OutgoingRequest
from herald.dispatcher import SECRET_LABEL, Dispatcher, NotPersisted
from herald.kube import ApiError, ApiForbidden, ApiServerError, ApiUnreachable, Secret
from herald.metrics import Metrics
from herald.models import DeliveryOutcome
from herald.retry import Verdict
from herald.settings import Settings
from herald.status import WebhookStatus, WebhookView, condition, parse_webhook
from herald.testing import wait_for

from .test_status import event

SETTINGS = Settings(
    status_interval=0.05, retry_schedule=(0.0, 0.0, 0.0), retry_jitter=0.0, secret_cache_ttl=0.0
)


class Client:
    """Answers each delivery with the next scripted HTTP status (200 once the script runs out)."""

    def __init__(self, *statuses: int) -> None:
        self.script = list(statuses)
        self.sent: list[OutgoingRequest] = []
        self.gate = asyncio.Event()  # answers wait until it is set
        self.gate.set()

    async def send(self, request: OutgoingRequest, *, now: Any) -> AttemptResult:
        self.sent.append(request)
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


def dispatcher(client: Client, sink: Sink, secrets: Secrets | None = None) -> Dispatcher:
    return Dispatcher(
        settings=SETTINGS,
        client=client,  # type: ignore[arg-type]
        sink=sink,
        secrets=secrets or Secrets(),
        post_event=lambda *_: None,
        metrics=Metrics(),
        clock=time.monotonic,
        wallclock=time.time,
    )


def status(d: Dispatcher, hook: WebhookView) -> WebhookStatus:
    found = d.status_of(cluster=False, ref=hook.ref)
    assert found is not None
    return found


def ready(d: Dispatcher, hook: WebhookView) -> tuple[str, str, str]:
    found = condition(status(d, hook), "Ready")
    return (found.status, found.reason, found.message) if found is not None else ("", "", "")


def queue(d: Dispatcher, hook: WebhookView, n: int) -> None:
    """Submit one delivery without waiting for it to be stored (whether it is, is not the point)."""
    stored = asyncio.ensure_future(d.submit([(hook, event(n))]))
    stored.add_done_callback(lambda f: f.cancelled() or f.exception())


# ---------------------------------------------------------------- item 1: stored before notified


async def test_an_event_is_not_notified_when_herald_stops_before_its_deliveries_are_stored() -> None:
    """The ledger waits on ``submit``'s awaitable: it must fail, not complete, on such a stop."""
    d = dispatcher(Client(), Sink(failure=ApiForbidden("status refused", status=403)))
    stored = asyncio.ensure_future(d.submit([(view(), event(1))]))
    await d.close()
    with pytest.raises(NotPersisted):
        await asyncio.wait_for(stored, timeout=10)


async def test_an_event_is_notified_once_its_deliveries_are_stored() -> None:
    sink = Sink()
    d = dispatcher(Client(), sink)
    try:
        await asyncio.wait_for(d.submit([(view(), event(1))]), timeout=10)
        assert any(p["pending"] or p["deliveries"] for p in sink.patches)
    finally:
        await d.close()


async def test_deliveries_to_a_deleted_webhook_do_not_keep_their_event_unnotified() -> None:
    hook = view()
    d = dispatcher(Client(), Sink(failure=ApiServerError("down", status=503)))
    stored = asyncio.ensure_future(d.submit([(hook, event(1))]))
    await d.forget(cluster=False, ref=hook.ref)  # the webhook was deleted: nothing left to store
    await asyncio.wait_for(stored, timeout=10)
    await d.close()


# ---------------------------------------------------------------- item 6: enabled: false holds everything


async def test_disabling_holds_pending_retries_and_pings_and_enabling_resumes_them() -> None:
    client = Client(503)
    hook = view()
    d = dispatcher(client, Sink())
    try:
        client.gate.clear()
        d.observe(hook)
        queue(d, hook, 1)
        await wait_for(lambda: len(client.sent) == 1, timeout=10, what="the first attempt")
        disabled = view(generation=2, enabled=False).model_copy(update={"ping": "p1"})
        d.observe(disabled)  # disabled while the first attempt is in flight, and a ping asked for
        client.gate.set()  # the 503: its retry is due at once (retry_schedule 0)
        await wait_for(
            lambda: any(p.record.attempts == 1 for p in status(d, hook).pending),
            timeout=10,
            what="the 503 recorded",
        )
        # The worker takes its next step at once; once a flush has stored the status, a retry or a
        # ping that was not held would have been sent already.
        await asyncio.wait_for(d._workers[(False, hook.ref)].persisted(), timeout=10)
        held = status(d, hook)
        assert len(client.sent) == 1  # neither the retry nor the ping was attempted
        assert len(held.pending) == 2
        assert "p-1" in {p.record.payload_id for p in held.pending}
        assert [p.record.attempts for p in held.pending if p.record.payload_id == "p-1"] == [1]
        assert "disabled" in ready(d, hook)[2]

        d.observe(view(generation=3, enabled=True).model_copy(update={"ping": "p1"}))
        await wait_for(lambda: len(client.sent) == 3, timeout=10, what="the retry and the ping")
        await wait_for(lambda: not status(d, hook).pending, timeout=10, what="both delivered")
        attempts = {r.payload_id: r.attempts for r in status(d, hook).deliveries}
        assert attempts["p-1"] == 2  # the 503, then the retry: nothing lost, nothing counted twice
        assert sorted(attempts.values()) == [1, 2]
    finally:
        await d.close()


# ---------------------------------------------------------------- item 8: no attempt without the receiver


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
    client = Client()
    secrets = Secrets({"creds": failure})
    hook = view(secretRef={"name": "creds"})
    d = dispatcher(client, Sink(), secrets)
    try:
        queue(d, hook, 1)
        await wait_for(lambda: ready(d, hook)[1] == "SecretUnreadable", timeout=10, what="Ready=False")
        reads = secrets.reads
        await wait_for(lambda: secrets.reads > reads, timeout=10, what="the Secret read again")
        [pending] = status(d, hook).pending
        assert pending.record.attempts == 0
        assert pending.record.outcome is DeliveryOutcome.PENDING
        assert client.sent == []
        assert "ns/creds" in ready(d, hook)[2]

        secrets.secrets["creds"] = opted_in(secret="s3cr3t")  # the API server answers again
        await wait_for(lambda: not status(d, hook).pending, timeout=10, what="the delivery")
        [record] = status(d, hook).deliveries
        assert (record.attempts, record.outcome) == (1, DeliveryOutcome.SUCCEEDED)
        assert client.sent[0].secret == "s3cr3t"
        assert ready(d, hook)[0] == "True"
    finally:
        await d.close()


# ---------------------------------------------------------------- item 9: Secrets opt in


@pytest.mark.parametrize("field", ["secretRef", "signingSecretRef", "urlSecretRef", "caSecretRef"])
async def test_a_secret_without_the_opt_in_label_is_not_used(field: str) -> None:
    client = Client()
    unlabelled = Secret(
        data={"secret": "v", "signingKey": "whsec_" + "A" * 40, "url": "https://x.example", "ca.crt": "x"},
        labels={"app": "payments"},
    )
    secrets = Secrets({"creds": unlabelled})
    spec: dict[str, Any] = {field: {"name": "creds"}}
    if field == "urlSecretRef":
        spec["url"] = None
    hook = view(**spec)
    d = dispatcher(client, Sink(), secrets)
    try:
        queue(d, hook, 1)
        await wait_for(lambda: ready(d, hook)[1] == "SecretNotAllowed", timeout=10, what="SecretNotAllowed")
        value, _, message = ready(d, hook)
        assert value == "False"
        assert f"{field}: Secret ns/creds" in message
        assert f"{SECRET_LABEL}=true" in message
        assert client.sent == []
        assert status(d, hook).pending[0].record.attempts == 0

        secrets.secrets["creds"] = Secret(data=unlabelled.data, labels={SECRET_LABEL: "true"})
        if field == "caSecretRef":  # the CA is only checked by a send; reaching it is the point
            await wait_for(lambda: len(client.sent) == 1, timeout=10, what="the attempt once opted in")
        else:
            await wait_for(lambda: not status(d, hook).pending, timeout=10, what="the delivery once opted in")
    finally:
        await d.close()


@pytest.mark.parametrize("value", ["false", "True", "yes", ""])
async def test_only_the_exact_label_value_true_opts_in(value: str) -> None:
    secrets = Secrets({"creds": Secret(data={"secret": "v"}, labels={SECRET_LABEL: value})})
    hook = view(secretRef={"name": "creds"})
    d = dispatcher(Client(), Sink(), secrets)
    try:
        d.observe(hook)
        await wait_for(lambda: ready(d, hook)[1] == "SecretNotAllowed", timeout=10, what="SecretNotAllowed")
    finally:
        await d.close()
