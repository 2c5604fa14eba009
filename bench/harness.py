"""What every benchmark shares: a timed API emulator, local receivers, manifests and statistics.

The emulator is kmock, as in the integration tests, with two changes so that a benchmark
measures Herald rather than the emulator:

- kmock matches every request by scanning every request it ever served (see
  ``/work/shared/TESTING.md``: a PATCH goes from 7 ms to 200 ms after a thousand requests).
  ``RequestLog`` keeps the whole log, with arrival times, for counting API load, but lets
  kmock scan only the requests in flight, so its cost per request stays flat through a run.
- Latency is measured from the moment the emulator puts a watch event on its bus (the moment
  it emits the event), not from the PATCH request: ``Emissions`` stamps each put.

Receivers are plain aiohttp servers that stamp each request as it reaches the handler.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import collections
import contextlib
import contextvars
import dataclasses
import datetime
import gc
import ipaddress
import json
import math
import os
import pathlib
import sys
import time
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Iterator, Sequence
from typing import Any

import kmock
from aiohttp import web

# The emulator's watch bus: the one place where the emission of a watch event can be timed.
from kmock._internal import aiobus
from tests.integration.conftest import environment as test_environment

from herald.events import build_event, parse_environment
from herald.models import DeploymentEvent, EventType
from herald.settings import Settings
from herald.testing import Emulator, _Server, label_selector, load_manifests, project_root

__all__ = [
    "BENCH_SETTINGS",
    "NS",
    "Arrival",
    "Cluster",
    "Emissions",
    "RequestLog",
    "Sinks",
    "classify",
    "cluster",
    "deploy",
    "environment",
    "load_objects",
    "max_in_window",
    "notification",
    "percentile",
    "poll",
    "process_cpu",
    "raw_object",
    "sinks",
    "start_module",
    "steady_heap",
    "stop_module",
    "webhook",
]

NS = "bench"
ALL_EVENTS = ("DEPLOYMENT_STARTED", "DEPLOYMENT_SUCCESSFUL", "DEPLOYMENT_CANCELLED", "DEPLOYMENT_FAILURE")

# Production defaults, except what a loopback bench needs: receivers on 127.0.0.1, no ports to
# bind, no cluster scanning (the emulator cannot serve it).
BENCH_SETTINGS = Settings(
    egress_allow=(ipaddress.ip_network("127.0.0.0/8"),),
    health_port=0,
    metrics_port=0,
    scanning=False,
)


# ---------------------------------------------------------------- the emulator


_SERVING: contextvars.ContextVar[Any] = contextvars.ContextVar("bench_serving")


class RequestLog(list[Any]):
    """kmock's request log: kept whole, with arrival times, for counting API load; but when kmock
    scans it to match the request it is serving, it sees that request alone.

    kmock checks ``request in reaction`` by iterating its whole log and applying each reaction's
    criteria to every request: the cost of one request grows with every request served before,
    and with every request in flight. Iterated outside a request (by ``Emulator.watches``), the
    log is whole; read it by slicing (``log[:]``, ``since``) for counting.
    """

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def append(self, item: Any) -> None:
        self.times.append(time.monotonic())
        super().append(item)

    def __iter__(self) -> Any:
        serving = _SERVING.get(None)
        return iter((serving,) if serving is not None else self[:])

    def clear(self) -> None:
        super().clear()
        self.times.clear()

    def quiet(self, seconds: float) -> bool:
        """No request arrived in the last ``seconds``."""
        return not self.times or time.monotonic() - self.times[-1] >= seconds

    def since(self, moment: float) -> list[tuple[float, Any]]:
        """Requests that arrived at or after ``moment``, with their arrival times."""
        start = bisect.bisect_left(self.times, moment)
        return list(zip(self.times[start:], self[start:], strict=True))


class Emissions:
    """When the emulator emitted each Environment deployment state (first emission only)."""

    def __init__(self) -> None:
        self.first: dict[tuple[str, str, str], float] = {}

    def observe(self, item: Any) -> None:
        obj = item.get("object") if isinstance(item, dict) else None
        if not isinstance(obj, dict) or obj.get("kind") != "Environment" or item.get("type") == "DELETED":
            return
        deployment = (obj.get("status") or {}).get("deployment") or {}
        if "id" in deployment:
            key = (obj["metadata"]["name"], str(deployment["id"]), str(deployment.get("currentStatus")))
            self.first.setdefault(key, time.monotonic())

    def at(self, env: str, deployment_id: str, state: str) -> float:
        return self.first[(env, deployment_id, state)]


class _TimedBus(aiobus.Bus[Any]):
    def __init__(self, emissions: Emissions) -> None:
        super().__init__()
        self._emissions = emissions

    async def put(self, *items: Any) -> None:
        for item in items:
            self._emissions.observe(item)
        await super().put(*items)


# Creations merged into a resource's sorted keys one at a time, up to this many; beyond, sorted.
# Re-sorting 500,000 keys for the few Deliveries created between two of Retention's sweeps took
# 90-170 ms of the emulator's loop, on the event then in flight (scale, retained crowd: p99 20x).
INSORT_MOST = 1000


@dataclasses.dataclass
class _Index:
    keys: list[tuple[str, str]]  # (namespace, name), sorted (but for ``fresh``)
    members: set[tuple[str, str]]
    fresh: list[tuple[str, str]]  # created since the last list: merged in by the next


def _accept(request: Any) -> str:
    return next((str(v) for k, v in (request.headers or {}).items() if k.lower() == "accept"), "")


def _metadata_only(obj: dict[str, Any]) -> dict[str, Any]:
    """An object as a PartialObjectMetadata (what ``as=PartialObjectMetadataList`` asks for)."""
    return {"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": obj.get("metadata")}


class _BenchServer(_Server):
    """Herald's emulator, its request log flat-cost and its watch emissions timed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.log = RequestLog()
        self.emissions = Emissions()
        self._requests = self.log
        self._buses = collections.defaultdict(lambda: _TimedBus(self.emissions))
        self._index: dict[Any, _Index] = {}  # resource -> its keys in list order
        self._indexed = False
        # (kind, labelSelector) -> when a list of it was served to its end (a page without continue)
        self.lists_completed: collections.defaultdict[tuple[str, str], list[float]] = collections.defaultdict(
            list
        )

    def _KubernetesEmulator__get_obj(self, request: Any, strict: bool) -> Any:
        """One object by its key: kmock scans every stored object, which with ten thousand of them
        costs 5 ms per request, spent right after emitting the watch event (delaying it)."""
        if strict and request.name is not None and request.resource is not None:
            return self._objects._objects.get((request.resource, request.namespace, request.name))
        return super()._KubernetesEmulator__get_obj(request, strict)  # type: ignore[misc]

    def forget_index(self) -> None:
        """Objects were put straight into the store (``load_objects``): sort them again on the next list."""
        self._index.clear()
        self._indexed = False

    def _sorted_keys(self, resource: Any) -> list[tuple[str, str]]:
        """The (namespace, name) keys of one resource in the API server's order, sorted once
        and then kept: creations are merged in on the next list (``_created``); soft-deleted
        objects stay and are skipped when served."""
        if not self._indexed:
            groups: dict[Any, set[tuple[str, str]]] = collections.defaultdict(set)
            for r, ns, name in self._objects._objects:
                groups[r].add((ns or "", name))
            for r, created in self._index.items():  # announced by a create still on its way in
                groups[r].update(created.fresh)
            self._index = {r: _Index(sorted(keys), keys, []) for r, keys in groups.items()}
            self._indexed = True
        index = self._index.setdefault(resource, _Index([], set(), []))
        if len(index.fresh) > INSORT_MOST:
            index.keys.extend(index.fresh)
            index.keys.sort()  # one sorted run and one short one: a merge, yet O(n) comparisons
        else:  # a few creations since the last list (Retention's sweeps): 0.1 ms each at 500,000 keys
            for key in index.fresh:
                bisect.insort(index.keys, key)
        index.fresh.clear()
        return index.keys

    def _created(self, request: Any) -> None:
        if request.action != kmock.action.CREATE or request.resource is None:
            return
        meta = (request.data or {}).get("metadata") or {}
        key = (str(request.namespace or meta.get("namespace") or ""), str(meta.get("name") or ""))
        index = self._index.setdefault(request.resource, _Index([], set(), []))
        if key not in index.members:
            index.members.add(key)
            index.fresh.append(key)

    async def _serve_list(self, request: Any) -> Any:
        """Lists as the API server serves them (``labelSelector``, ``limit`` and ``continue`` in
        namespace/name order, metadata only when asked), from a sorted index rather than by
        sorting every stored object per page: Retention.scan pages through 500,000 Deliveries.
        The readiness probe (``?limit=1``, nothing else: every 2 s) takes the first object found."""
        params = request.params or {}
        if request.resource is None:
            return await super()._serve_list(request)
        if params.get("limit") == "1" and not params.get("labelSelector") and not params.get("continue"):
            check = self._KubernetesEmulator__check  # type: ignore[attr-defined]  # kmock's own filter
            for (resource, namespace, name), obj in self._objects._objects.items():
                if not obj.deleted and check(request, resource, namespace, name, strict=False):
                    return {"metadata": {"resourceVersion": "..."}, "items": [obj.raw]}
            return {"metadata": {"resourceVersion": "..."}, "items": []}
        keys = self._sorted_keys(request.resource)
        selects = label_selector(params["labelSelector"]) if params.get("labelSelector") else None
        limit = int(params.get("limit") or 0)
        low, high = 0, len(keys)
        if request.namespace is not None:
            low = bisect.bisect_left(keys, (request.namespace, ""))
            high = bisect.bisect_left(keys, (request.namespace + "\x00", ""))
        if params.get("continue"):
            after = tuple(json.loads(base64.urlsafe_b64decode(str(params["continue"]).encode())))
            low = max(low, bisect.bisect_right(keys, after))
        metadata_only = "as=PartialObjectMetadataList" in _accept(request)
        items: list[dict[str, Any]] = []
        store = self._objects._objects
        resource = request.resource
        last: tuple[str, str] | None = None
        for position in range(low, high):
            ns, name = keys[position]
            found = store.get((resource, ns or None, name))
            if found is None or found.deleted:
                continue
            raw = found.raw
            if selects is not None and not selects((raw.get("metadata") or {}).get("labels") or {}):
                continue
            if limit and len(items) == limit:
                break
            items.append(_metadata_only(raw) if metadata_only else raw)
            last = (ns, name)
        else:
            last = None  # the end: no continue token
        meta: dict[str, Any] = {"resourceVersion": "..."}
        if last is not None:
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(last).encode()).decode()
        else:
            self.lists_completed[(classify(request), params.get("labelSelector") or "")].append(
                time.monotonic()
            )
        return {"metadata": meta, "items": items}

    def _KubernetesEmulator__get_objs(self, request: Any, strict: bool) -> Any:
        """A metadata watch from a resourceVersion (Herald's RedeliverWatch) starts from now, as
        on kube-apiserver, instead of kmock's replay of every stored object first: 500,000 ADDED
        Deliveries. kopf's watches keep the replay the other scenarios were measured with."""
        if (
            request.action == kmock.action.WATCH
            and (request.params or {}).get("resourceVersion")
            and "as=PartialObjectMetadata" in _accept(request)
        ):
            return []
        return super()._KubernetesEmulator__get_objs(request, strict)  # type: ignore[misc]

    async def _serve_watch(self, request: Any) -> Any:
        """Metadata only when the watch asks for it, as kube-apiserver sends it."""
        metadata_only = "as=PartialObjectMetadata" in _accept(request)
        stream: Any = super()._serve_watch(request)
        async with contextlib.aclosing(stream) as events:
            async for event in events:
                if metadata_only and isinstance(event, dict) and isinstance(event.get("object"), dict):
                    yield {**event, "object": _metadata_only(event["object"])}
                else:
                    yield event

    async def _handle(self, request: Any) -> Any:
        token = _SERVING.set(request)  # each request is served in its own task, its own context
        try:
            self._created(request)  # before it is stored: a list served meanwhile skips it if absent
            return await super()._handle(request)
        finally:
            _SERVING.reset(token)


@dataclasses.dataclass
class Cluster:
    emu: Emulator
    emissions: Emissions
    log: RequestLog
    lists_completed: collections.defaultdict[tuple[str, str], list[float]]  # when listed to the end


@contextlib.asynccontextmanager
async def cluster() -> AsyncIterator[Cluster]:
    """A fresh emulator with Herald's CRDs (as ``herald.testing.emulator`` makes it), timed and flat-cost."""
    async with _BenchServer() as server, kmock.Server(server):
        emu = Emulator(server)
        emu.declare(load_manifests(project_root() / "crds"))
        yield Cluster(
            emu=emu, emissions=server.emissions, log=server.log, lists_completed=server.lists_completed
        )


def load_objects(emu: Emulator, objects: Iterable[dict[str, Any]]) -> int:
    """Put objects straight into the emulator's store, as if created before the operator started.

    Ten thousand creates over HTTP would time the emulator; a restarted operator on a big cluster
    sees the same thing: everything arrives in its initial list and watch.
    """
    count = 0
    resources: dict[str, Any] = {}
    if isinstance(emu.kmock, _BenchServer):
        emu.kmock.forget_index()
    for n, obj in enumerate(objects, start=1):
        meta = obj["metadata"]
        meta.setdefault("uid", f"uid-{meta['name']}-{n}")
        meta.setdefault("resourceVersion", str(n))
        meta.setdefault("generation", 1)
        resource = resources.get(obj["kind"])
        if resource is None:  # parsed once per kind: 500,000 parses would take most of the time
            resource = resources[obj["kind"]] = kmock.resource(
                f"herald.dev/v1alpha1/{emu.plurals[obj['kind']][0]}"
            )
        emu.kmock.objects[(resource, meta.get("namespace"), meta["name"])] = obj
        count += 1
    return count


# ---------------------------------------------------------------- manifests


def webhook(
    name: str, url: str, *, namespace: str = NS, events: Sequence[str] = ALL_EVENTS
) -> dict[str, Any]:
    return {
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "Webhook",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"kind": "STANDARD", "url": url, "events": list(events)},
    }


def environment(
    name: str, *, namespace: str = NS, status: dict[str, Any] | None = None, ledger: str | None = None
) -> dict[str, Any]:
    """The integration tests' Environment, optionally already notified (its ledger annotation)."""
    body = test_environment(name, namespace=namespace, status=status)
    if ledger is not None:
        body["metadata"]["annotations"] = {"herald.dev/notified": ledger}
    return body


@contextlib.contextmanager
def steady_heap() -> Iterator[None]:
    """While measuring, this process's full collections walk only what the measurement allocates.

    The emulator and the receivers live here: a full collection over everything earlier runs
    left behind stalls them for tens of milliseconds, at whichever sample it happens to hit
    (seen as every other run's p99 doubling). Herald's own process does the same (herald.heap).
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


async def start_module(module: str, *args: str) -> tuple[asyncio.subprocess.Process, bytes]:
    """``python -m module`` from the project root, and the first line it prints when ready."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        cwd=project_root(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    if proc.stdout is None:
        raise RuntimeError(f"no pipe to {module}'s process")
    return proc, await asyncio.wait_for(proc.stdout.readline(), timeout=60)


async def stop_module(proc: asyncio.subprocess.Process | None) -> None:
    """Close its stdin (the child's signal to stop), then wait for it, killing it after 10 s."""
    if proc is None or proc.returncode is not None:
        return
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        await asyncio.wait_for(proc.wait(), timeout=10)
    except TimeoutError:
        proc.kill()
        await proc.wait()


def notification(
    name: str, deployment: dict[str, Any], event_type: EventType, *, created_at: datetime.datetime
) -> DeploymentEvent:
    """The notification Herald builds for ``event_type`` of this Environment's ``status.deployment``."""
    body = environment(name, status={"deployment": deployment})
    body["metadata"]["uid"] = f"uid-{name}"
    ref, spec, parsed = parse_environment(body)
    if parsed is None:
        raise RuntimeError(f"{name} has no deployment")
    return build_event(
        event_type=event_type, environment=ref, spec=spec, deployment=parsed, created_at=created_at
    )


async def deploy(emu: Emulator, env: str, deployment_id: str, state: str, *, namespace: str = NS) -> None:
    """What a deployment controller does: write the deployment's state on the status subresource."""
    await emu.patch(
        "Environment",
        namespace,
        env,
        {
            "status": {
                "deployment": {"id": deployment_id, "currentStatus": state, "desiredStatus": "DEPLOYED"}
            }
        },
        subresource="status",
    )


# ---------------------------------------------------------------- receivers


@dataclasses.dataclass(frozen=True)
class Arrival:
    path: str
    at: float  # time.monotonic() when the request reached the handler
    key: Hashable  # (event_type, deployment id) of the body


def _key(body: bytes) -> Hashable:
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    return (doc.get("event_type"), (doc.get("payload") or {}).get("id"))


CONTROL = "/_bench/"  # paths a parent process reads receivers' records from, never recorded


class Sinks:
    """Local HTTP receivers, one port each, stamping each request as it arrives.

    A path in ``hanging`` never answers (until the receivers stop): a receiver that hangs.
    """

    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []
        self.by_path: dict[str, list[Arrival]] = collections.defaultdict(list)
        self.hanging: set[str] = set()
        self.ports: list[int] = []
        self._seen: dict[tuple[str, Hashable], Arrival] = {}
        self._waiters: dict[tuple[str, Hashable], asyncio.Future[Arrival]] = {}
        self._runner: web.AppRunner | None = None
        self._release = asyncio.Event()

    def url(self, index: int = 0) -> str:
        return f"http://127.0.0.1:{self.ports[index]}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        at = time.monotonic()
        body = await request.read()
        if request.path.startswith(CONTROL):
            return self._control(request.path)
        arrival = Arrival(path=request.path, at=at, key=_key(body))
        self.arrivals.append(arrival)
        self.by_path[arrival.path].append(arrival)
        slot = (arrival.path, arrival.key)
        self._seen.setdefault(slot, arrival)
        waiter = self._waiters.pop(slot, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(arrival)
        if arrival.path in self.hanging:
            await self._release.wait()
        return web.Response(text="ok")

    def _control(self, path: str) -> web.StreamResponse:
        """What a parent process asks of receivers running in a child process (``bench.receivers``)."""
        if path == f"{CONTROL}count":
            return web.json_response(len(self.arrivals))
        if path == f"{CONTROL}arrivals":
            return web.json_response([[a.path, a.at, a.key] for a in self.arrivals])
        return web.Response(status=404)

    async def wait(self, path: str, key: Hashable, *, timeout: float) -> Arrival:
        """The first arrival of ``key`` at ``path``, waiting up to ``timeout`` seconds for it."""
        slot = (path, key)
        if slot in self._seen:
            return self._seen[slot]
        waiter = self._waiters.setdefault(slot, asyncio.get_running_loop().create_future())
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout=timeout)
        except TimeoutError:
            raise TimeoutError(f"no {key} at {path} within {timeout}s") from None

    async def start(self, ports: int = 1) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        for _ in range(ports):
            await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.ports = [addr[1] for addr in self._runner.addresses]

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()


@contextlib.asynccontextmanager
async def sinks(ports: int = 1) -> AsyncIterator[Sinks]:
    receivers = Sinks()
    await receivers.start(ports)
    try:
        yield receivers
    finally:
        await receivers.stop()


async def poll(predicate: Callable[[], bool], *, timeout: float, what: str, every: float = 0.05) -> None:
    """Like ``herald.testing.wait_for``, at a pace that leaves the event loop to what is measured."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(every)


# ---------------------------------------------------------------- statistics


def process_cpu(pid: int) -> float:
    """CPU seconds (user and system) a process has used: /proc/<pid>/stat."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100): a value that was measured, never interpolated."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def max_in_window(times: Sequence[float], window: float) -> int:
    """The most events that fall in any ``window``-second span (sliding)."""
    ordered = sorted(times)
    best = start = 0
    for end, moment in enumerate(ordered):
        while moment - ordered[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


# ---------------------------------------------------------------- API load


def classify(request: Any) -> str:
    """Name an API request by what it does: ``ACTION resource[/subresource]`` (``UPDATE webhooks/status``)."""
    action = getattr(request.action, "value", None) or str(request.method.value)
    plural = request.resource.plural if request.resource is not None else str(request.url.path)
    sub = f"/{request.subresource}" if request.subresource else ""
    return f"{action} {plural}{sub}"


def raw_object(emu: Emulator, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
    """One stored object by key, without scanning the whole store as ``Emulator.get`` does."""
    group = "" if plural in ("secrets", "namespaces", "events") else "herald.dev"
    version = "v1" if not group else "v1alpha1"
    resource = f"{group}/{version}/{plural}" if group else f"{version}/{plural}"
    try:
        obj = emu.kmock.objects[(resource, namespace, name)]
    except KeyError:
        return None
    return None if obj.deleted else dict(obj.raw)
