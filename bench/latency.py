"""Latency from the emulator's watch event to the receiver: Herald against the raw notifier.

Each transition gets its own Environment (a new deployment id in DEPLOYING: one STARTED delivery
to one webhook) and the next starts once the previous delivery has arrived, so a sample is one
event's path alone. A second, short run moves one Environment back to back, which shows what
holds the next event of the same object. The profile wraps the same sequence in cProfile.
"""

from __future__ import annotations

import collections
import contextlib
import cProfile
import dataclasses
import pstats
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from bench.baseline import raw_notifier
from bench.harness import (
    NS,
    Cluster,
    Sinks,
    cluster,
    deploy,
    environment,
    load_objects,
    poll,
    sinks,
    steady_heap,
    webhook,
)
from herald.dispatcher import Submission
from herald.handlers import Runtime
from herald.metrics import Metrics
from herald.models import ObjectRef
from herald.settings import Settings
from herald.testing import running_operator, wait_for

__all__ = [
    "LatencyRun",
    "Stages",
    "back_to_back",
    "baseline_latency",
    "herald_latency",
    "sequence",
]

STARTED = "DEPLOYMENT_STARTED"
QUIET = 1.2  # seconds without an API request: the operator is done with the events
TIMEOUT = 30.0  # per delivery: generous, a busy loop must not fail a benchmark


@dataclasses.dataclass
class LatencyRun:
    samples: list[float]  # seconds, emission -> arrival
    expected: int  # deliveries that should have arrived
    received: int  # deliveries that did (duplicates included)
    stages: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    cpu: float = float("nan")  # CPU seconds of this whole process per measured event
    profile: pstats.Stats | None = None


class Stages:
    """Stamps where an event is on Herald's hot path, by wrapping two of the dispatcher's entry
    points from outside (the operator's code is untouched; the wrappers cost a dict insert)."""

    def __init__(self, runtime: Runtime) -> None:
        self.submitted: dict[str, float] = {}  # deployment id -> handler hands it to the dispatcher
        self.sent: dict[str, float] = {}  # deployment id -> the delivery client starts the POST
        self._deployment_of: dict[str, str] = {}  # payload id -> deployment id
        dispatcher = runtime.dispatcher
        submit, send = dispatcher.submit, dispatcher.client.send

        def timed_submit(deliveries: Any, **kwargs: Any) -> Submission:
            deliveries = list(deliveries)
            now = time.monotonic()
            for _, event in deliveries:
                self.submitted.setdefault(event.deployment.id, now)
                self._deployment_of[event.payload_id] = event.deployment.id
            return submit(deliveries, **kwargs)

        async def timed_send(request: Any, **kwargs: Any) -> Any:
            deployment = self._deployment_of.get(request.payload_id)
            if deployment is not None:
                self.sent.setdefault(deployment, time.monotonic())
            return await send(request, **kwargs)

        dispatcher.submit = timed_submit  # type: ignore[method-assign]
        dispatcher.client.send = timed_send  # type: ignore[method-assign]


async def sequence(
    c: Cluster, receivers: Sinks, *, envs: Sequence[str], paths: Sequence[str], warmup: int, prefix: str
) -> tuple[list[float], list[tuple[str, float, float]]]:
    """Move each Environment to DEPLOYING in turn, waiting for the delivery at every path.

    Returns the latency samples past the warm-up and (deployment id, emitted, arrived) for each.
    """
    samples: list[float] = []
    timeline: list[tuple[str, float, float]] = []
    with steady_heap():
        for i, env in enumerate(envs):
            deployment = f"{prefix}-{i}"
            await deploy(c.emu, env, deployment, "DEPLOYING")
            for path in paths:
                arrival = await receivers.wait(path, (STARTED, deployment), timeout=TIMEOUT)
                emitted = c.emissions.at(env, deployment, "DEPLOYING")
                if i >= warmup:
                    samples.append(arrival.at - emitted)
                    timeline.append((deployment, emitted, arrival.at))
    return samples, timeline


@contextlib.asynccontextmanager
async def _operator(c: Cluster, settings: Settings, hooks: Sequence[str]) -> AsyncIterator[Runtime]:
    """The operator in this loop, once every webhook's worker has written its first status."""
    async with running_operator(c.emu, settings, metrics=Metrics()) as runtime:

        def ready() -> bool:
            statuses = [
                runtime.dispatcher.status_of(cluster=False, ref=ObjectRef(namespace=NS, name=h))
                for h in hooks
            ]
            return all(s is not None and s.observed_generation == 1 for s in statuses)

        await wait_for(ready, timeout=30, what="the webhooks' workers")
        yield runtime


async def herald_latency(n: int, *, warmup: int, settings: Settings, profile: bool = False) -> LatencyRun:
    envs = [f"env-{i}" for i in range(n + warmup)]
    async with cluster() as c, sinks() as receivers:
        load_objects(c.emu, [webhook("lat", f"{receivers.url()}/lat", events=(STARTED,))])
        load_objects(c.emu, [environment(e) for e in envs])
        async with _operator(c, settings, ["lat"]) as runtime:
            stages = Stages(runtime)
            profiler = cProfile.Profile(time.process_time) if profile else None
            if profiler is not None:
                profiler.enable()
            cpu = time.process_time()
            try:
                samples, timeline = await sequence(
                    c, receivers, envs=envs, paths=["/lat"], warmup=warmup, prefix="d"
                )
                # The work an event causes after its delivery (status, ledger, Event) counts too.
                await poll(lambda: c.log.quiet(QUIET), timeout=60, what="the operator to go quiet")
            finally:
                cpu = time.process_time() - cpu
                if profiler is not None:
                    profiler.disable()
        split: dict[str, list[float]] = collections.defaultdict(list)
        for deployment, emitted, arrived in timeline:
            submitted, sent = stages.submitted.get(deployment), stages.sent.get(deployment)
            if submitted is not None and sent is not None:
                split["watch event -> handler submits (kopf, parse, match)"].append(submitted - emitted)
                split["submit -> POST starts (queue, worker wake-up, render)"].append(sent - submitted)
                split["POST starts -> receiver (httpx on aiohttp, egress, socket)"].append(arrived - sent)
        return LatencyRun(
            samples=samples,
            expected=n + warmup,
            received=len(receivers.arrivals),
            stages=dict(split),
            cpu=cpu / (n + warmup),
            profile=pstats.Stats(profiler) if profiler is not None else None,
        )


async def baseline_latency(n: int, *, warmup: int) -> LatencyRun:
    envs = [f"env-{i}" for i in range(n + warmup)]
    async with cluster() as c, sinks() as receivers:
        load_objects(c.emu, [environment(e) for e in envs])
        async with raw_notifier(c.emu.url, lambda _: f"{receivers.url()}/lat"):
            cpu = time.process_time()
            samples, _ = await sequence(c, receivers, envs=envs, paths=["/lat"], warmup=warmup, prefix="d")
            await poll(lambda: c.log.quiet(QUIET), timeout=60, what="the emulator to go quiet")
            cpu = time.process_time() - cpu
        return LatencyRun(
            samples=samples, expected=n + warmup, received=len(receivers.arrivals), cpu=cpu / (n + warmup)
        )


async def back_to_back(n: int, *, settings: Settings | None) -> LatencyRun:
    """One Environment, a new deployment as soon as the previous one was delivered.

    ``settings`` None runs the raw notifier instead of Herald.
    """
    async with cluster() as c, sinks() as receivers:
        if settings is not None:
            load_objects(c.emu, [webhook("lat", f"{receivers.url()}/lat", events=(STARTED,))])
        load_objects(c.emu, [environment("web")])
        envs = ["web"] * (n + 1)
        if settings is None:
            async with raw_notifier(c.emu.url, lambda _: f"{receivers.url()}/lat"):
                samples, _ = await sequence(c, receivers, envs=envs, paths=["/lat"], warmup=1, prefix="b")
        else:
            async with _operator(c, settings, ["lat"]):
                samples, _ = await sequence(c, receivers, envs=envs, paths=["/lat"], warmup=1, prefix="b")
        return LatencyRun(samples=samples, expected=n + 1, received=len(receivers.arrivals))
