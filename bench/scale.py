"""``herald run`` as a child process: its memory, and its latency on an empty and a loaded cluster.

The operator runs alone in its own interpreter (``tests/integration/operator_process``), so its
resident memory is read from ``/proc/<pid>/status`` apart from the emulator's, and its latency
is measured with the emulator and receiver in another process, as in production. The raw
notifier runs the same way for the baseline. Isolation runs the same way: one webhook's receiver hangs while
the others are timed. The loaded cluster holds thousands of Webhooks
and Environments in other namespaces, all already notified: none of them should cost the
target namespace's event anything (matching reads the namespace's index key, not a list).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import cProfile
import dataclasses
import datetime
import hashlib
import json
import math
import pathlib
import pstats
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from bench.baseline import BaselineProcess
from bench.harness import (
    BENCH_SETTINGS,
    Cluster,
    RequestLog,
    classify,
    cluster,
    environment,
    load_objects,
    notification,
    poll,
    process_cpu,
    sinks,
    webhook,
)
from bench.latency import STARTED, sequence
from herald.decision import new_record
from herald.delivery_object import delivery_name, owner_of, to_object
from herald.metrics import Metrics
from herald.models import DeliveryOutcome, EventType, ObjectRef, PendingDelivery
from herald.testing import Emulator, running_operator

if TYPE_CHECKING:
    from tests.integration.operator_process import OperatorProcess

__all__ = [
    "ProcessRun",
    "herald_process",
    "process_isolation",
    "process_latency",
    "retained_deliveries",
    "settle",
    "startup_profile",
]

# Production settings, but for the loopback receivers and a cluster the emulator can serve.
OPERATOR_ENV = {
    # The notification core alone, as before sources existed: the emulator serves every source's
    # kind, and with sources on kopf indexes every Environment at startup (README: Known limits).
    "HERALD_SOURCES": "none",
    "HERALD_LOG_LEVEL": "INFO",
    "HERALD_STATUS_INTERVAL": "1",
    "HERALD_DELIVERY_TIMEOUT": "15",
    "HERALD_RETRY_SCHEDULE": "5,300,1800,7200,18000,36000,36000",
    "HERALD_RETRY_JITTER": "0.2",
}


@dataclasses.dataclass
class ProcessRun:
    samples: list[float]
    expected: int
    received: int
    rss_mb: float = float("nan")  # resident memory once settled, before the measured events
    peak_mb: float = float("nan")  # VmHWM at the end
    settle: float = float("nan")  # start -> every webhook's status written and quiet; NaN: not in time
    statuses_written: int = 0
    hot_path_requests: dict[str, int] = dataclasses.field(default_factory=dict)  # API calls during events
    startup_requests: dict[str, int] = dataclasses.field(default_factory=dict)  # API calls until settled
    scan: float = float("nan")  # start -> Retention's first scan of every Delivery listed to its end
    cpu: float = float("nan")  # the sender's CPU seconds per measured event, its aftermath included


def _memory(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB of one process: the operator's alone."""
    fields: dict[str, float] = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields.get("VmRSS", float("nan")), fields.get("VmHWM", float("nan"))


class _Counter:
    """Counts one kind of request in the emulator's log, reading only what is new on each call."""

    def __init__(self, log: RequestLog, kind: str) -> None:
        self._log, self._kind, self._seen, self.count = log, kind, 0, 0

    def __call__(self) -> int:
        end = len(self._log)
        self.count += sum(1 for r in self._log[self._seen : end] if classify(r) == self._kind)
        self._seen = end
        return self.count


def retained_deliveries(webhooks: int, per_webhook: int, *, namespaces: int) -> Iterator[dict[str, Any]]:
    """Each crowd webhook's finished Delivery objects (``to_object``, as Herald creates them),
    created over the last day: what ``per_webhook`` retained deliveries each leave in the cluster.

    One notification per webhook is rendered and shared by its objects (the emulator's memory:
    Herald reads these objects' metadata only); names, payload ids, labels and times are each
    object's own.
    """
    now = datetime.datetime.now(datetime.UTC)
    deployment = {"id": "old-0", "currentStatus": "DEPLOYED", "logs": ["pulled", "started"]}
    event = notification("app-0", deployment, EventType.DEPLOYMENT_SUCCESSFUL, created_at=now)
    record = new_record(event, now=now).model_copy(
        update={"outcome": DeliveryOutcome.SUCCEEDED, "attempts": 1, "http_status": 200, "duration_ms": 3}
    )
    for i in range(webhooks):
        namespace = f"crowd-{i % namespaces}"
        owner = owner_of(
            ObjectRef(namespace=namespace, name=f"hook-{i}"), uid=_uid(i), cluster=False, home=""
        )
        template = to_object(owner, PendingDelivery(record=record, notification=event))
        for j in range(per_webhook):
            payload_id = hashlib.sha256(f"{i}/{j}".encode()).hexdigest()[:32]
            created = (now - datetime.timedelta(seconds=86400 * (per_webhook - j) / per_webhook)).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            )
            yield {
                **template,
                "metadata": {
                    **template["metadata"],
                    "name": delivery_name(owner, payload_id),
                    "creationTimestamp": created,
                },
                "spec": {**template["spec"], "payloadId": payload_id, "createdAt": created},
            }


def _uid(i: int) -> str:
    return f"hook-uid-{i}"


def _crowd(receiver: str, *, webhooks: int, environments: int, namespaces: int) -> list[dict[str, Any]]:
    """Webhooks and Environments in other namespaces, every deployment already notified."""
    objects: list[dict[str, Any]] = []
    for i in range(webhooks):
        hook = webhook(f"hook-{i}", f"{receiver}/crowd/{i}", namespace=f"crowd-{i % namespaces}")
        hook["metadata"]["uid"] = _uid(i)  # the owner its Delivery objects name
        objects.append(hook)
    for i in range(environments):
        notified = json.dumps(
            {"deployments": {f"old-{i}": ["DEPLOYMENT_STARTED", "DEPLOYMENT_SUCCESSFUL"]}},
            separators=(",", ":"),
        )
        objects.append(
            environment(
                f"app-{i}",
                namespace=f"crowd-{i % namespaces}",
                status={
                    "deployment": {"id": f"old-{i}", "currentStatus": "DEPLOYED", "desiredStatus": "DEPLOYED"}
                },
                ledger=notified,
            )
        )
    return objects


@contextlib.asynccontextmanager
async def herald_process(emu: Emulator, **env: str) -> AsyncIterator[OperatorProcess]:
    """``herald run`` against the emulator, with ``OPERATOR_ENV`` and then ``env``."""
    from tests.integration.operator_process import OperatorProcess

    proc = OperatorProcess(emu, env={**OPERATOR_ENV, **env})
    try:
        await proc.start(wait=False)  # a big cluster can take longer than the helper waits
        yield proc
        await proc.stop()
    finally:
        proc.kill()
        _remove_files(proc)


def _remove_files(proc: OperatorProcess) -> None:
    """The helper's log and kubeconfig are temporary files it leaves behind."""
    pathlib.Path(proc.log.name).unlink(missing_ok=True)
    shutil.rmtree(proc.kubeconfig.parent, ignore_errors=True)


IDLE_CPU = 0.05  # share of a core under which the operator counts as idle
SCAN = ("LIST deliveries", "")  # Retention.scan: every Delivery's metadata, no selector


async def settle(
    c: Cluster, proc: OperatorProcess, *, webhooks: int, timeout: float, scan: bool = False
) -> tuple[float, int]:
    """(seconds until every webhook's first status is written and the operator is quiet, statuses
    written); the seconds are NaN when that did not happen within ``timeout``. Quiet is both: no
    API request and under ``IDLE_CPU`` of a core for a second. A quiet log alone is not enough:
    the watch echoes of 5,000 status writes keep the operator busy for seconds after its last
    request. With ``scan``, also until Retention's startup scan has listed every Delivery: one page
    can take over a second to serve."""
    started = time.monotonic()
    patched = _Counter(c.log, "UPDATE webhooks/status")
    assert proc.proc is not None
    pid = proc.proc.pid
    cpu: collections.deque[tuple[float, float]] = collections.deque()  # (when, CPU seconds used)

    def idle() -> bool:
        now = time.monotonic()
        cpu.append((now, process_cpu(pid)))
        while len(cpu) > 1 and now - cpu[1][0] >= 1.0:
            cpu.popleft()
        (then, before), (_, used) = cpu[0], cpu[-1]
        return now - then >= 1.0 and used - before <= IDLE_CPU * (now - then)

    def settled() -> bool:
        if proc.proc is not None and proc.proc.poll() is not None:
            raise RuntimeError(f"herald run exited early:\n{proc.output()[-3000:]}")
        scanned = not scan or bool(c.lists_completed[SCAN])
        return idle() and patched() >= webhooks and scanned and c.log.quiet(1.0)

    try:
        await poll(settled, timeout=timeout, what="the operator to settle", every=0.25)
    except TimeoutError:
        return float("nan"), patched()
    return time.monotonic() - started - 1.0, patched()


async def process_latency(
    n: int,
    *,
    warmup: int,
    herald: bool,
    webhooks: int = 0,
    environments: int = 0,
    namespaces: int = 1,
    retained: int = 0,
    timeout: float = 120.0,
) -> ProcessRun:
    """``herald`` False runs the raw notifier's process instead (``webhooks``/``environments`` ignored);
    ``retained``: finished Delivery objects of each crowd webhook, in the cluster before Herald starts.

    Gives up (NaN samples) when the operator has not settled within ``timeout`` seconds.
    """
    envs = [f"env-{i}" for i in range(n + warmup)]
    async with cluster() as c, sinks() as receivers:
        if herald:
            load_objects(c.emu, [webhook("lat", f"{receivers.url()}/lat", events=(STARTED,))])
            load_objects(
                c.emu,
                _crowd(
                    receivers.url(),
                    webhooks=webhooks,
                    environments=environments,
                    namespaces=namespaces,
                ),
            )
            load_objects(c.emu, retained_deliveries(webhooks, retained, namespaces=namespaces))
        load_objects(c.emu, [environment(e) for e in envs])
        if not herald:
            async with BaselineProcess(c.emu.url, f"{receivers.url()}/lat").running() as notifier:
                cpu = process_cpu(notifier.pid)
                samples, _ = await sequence(
                    c, receivers, envs=envs, paths=["/lat"], warmup=warmup, prefix="p"
                )
                cpu = (process_cpu(notifier.pid) - cpu) / (n + warmup)
            return ProcessRun(samples=samples, expected=n + warmup, received=len(receivers.arrivals), cpu=cpu)
        async with herald_process(c.emu) as proc:
            if proc.proc is None:
                raise RuntimeError("herald run did not start")
            pid = proc.proc.pid
            started = time.monotonic()
            settled, written = await settle(
                c, proc, webhooks=webhooks + 1, timeout=timeout, scan=bool(retained)
            )
            rss, _ = _memory(pid)
            startup = _kinds(c.log[:])
            scan = c.lists_completed[SCAN][0] - started if c.lists_completed[SCAN] else float("nan")
            if math.isnan(settled):
                _, peak = _memory(pid)
                return ProcessRun(
                    samples=[],
                    expected=0,
                    received=0,
                    rss_mb=rss,
                    peak_mb=peak,
                    settle=settled,
                    statuses_written=written,
                    startup_requests=startup,
                    scan=scan,
                )
            before, cpu = len(c.log), process_cpu(pid)
            samples, _ = await sequence(c, receivers, envs=envs, paths=["/lat"], warmup=warmup, prefix="p")
            # Let the handlers finish (status, ledger, Events) so their API calls are counted too.
            await poll(lambda: c.log.quiet(1.5), timeout=120, what="the operator to go quiet", every=0.25)
            cpu = (process_cpu(pid) - cpu) / (n + warmup)
            _, peak = _memory(pid)
            hot = _kinds(c.log[before:])
        return ProcessRun(
            samples=samples,
            expected=n + warmup,
            received=len(receivers.by_path["/lat"]),
            rss_mb=rss,
            peak_mb=peak,
            settle=settled,
            statuses_written=written,
            hot_path_requests=hot,
            cpu=cpu,
            startup_requests=startup,
            scan=scan,
        )


def _kinds(requests: list[Any]) -> dict[str, int]:
    """Herald's API requests by kind (the driver's own Environment writes left out)."""
    kinds: dict[str, int] = {}
    for request in requests:
        kind = classify(request)
        if kind != "UPDATE environments/status":
            kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


async def process_isolation(n: int, *, warmup: int, webhooks: int, hang: bool, timeout: float) -> ProcessRun:
    """``herald run`` with ``webhooks`` receivers on their own ports; with ``hang``, the first never
    answers. Samples are the healthy receivers' latencies (the first is left out of both runs)."""
    envs = [f"env-{i}" for i in range(n + warmup)]
    names = [f"hook-{k}" for k in range(webhooks)]
    async with cluster() as c, sinks(ports=webhooks) as receivers:
        load_objects(
            c.emu,
            [webhook(name, f"{receivers.url(k)}/{name}", events=(STARTED,)) for k, name in enumerate(names)],
        )
        load_objects(c.emu, [environment(e) for e in envs])
        if hang:
            receivers.hanging.add(f"/{names[0]}")
        async with herald_process(c.emu) as proc:
            settled, _ = await settle(c, proc, webhooks=webhooks, timeout=timeout)
            if math.isnan(settled):
                raise RuntimeError(f"herald run did not settle in {timeout:.0f} s:\n{proc.output()[-3000:]}")
            samples, _ = await sequence(
                c, receivers, envs=envs, paths=[f"/{name}" for name in names[1:]], warmup=warmup, prefix="i"
            )
        healthy = sum(len(receivers.by_path[f"/{name}"]) for name in names[1:])
        return ProcessRun(samples=samples, expected=(n + warmup) * (webhooks - 1), received=healthy)


async def startup_profile(
    *, webhooks: int, environments: int, namespaces: int, seconds: float
) -> pstats.Stats:
    """cProfile of the first ``seconds`` of an operator starting (in process) on a crowded cluster.

    A fixed window, so a startup that would take minutes still yields its evidence in seconds.
    """
    async with cluster() as c, sinks() as receivers:
        load_objects(
            c.emu,
            _crowd(receivers.url(), webhooks=webhooks, environments=environments, namespaces=namespaces),
        )

        async def run() -> None:
            async with running_operator(c.emu, BENCH_SETTINGS, metrics=Metrics()):
                await asyncio.Event().wait()

        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        task = asyncio.create_task(run())
        try:
            await asyncio.sleep(seconds)  # the window itself: nothing to wait for
        finally:
            profiler.disable()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await task
        return pstats.Stats(profiler)
