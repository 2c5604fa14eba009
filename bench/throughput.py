"""The delivery engine alone: Herald's Dispatcher against a plain httpx.AsyncClient.

No operator and no emulator: a Dispatcher with a status sink and a secret source that answer
at once, and Herald's real DeliveryClient, delivers queued notifications to local receivers.
The baseline sends the very same bodies, with the same headers, under the same ordering and
concurrency rules: one webhook's deliveries one at a time in order (Herald keeps one worker
per webhook so a deployment's STARTED arrives before its outcome), at most
``Settings.max_concurrency`` requests in flight overall, and the same connection-pool bounds.
"""

from __future__ import annotations

import asyncio
import collections
import cProfile
import dataclasses
import datetime
import json
import pstats
import time
from collections.abc import AsyncIterator, Callable, Hashable, Mapping
from typing import Any

import httpx

from bench.harness import Arrival, notification, webhook
from bench.receivers import RemoteSinks, remote_sinks
from herald import USER_AGENT
from herald.delivery import DeliveryClient
from herald.dispatcher import Dispatcher
from herald.kube import Page, Secret
from herald.metrics import Metrics
from herald.models import DeploymentEvent, EventType
from herald.payloads import standard
from herald.settings import Settings
from herald.status import WebhookView, parse_webhook
from herald.testing import wait_for

__all__ = ["ThroughputRun", "Workload", "herald_throughput", "httpx_throughput"]


@dataclasses.dataclass
class ThroughputRun:
    deliveries: int
    elapsed: float  # first submit -> last arrival, seconds
    exact: bool  # every receiver got exactly its expected deliveries, once each
    status_patches: int = 0
    delivery_writes: int = 0  # Delivery object creates and patches
    deferred: int = 0  # held back at the backlog bound (must be none)
    profile: pstats.Stats | None = None

    @property
    def rate(self) -> float:
        return self.deliveries / self.elapsed if self.elapsed > 0 else float("nan")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Workload:
    webhooks: int
    per_webhook: int
    ports: int  # receivers (one per port); webhooks share them round-robin


class _NullSink:
    """A status subresource that accepts every patch at once (counted)."""

    def __init__(self) -> None:
        self.patches = 0

    async def patch_status(
        self, *, plural: str, namespace: str | None, name: str, status: Callable[[], Mapping[str, Any]]
    ) -> None:
        status()  # rendered, as the API client renders it
        self.patches += 1


class _NullApi:
    """The Delivery objects' API, answering every write at once (counted by verb); it lists and
    watches nothing (no restart to resume from, no redeliver requests)."""

    def __init__(self) -> None:
        self.writes: collections.Counter[str] = collections.Counter()

    async def create(self, plural: str, namespace: str | None, body: Mapping[str, Any], **_: Any) -> None:
        json.dumps(body)  # serialised, as the API client serialises it
        self.writes["create"] += 1

    async def get(self, plural: str, namespace: str | None, name: str, **_: Any) -> dict[str, Any] | None:
        return None

    async def patch(
        self, plural: str, namespace: str | None, name: str, patch: Mapping[str, Any], **_: Any
    ) -> None:
        json.dumps(patch)
        self.writes["patch"] += 1

    async def delete(self, plural: str, namespace: str | None, name: str, **_: Any) -> bool:
        self.writes["delete"] += 1
        return True

    async def pages(self, plural: str, namespace: str | None, **_: Any) -> AsyncIterator[Page]:
        yield Page((), resource_version="1")

    async def watch(
        self, plural: str, namespace: str | None, **_: Any
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        await asyncio.Event().wait()
        yield "", {}


class _NoSecrets:
    async def read_secret(self, namespace: str, name: str) -> Secret | None:
        return None


def _events(load: Workload) -> list[list[DeploymentEvent]]:
    """Per webhook, its deliveries in order; each a distinct deployment of a distinct Environment."""
    now = datetime.datetime.now(datetime.UTC)
    return [
        [
            notification(
                f"env-{k}-{j}",
                {"id": f"t-{k}-{j}", "currentStatus": "DEPLOYING"},
                EventType.DEPLOYMENT_STARTED,
                created_at=now,
            )
            for j in range(load.per_webhook)
        ]
        for k in range(load.webhooks)
    ]


def _url(receivers: RemoteSinks, load: Workload, k: int) -> str:
    return f"{receivers.url(k % load.ports)}/hook-{k}"


def _exact(arrivals: list[Arrival], load: Workload, events: list[list[DeploymentEvent]]) -> bool:
    """Every webhook got exactly its deliveries, once each, in the order they were queued."""
    by_path: dict[str, list[Hashable]] = collections.defaultdict(list)
    for a in arrivals:
        by_path[a.path].append(a.key)
    for k in range(load.webhooks):
        want: list[Hashable] = [(e.event_type.value, e.deployment.id) for e in events[k]]
        if by_path[f"/hook-{k}"] != want:
            return False
    return len(arrivals) == load.webhooks * load.per_webhook


async def _finish(
    receivers: RemoteSinks, load: Workload, events: list[list[DeploymentEvent]], started: float
) -> tuple[float, bool]:
    """(first submit -> last arrival, exact) once every delivery has arrived."""
    total = load.webhooks * load.per_webhook
    await receivers.wait_count(total, timeout=300)
    arrivals = await receivers.arrivals()
    return max(a.at for a in arrivals) - started, _exact(arrivals, load, events)


async def herald_throughput(load: Workload, *, settings: Settings, profile: bool = False) -> ThroughputRun:
    total = load.webhooks * load.per_webhook
    # Every delivery is queued up front, so the per-webhook bound must hold them all.
    settings = dataclasses.replace(settings, max_pending=max(settings.max_pending, load.per_webhook))
    events = _events(load)
    async with remote_sinks(load.ports) as receivers:
        client = DeliveryClient(settings, user_agent=USER_AGENT)
        sink = _NullSink()
        api = _NullApi()
        dispatcher = Dispatcher(
            settings=settings,
            client=client,
            sink=sink,
            api=api,
            secrets=_NoSecrets(),
            post_event=lambda *_: None,
            metrics=Metrics(),
            clock=time.monotonic,
            wallclock=time.time,
        )
        try:
            views: list[WebhookView] = []
            for k in range(load.webhooks):
                body = webhook(f"hook-{k}", _url(receivers, load, k))
                body["metadata"] |= {"uid": f"hook-uid-{k}", "generation": 1}
                view = parse_webhook(body, cluster=False)
                dispatcher.observe(view)
                views.append(view)
            await wait_for(
                lambda: sink.patches >= load.webhooks, timeout=60, what="the workers' first status"
            )
            deliveries = [
                (views[k], events[k][j]) for j in range(load.per_webhook) for k in range(load.webhooks)
            ]
            patches_before = sink.patches
            profiler = cProfile.Profile(time.process_time) if profile else None
            if profiler is not None:
                profiler.enable()
            started = time.monotonic()
            submission = dispatcher.submit(deliveries)
            persisted = asyncio.ensure_future(submission.stored)
            elapsed, exact = await _finish(receivers, load, events, started)
            await persisted
            if profiler is not None:
                profiler.disable()
            return ThroughputRun(
                deliveries=total,
                elapsed=elapsed,
                exact=exact,
                status_patches=sink.patches - patches_before,
                delivery_writes=sum(api.writes.values()),
                deferred=len(submission.deferred),
                profile=pstats.Stats(profiler) if profiler is not None else None,
            )
        finally:
            await dispatcher.close()
            await client.aclose()


async def httpx_throughput(load: Workload, *, settings: Settings) -> ThroughputRun:
    total = load.webhooks * load.per_webhook
    events = _events(load)
    headers = {"Content-Type": standard.CONTENT_TYPE, "User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    async with remote_sinks(load.ports) as receivers:
        bodies = {
            _url(receivers, load, k): [standard.render(e) for e in events[k]] for k in range(load.webhooks)
        }
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=settings.max_concurrency)
        slots = asyncio.Semaphore(settings.max_concurrency)
        async with httpx.AsyncClient(
            limits=limits, timeout=settings.delivery_timeout, trust_env=False
        ) as client:

            async def one_webhook(url: str, queue: list[bytes]) -> None:
                for body in queue:  # in order, one at a time, like a Herald worker
                    async with slots:
                        response = await client.post(url, content=body, headers=headers)
                        response.raise_for_status()

            started = time.monotonic()
            await asyncio.gather(*(one_webhook(url, queue) for url, queue in bodies.items()))
            elapsed, exact = await _finish(receivers, load, events, started)
        return ThroughputRun(deliveries=total, elapsed=elapsed, exact=exact)
