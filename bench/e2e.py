"""A deployment storm through the whole operator, and the API load it puts on the cluster.

Environments spread over namespaces, one webhook per namespace; every Environment runs its
deployments back to back (DEPLOYING then DEPLOYED: a STARTED and a SUCCESSFUL each), all
Environments at once. Every delivery is checked by identity: each webhook gets exactly the
(event, deployment) pairs of its namespace, once each, STARTED before its outcome. The same
storm is replayed against the raw notifier for the baseline. The emulator's request log over
the storm gives the API load: status patches per delivery, the most per webhook in any second,
and list calls (none should happen once the watches run).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import cProfile
import dataclasses
import math
import pstats
import socket
import time
from collections.abc import Callable, Hashable
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench.baseline import BaselineProcess, raw_notifier
from bench.harness import (
    Arrival,
    Cluster,
    classify,
    cluster,
    deploy,
    environment,
    load_objects,
    max_in_window,
    poll,
    process_cpu,
    raw_object,
    sinks,
    steady_heap,
    webhook,
)
from bench.receivers import remote_sinks
from bench.scale import herald_process, settle
from herald.delivery_object import FINISHED, LABEL_OUTCOME
from herald.handlers import Runtime
from herald.metrics import Metrics
from herald.models import ObjectRef
from herald.settings import Settings
from herald.testing import running_operator

__all__ = ["StormRun", "status_patch_load", "steady", "storm", "storm_process"]

STATES = (("DEPLOYING", "DEPLOYMENT_STARTED"), ("DEPLOYED", "DEPLOYMENT_SUCCESSFUL"))


@dataclasses.dataclass
class StormRun:
    events: int  # deployment events the storm should produce
    wall: float  # first state written -> last delivery arrived, seconds
    latencies: list[float]  # per delivery: the state's watch event -> arrival
    problems: list[str]  # correctness: missing, duplicated, unexpected or out-of-order deliveries
    received: int = 0  # deliveries that arrived (duplicates included)
    api: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    status_patch_times: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    settled: float = 0.0  # last delivery -> every status and ledger written, seconds
    counters: dict[str, float] = dataclasses.field(default_factory=dict)  # Herald's metrics at the end
    written: float = float("nan")  # first state emitted -> last state emitted, seconds
    kept: int = 0  # finished Delivery objects left in the cluster at the end
    cpu: dict[str, float] = dataclasses.field(default_factory=dict)  # process -> CPU seconds in ``wall``
    profile: pstats.Stats | None = None

    @property
    def rate(self) -> float:
        return self.events / self.wall if self.wall > 0 else float("nan")


def _layout(envs: int, namespaces: int) -> list[tuple[str, str]]:
    return [(f"team-{i % namespaces}", f"env-{i}") for i in range(envs)]


def _expected(layout: list[tuple[str, str]], deployments: int) -> dict[str, list[Hashable]]:
    want: dict[str, list[Hashable]] = collections.defaultdict(list)
    for ns, env in layout:
        for d in range(deployments):
            for _, event in STATES:
                want[f"/{ns}"].append((event, f"{env}-d{d}"))
    return want


def _verify(arrivals: list[Arrival], want: dict[str, list[Hashable]]) -> list[str]:
    by_path: dict[str, list[Hashable]] = collections.defaultdict(list)
    for a in arrivals:
        by_path[a.path].append(a.key)
    problems: list[str] = []
    for path, keys in sorted(want.items()):
        got = by_path.get(path, [])
        counts = collections.Counter(got)
        missing = set(keys) - set(counts)
        duplicated = [k for k, n in counts.items() if n > 1]
        unexpected = set(counts) - set(keys)
        position = {k: i for i, k in enumerate(got)}
        disordered = [
            k
            for k in keys
            if k[0] == "DEPLOYMENT_SUCCESSFUL"  # type: ignore[index]
            and position.get(("DEPLOYMENT_STARTED", k[1]), -1) > position.get(k, -1)  # type: ignore[index]
        ]
        for name, items in (
            ("missing", missing),
            ("duplicated", duplicated),
            ("unexpected", unexpected),
            ("outcome before STARTED", disordered),
        ):
            if items:
                problems.append(f"{path}: {len(items)} {name}, e.g. {sorted(items, key=str)[:2]}")
    stray = set(by_path) - set(want)
    if stray:
        problems.append(f"deliveries to unknown paths {sorted(stray)[:3]}")
    return problems


async def _drive(c: Cluster, layout: list[tuple[str, str]], deployments: int) -> None:
    """Every Environment at once, each through its deployments back to back."""

    async def one(ns: str, env: str) -> None:
        for d in range(deployments):
            for state, _ in STATES:
                await deploy(c.emu, env, f"{env}-d{d}", state, namespace=ns)

    await asyncio.gather(*(one(ns, env) for ns, env in layout))


def _latencies(c: Cluster, arrivals: list[Arrival]) -> list[float]:
    state_of = {event: state for state, event in STATES}
    out = []
    for a in arrivals:
        event, deployment = a.key if isinstance(a.key, tuple) else ("", "")
        env = str(deployment).rsplit("-d", 1)[0]
        emitted = c.emissions.first.get((env, deployment, state_of.get(event, "")))
        if emitted is not None:
            out.append(a.at - emitted)
    return out


async def storm(
    *, envs: int, namespaces: int, deployments: int, settings: Settings | None, profile: bool = False
) -> StormRun:
    """``settings`` None replays the storm against the raw notifier instead of Herald; ``profile``
    wraps Herald's storm, from the first write to the last delivery, in cProfile."""
    layout = _layout(envs, namespaces)
    want = _expected(layout, deployments)
    total = sum(len(v) for v in want.values())
    async with cluster() as c, sinks() as receivers:
        names = sorted({ns for ns, _ in layout})
        if settings is not None:
            load_objects(c.emu, [webhook("hook", f"{receivers.url()}/{ns}", namespace=ns) for ns in names])
        load_objects(c.emu, [environment(env, namespace=ns) for ns, env in layout])
        if settings is None:
            async with raw_notifier(c.emu.url, lambda ns: f"{receivers.url()}/{ns}"):
                started = time.monotonic()
                with steady_heap():
                    await _drive(c, layout, deployments)
                    await poll(
                        lambda: len(receivers.arrivals) >= total, timeout=300, what=f"{total} deliveries"
                    )
                wall = max(a.at for a in receivers.arrivals) - started
            return StormRun(
                events=total,
                wall=wall,
                latencies=_latencies(c, receivers.arrivals),
                problems=_verify(receivers.arrivals, want),
                received=len(receivers.arrivals),
            )

        metrics = Metrics()
        async with running_operator(c.emu, settings, metrics=metrics) as runtime:
            await _webhooks_ready(c, runtime, names)
            profiler = cProfile.Profile(time.process_time) if profile else None
            if profiler is not None:
                profiler.enable()
            started = time.monotonic()
            with steady_heap():
                await _drive(c, layout, deployments)
                await poll(lambda: len(receivers.arrivals) >= total, timeout=300, what=f"{total} deliveries")
            last = max(a.at for a in receivers.arrivals)
            if profiler is not None:
                profiler.disable()
            await poll(
                lambda: _settled(c, want, layout, deployments),
                timeout=120,
                what="every status and ledger written",
            )
            settled = time.monotonic() - last
            # Retention's last sweep (and any write still in flight) lands after the statuses.
            await poll(lambda: c.log.quiet(1.0), timeout=60, what="the operator to go quiet")
            requests = c.log.since(started)
            kept = _kept(c)
        api, patch_times = _requests(requests)
        return StormRun(
            events=total,
            wall=last - started,
            latencies=_latencies(c, receivers.arrivals),
            problems=_verify(receivers.arrivals, want),
            received=len(receivers.arrivals),
            api=api,
            status_patch_times=dict(patch_times),
            settled=settled,
            counters=_counters(metrics),
            profile=pstats.Stats(profiler) if profiler is not None else None,
            kept=kept,
        )


async def storm_process(*, envs: int, namespaces: int, deployments: int, herald: bool) -> StormRun:
    """The storm as deployed: ``herald run`` (``herald`` False: the raw notifier) in a process of its
    own and the receivers in another, so that neither the receivers' nor the driver's CPU is
    counted against the sender, nor the sender's against the driver. The emulator (the API server)
    stays in this process, as in ``steady``: what Herald's API writes cost it still slows the
    driver's writes and the watch events Herald gets."""
    layout = _layout(envs, namespaces)
    want = _expected(layout, deployments)
    total = sum(len(v) for v in want.values())
    names = sorted({ns for ns, _ in layout})
    async with cluster() as c, remote_sinks(1) as receivers:
        load_objects(c.emu, [environment(env, namespace=ns) for ns, env in layout])
        async with contextlib.AsyncExitStack() as stack:
            if herald:
                hooks = [webhook("hook", f"{receivers.url()}/{ns}", namespace=ns) for ns in names]
                load_objects(c.emu, hooks)
                proc = await stack.enter_async_context(herald_process(c.emu))
                if math.isnan((await settle(c, proc, webhooks=len(names), timeout=60))[0]):
                    raise RuntimeError(f"herald run did not settle:\n{proc.output()[-3000:]}")
            else:
                target = f"{receivers.url()}/{{namespace}}"
                await stack.enter_async_context(BaselineProcess(c.emu.url, target).running())
            started = time.monotonic()
            with steady_heap():
                await _drive(c, layout, deployments)
                await receivers.wait_count(total, timeout=300)
            arrivals = await receivers.arrivals()
        return StormRun(
            events=total,
            wall=max(a.at for a in arrivals) - started,
            latencies=_latencies(c, arrivals),
            problems=_verify(arrivals, want),
            received=len(arrivals),
        )


async def _webhooks_ready(c: Cluster, runtime: Runtime, namespaces: list[str]) -> None:
    """Each namespace's webhook has its worker and its first status written."""
    await poll(
        lambda: all(
            (s := runtime.dispatcher.status_of(cluster=False, ref=ObjectRef(namespace=ns, name="hook")))
            is not None
            and s.observed_generation == 1
            for ns in namespaces
        ),
        timeout=30,
        what="the webhooks' workers",
    )
    await poll(lambda: _statuses_written(c, namespaces), timeout=30, what="the webhooks' first status")


def _requests(requests: list[tuple[float, Any]]) -> tuple[collections.Counter[str], dict[str, list[float]]]:
    """Herald's API requests by kind, and when each webhook's status was patched."""
    api: collections.Counter[str] = collections.Counter()
    patch_times: dict[str, list[float]] = collections.defaultdict(list)
    for moment, request in requests:
        kind = classify(request)
        if kind == "UPDATE environments/status":
            continue  # the deployments' own writes, not Herald's
        api[kind] += 1
        if kind == "UPDATE webhooks/status":
            patch_times[f"{request.namespace}/{request.name}"].append(moment)
    return api, dict(patch_times)


async def steady(*, rate: float, seconds: float, envs: int, retain: int) -> StormRun:
    """A steady stream of ``rate`` events a second for ``seconds`` to one webhook: the happy path.

    ``herald run`` and the receiver run in processes of their own, as deployed: in one process
    with the emulator, the whole pipeline kept up with about 25 events a second, and with the
    receiver beside the emulator each attempt took 25 ms (one webhook's deliveries go one at a
    time): a backlog either way, which is the burst's case.

    The Environments are created once Herald runs, with no deployment yet (as new ones are in a
    live cluster), then each takes its turn: event ``i`` of the stream is written ``i / rate``
    seconds after the start, Environment ``i % envs`` stepping through its deployments
    (DEPLOYING, then DEPLOYED). The counters are Herald's own, read from its /metrics.
    """
    deployments = max(1, round(rate * seconds / (2 * envs)))
    layout = _layout(envs, 1)
    want = _expected(layout, deployments)
    total = sum(len(v) for v in want.values())
    names = sorted({ns for ns, _ in layout})
    port = _free_port()
    async with cluster() as c, remote_sinks(1) as receivers:
        load_objects(c.emu, [webhook("hook", f"{receivers.url()}/{ns}", namespace=ns) for ns in names])
        env = {"HERALD_RETAIN": str(retain), "HERALD_METRICS_PORT": str(port)}
        async with herald_process(c.emu, **env) as proc:
            if math.isnan((await settle(c, proc, webhooks=len(names), timeout=60))[0]):
                raise RuntimeError(f"herald run did not settle:\n{proc.output()[-3000:]}")
            for ns, name in layout:  # no deployment yet: nothing for Herald to do until the stream
                await c.emu.create(environment(name, namespace=ns))
            await poll(lambda: c.log.quiet(0.5), timeout=30, what="the Environments to be created")
            started = time.monotonic()
            cpu = process_cpu(proc.proc.pid if proc.proc else 0), time.process_time()

            async def one(k: int, ns: str, name: str) -> None:
                for step in range(2 * deployments):
                    await asyncio.sleep(max(0.0, started + (step * envs + k) / rate - time.monotonic()))
                    await deploy(c.emu, name, f"{name}-d{step // 2}", STATES[step % 2][0], namespace=ns)

            pending: list[float] = [0.0]
            sampler = asyncio.create_task(_sample_pending(port, pending))
            with steady_heap():
                await asyncio.gather(*(one(k, ns, name) for k, (ns, name) in enumerate(layout)))
                await receivers.wait_count(total, timeout=120)
            sampler.cancel()
            arrivals = await receivers.arrivals()
            last = max(a.at for a in arrivals)
            used = {
                "herald run": process_cpu(proc.proc.pid if proc.proc else 0) - cpu[0],
                "emulator, receiver, driver": time.process_time() - cpu[1],
            }
            await poll(
                lambda: _settled(c, want, layout, deployments),
                timeout=120,
                what="every status and ledger written",
            )
            settled = time.monotonic() - last
            await poll(lambda: c.log.quiet(1.5), timeout=60, what="the operator to go quiet", every=0.25)
            api, patch_times = _requests(c.log.since(started))
            counters = {**await _scraped(port), "most pending (sampled each second)": max(pending)}
        return StormRun(
            events=total,
            wall=last - started,
            latencies=_latencies(c, arrivals),
            problems=_verify(arrivals, want),
            received=len(arrivals),
            api=api,
            status_patch_times=patch_times,
            settled=settled,
            counters=counters,
            written=max(c.emissions.first.values()) - min(c.emissions.first.values()),
            cpu=used,
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of a ``herald run`` process's /metrics, by (name, labels)."""
    url = f"http://127.0.0.1:{port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def _sample_pending(port: int, into: list[float]) -> None:
    """herald_pending_deliveries each second, until cancelled: whether the backlog waits in the
    webhook's queue (counted) or before it (kopf, the flow: not counted)."""
    while True:
        into.append((await _samples(port)).get(("herald_pending_deliveries", ()), 0.0))
        await asyncio.sleep(1.0)


async def _scraped(port: int) -> dict[str, float]:
    """``_counters`` of a ``herald run`` process, from its /metrics."""
    samples = await _samples(port)

    def read(name: str, labels: dict[str, str] | None = None) -> float | None:
        return samples.get((name, tuple(sorted((labels or {}).items()))))

    return _counters_from(read)


def _counters(metrics: Metrics) -> dict[str, float]:
    return _counters_from(metrics.registry.get_sample_value)


def _counters_from(read: Callable[..., float | None]) -> dict[str, float]:
    """Delivery writes by verb, deferred and pruned deliveries, status patches: as /metrics says."""
    counters = {
        f"delivery writes: {verb}": read("herald_delivery_writes_total", {"verb": verb}) or 0.0
        for verb in ("create", "patch", "delete")
    }
    counters["deferred"] = read("herald_deliveries_deferred_total") or 0.0
    counters["pruned"] = read("herald_deliveries_pruned_total") or 0.0
    counters["status patches"] = read("herald_status_patches_total") or 0.0
    # Per delivery, the mean attempt: the one worker of a webhook sends one at a time.
    counters["attempt seconds (connect to response)"] = read("herald_delivery_duration_seconds_sum") or 0.0
    return counters


def _kept(c: Cluster) -> int:
    """Finished Delivery objects in the emulator: what retention left of the log."""
    return sum(
        1
        for (resource, _, _), obj in c.emu.kmock.objects.items()
        if resource.plural == "deliveries"
        and not obj.deleted
        and ((obj.raw.get("metadata") or {}).get("labels") or {}).get(LABEL_OUTCOME) in FINISHED
    )


def _statuses_written(c: Cluster, namespaces: list[str]) -> bool:
    return all(((raw_object(c.emu, "webhooks", ns, "hook") or {}).get("status") or {}) for ns in namespaces)


def _settled(
    c: Cluster, want: dict[str, list[Hashable]], layout: list[tuple[str, str]], deployments: int
) -> bool:
    """Every webhook's status counts its deliveries with none pending; every ledger has the last one."""
    for path, keys in want.items():
        status: dict[str, Any] = (raw_object(c.emu, "webhooks", path[1:], "hook") or {}).get("status") or {}
        if (status.get("counters") or {}).get("delivered") != len(keys) or status.get("pendingDeliveries"):
            return False
    last = f"d{deployments - 1}"
    for ns, env in layout:
        annotations = ((raw_object(c.emu, "environments", ns, env) or {}).get("metadata") or {}).get(
            "annotations"
        ) or {}
        if f"{env}-{last}" not in annotations.get("herald.dev/notified", ""):
            return False
    return True


def status_patch_load(run: StormRun, *, deliveries: int) -> tuple[float, int]:
    """(status patches per delivery, the most patches one webhook got in any one second)."""
    patches = run.api.get("UPDATE webhooks/status", 0)
    most = max((max_in_window(times, 1.0) for times in run.status_patch_times.values()), default=0)
    return patches / max(deliveries, 1), most
