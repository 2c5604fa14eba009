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
import contextlib
import cProfile
import dataclasses
import datetime
import json
import math
import pathlib
import pstats
import shutil
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

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
    sinks,
    webhook,
)
from bench.latency import STARTED, sequence
from herald.metrics import Metrics
from herald.models import DeliveryOutcome, EventType, PendingDelivery
from herald.status import NOTIFICATION_LOG_CAP, WebhookStatus, finish, new_record, parse_status, to_patch
from herald.testing import Emulator, running_operator

if TYPE_CHECKING:
    from tests.integration.operator_process import OperatorProcess

__all__ = ["ProcessRun", "process_isolation", "process_latency", "startup_profile", "status_memory"]

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


HISTORY = 20  # deliveries each crowd webhook has made already (Settings.history_limit)


def _busy_status() -> dict[str, object]:
    """A webhook's status after a day of use: a full history and the notifications kept for
    redelivery, as Herald wrote them. No conditions yet, so the operator writes each one once
    (that first write is how a run sees the operator settled)."""
    now = datetime.datetime.now(datetime.UTC)
    status = WebhookStatus(observed_generation=1)
    for i in range(HISTORY):
        deployment = {"id": f"old-{i}", "currentStatus": "DEPLOYED", "logs": ["pulled", "started"]}
        event = notification(f"app-{i}", deployment, EventType.DEPLOYMENT_SUCCESSFUL, created_at=now)
        done = new_record(event, now=now).model_copy(
            update={"outcome": DeliveryOutcome.SUCCEEDED, "attempts": 1, "http_status": 200, "duration_ms": 3}
        )
        status = finish(status, PendingDelivery(record=done, notification=event), history_limit=HISTORY)
    return to_patch(status, cap=NOTIFICATION_LOG_CAP)


def _crowd(
    receiver: str, *, webhooks: int, environments: int, namespaces: int, busy: bool = False
) -> list[dict[str, object]]:
    """Webhooks and Environments in other namespaces, every deployment already notified; with
    ``busy``, every webhook carries a day's history on its status."""
    extra = {"status": _busy_status()} if busy else {}
    objects: list[dict[str, object]] = [
        webhook(f"hook-{i}", f"{receiver}/crowd/{i}", namespace=f"crowd-{i % namespaces}") | extra
        for i in range(webhooks)
    ]
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
async def _herald(emu: Emulator) -> AsyncIterator[OperatorProcess]:
    from tests.integration.operator_process import OperatorProcess

    proc = OperatorProcess(emu, env=OPERATOR_ENV)
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


async def _settle(c: Cluster, proc: OperatorProcess, *, webhooks: int, timeout: float) -> tuple[float, int]:
    """(seconds until every webhook's first status is written and the operator is quiet, statuses
    written); the seconds are NaN when that did not happen within ``timeout``."""
    started = time.monotonic()
    patched = _Counter(c.log, "UPDATE webhooks/status")

    def settled() -> bool:
        if proc.proc is not None and proc.proc.poll() is not None:
            raise RuntimeError(f"herald run exited early:\n{proc.output()[-3000:]}")
        return patched() >= webhooks and c.log.quiet(1.0)

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
    busy: bool = False,
    timeout: float = 120.0,
) -> ProcessRun:
    """``herald`` False runs the raw notifier's process instead (``webhooks``/``environments`` ignored);
    ``busy`` gives the crowd's webhooks a full history (``_crowd``).

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
                    busy=busy,
                ),
            )
        load_objects(c.emu, [environment(e) for e in envs])
        if not herald:
            notifier = BaselineProcess(c.emu.url, f"{receivers.url()}/lat")
            await notifier.start()
            try:
                samples, _ = await sequence(
                    c, receivers, envs=envs, paths=["/lat"], warmup=warmup, prefix="p"
                )
            finally:
                await notifier.stop()
            return ProcessRun(samples=samples, expected=n + warmup, received=len(receivers.arrivals))
        async with _herald(c.emu) as proc:
            if proc.proc is None:
                raise RuntimeError("herald run did not start")
            pid = proc.proc.pid
            settle, written = await _settle(c, proc, webhooks=webhooks + 1, timeout=timeout)
            rss, _ = _memory(pid)
            if math.isnan(settle):
                _, peak = _memory(pid)
                return ProcessRun(
                    samples=[],
                    expected=0,
                    received=0,
                    rss_mb=rss,
                    peak_mb=peak,
                    settle=settle,
                    statuses_written=written,
                )
            before = len(c.log)
            samples, _ = await sequence(c, receivers, envs=envs, paths=["/lat"], warmup=warmup, prefix="p")
            # Let the handlers finish (status, ledger, Events) so their API calls are counted too.
            await poll(lambda: c.log.quiet(1.5), timeout=120, what="the operator to go quiet", every=0.25)
            _, peak = _memory(pid)
            hot: dict[str, int] = {}
            for request in c.log[before:]:
                kind = classify(request)
                if kind != "UPDATE environments/status":  # the driver's own writes
                    hot[kind] = hot.get(kind, 0) + 1
        return ProcessRun(
            samples=samples,
            expected=n + warmup,
            received=len(receivers.by_path["/lat"]),
            rss_mb=rss,
            peak_mb=peak,
            settle=settle,
            statuses_written=written,
            hot_path_requests=hot,
        )


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
        async with _herald(c.emu) as proc:
            settle, _ = await _settle(c, proc, webhooks=webhooks, timeout=timeout)
            if math.isnan(settle):
                raise RuntimeError(f"herald run did not settle in {timeout:.0f} s:\n{proc.output()[-3000:]}")
            samples, _ = await sequence(
                c, receivers, envs=envs, paths=[f"/{name}" for name in names[1:]], warmup=warmup, prefix="i"
            )
        healthy = sum(len(receivers.by_path[f"/{name}"]) for name in names[1:])
        return ProcessRun(samples=samples, expected=(n + warmup) * (webhooks - 1), received=healthy)


def status_memory(samples: int = 200) -> str:
    """Where a busy webhook's memory goes: its status as Herald holds it (pydantic models) next
    to the JSON it came from, measured with tracemalloc over ``samples`` parses."""
    busy = _busy_status()
    text = json.dumps(busy)
    parts: list[tuple[str, Callable[[], WebhookStatus]]] = [
        ("the whole status, parsed", lambda: parse_status(json.loads(text))),
        ("  its sent notifications (for redelivery)", lambda: parse_status({"sent": busy["sent"]})),
        ("  its delivery history", lambda: parse_status({"deliveries": busy["deliveries"]})),
    ]
    sizes: dict[str, float] = {}
    tracemalloc.start()
    try:
        for name, parse in parts:
            before = tracemalloc.get_traced_memory()[0]
            kept = [parse() for _ in range(samples)]
            sizes[name] = (tracemalloc.get_traced_memory()[0] - before) / samples / 1024
            del kept
    finally:
        tracemalloc.stop()
    lines = [f"  {'KB':>7}  per webhook with {HISTORY} deliveries of history"]
    lines += [f"  {kb:7.1f}  {name}" for name, kb in sizes.items()]
    lines.append(f"  {len(text) / 1024:7.1f}  the same status as JSON, on the status subresource")
    return "\n".join(lines)


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
