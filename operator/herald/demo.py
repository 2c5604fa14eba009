"""``herald demo``: the whole flow with no cluster, and the harness the integration tests share.

An in-process Kubernetes API emulator (kmock) gets Herald's CRDs and the example manifests; a
local receiver stands in for the STANDARD, SLACK, CLOUDEVENTS, CUSTOM and cluster-wide endpoints;
the real operator runs against the emulator over real HTTP; two Environments are driven through
deployments and every delivery is printed as it arrives, then the webhooks' status as ``kubectl
get`` shows it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import dataclasses
import ipaddress
import itertools
import json
import pathlib
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import kmock
import kopf
import yaml
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from herald.delivery import Resolver
from herald.handlers import Runtime, build_registry
from herald.kube import API_GROUP, API_VERSION
from herald.metrics import Metrics
from herald.settings import Settings

__all__ = [
    "Emulator",
    "Receiver",
    "load_manifests",
    "project_root",
    "run_demo",
    "running_operator",
]

OBSERVED = {  # resources kopf's observers expect besides Herald's own (see TESTING.md)
    "v1/namespaces": False,
    "apiextensions.k8s.io/v1/customresourcedefinitions": False,
    "v1/events": True,
    "events.k8s.io/v1/events": True,
    "v1/secrets": True,
    "coordination.k8s.io/v1/leases": True,
}
VERBS = {"list", "watch", "get", "patch", "create", "delete"}


def project_root() -> pathlib.Path:
    return pathlib.Path(__file__).resolve().parents[2]


def load_manifests(folder: pathlib.Path) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict))
    return docs


class _Server(kmock.KubernetesEmulator):
    """kmock, plus the two things of a real API server Herald's tests rely on: ``generateName``
    (kopf names its Events that way) and ``stringData`` on Secrets."""

    async def _handle(self, request: Any) -> Any:
        data = request.data if isinstance(request.data, dict) else None
        if request.action == kmock.action.CREATE and data is not None:
            meta = data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = f"{meta['generateName']}{next(_names):08x}"
            if data.get("kind") == "Secret" and data.get("stringData"):
                encoded = {
                    k: base64.b64encode(str(v).encode()).decode() for k, v in data.pop("stringData").items()
                }
                data["data"] = {**(data.get("data") or {}), **encoded}
        return await super()._handle(request)


_names = itertools.count(1)


class Emulator:
    """A kmock KubernetesEmulator that knows Herald's CRDs, with helpers to create and patch objects."""

    def __init__(self, server: kmock.KubernetesEmulator) -> None:
        self.kmock = server
        self._counter = itertools.count(1)
        self.plurals: dict[str, tuple[str, bool]] = {}  # kind -> (plural, namespaced)

    @property
    def url(self) -> str:
        return str(self.kmock.url).rstrip("/")

    def declare(self, crds: list[dict[str, Any]]) -> None:
        for resource, namespaced in OBSERVED.items():
            self.kmock.resources[resource] = kmock.ResourceInfo(
                namespaced=namespaced, verbs=VERBS, kind=resource.rsplit("/", 1)[-1].capitalize()[:-1]
            )
        for crd in crds:
            spec = crd["spec"]
            names = spec["names"]
            namespaced = spec["scope"] == "Namespaced"
            self.plurals[names["kind"]] = (names["plural"], namespaced)
            self.kmock.resources[f"{spec['group']}/{API_VERSION}/{names['plural']}"] = kmock.ResourceInfo(
                namespaced=namespaced,
                kind=names["kind"],
                singular=names.get("singular"),
                shortnames=set(names.get("shortNames", ())),
                categories=set(names.get("categories", ())),
                subresources={"status"},
                verbs=VERBS,
            )
        self.plurals.update({"Secret": ("secrets", True), "Namespace": ("namespaces", False)})

    def path(
        self, kind: str, namespace: str | None, name: str | None = None, *, subresource: str = ""
    ) -> str:
        plural, namespaced = self.plurals[kind]
        base = "/api/v1" if kind in ("Secret", "Namespace") else f"/apis/{API_GROUP}/{API_VERSION}"
        scope = f"/namespaces/{namespace}" if namespaced else ""
        tail = f"/{name}" if name else ""
        return f"{base}{scope}/{plural}{tail}{'/' + subresource if subresource else ''}"

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        body = copy.deepcopy(dict(obj))
        meta = body.setdefault("metadata", {})
        n = next(self._counter)
        meta.setdefault("uid", f"uid-{meta.get('name')}-{n}")
        meta.setdefault("resourceVersion", str(n))
        meta.setdefault("generation", 1)
        if body["kind"] == "Namespace":
            # kmock 0.8 cannot route namespace objects; serve the one GET Herald makes instead.
            self.kmock["get", f"/api/v1/namespaces/{meta['name']}"] << body
            return body
        namespace = meta.get("namespace")
        response = await self.kmock.post(self.path(body["kind"], namespace), json=body)
        if response.status >= 300:
            raise RuntimeError(f"create {body['kind']} {meta.get('name')}: HTTP {response.status}")
        return body

    async def patch(
        self, kind: str, namespace: str | None, name: str, patch: Mapping[str, Any], *, subresource: str = ""
    ) -> dict[str, Any]:
        response = await self.kmock.patch(
            self.path(kind, namespace, name, subresource=subresource),
            json=patch,
            headers={"Content-Type": "application/merge-patch+json"},
        )
        if response.status >= 300:
            raise RuntimeError(f"patch {kind} {name}: HTTP {response.status}")
        result: dict[str, Any] = await response.json()
        return result

    async def deploy(self, namespace: str, name: str, deployment_id: str, state: str, **extra: Any) -> None:
        """What a deployment controller does: patch an Environment's ``status.deployment``."""
        deployment = {"id": deployment_id, "currentStatus": state, "desiredStatus": "DEPLOYED", **extra}
        await self.patch(
            "Environment", namespace, name, {"status": {"deployment": deployment}}, subresource="status"
        )

    async def delete(self, kind: str, namespace: str | None, name: str) -> None:
        await self.kmock.delete(self.path(kind, namespace, name))

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        plural, _ = self.plurals[kind]
        group = "" if kind in ("Secret", "Namespace") else API_GROUP
        for (resource, ns, obj_name), obj in self.kmock.objects.items():
            if (
                resource.plural == plural
                and (resource.group or "") == group
                and ns == namespace
                and obj_name == name
            ):
                return None if obj.deleted else dict(obj.raw)
        return None

    def watches(self) -> int:
        """How many watch requests on Herald's resources the emulator has served so far."""
        return sum(
            1
            for r in list(self.kmock._requests)
            if "watch=true" in str(r.url) and "/herald.dev/" in str(r.url)
        )


@contextlib.asynccontextmanager
async def emulator(crd_dir: pathlib.Path | None = None) -> AsyncIterator[Emulator]:
    async with _Server() as server, kmock.Server(server):
        emu = Emulator(server)
        emu.declare(load_manifests(crd_dir or project_root() / "crds"))
        yield emu


@dataclasses.dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    status: int = 0  # what the receiver answered

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """A local HTTP receiver: records every request; per path, a script of responses to give."""

    def __init__(self, on_request: Callable[[Received, int], None] | None = None) -> None:
        self.received: list[Received] = []
        self.scripts: dict[str, list[int | tuple[int, dict[str, str]] | float]] = {}
        self._on_request = on_request
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        item = Received(path=request.path, headers=dict(request.headers), body=body, at=time.monotonic())
        self.received.append(item)
        script = self.scripts.get(request.path)
        answer = script.pop(0) if script else 200
        if isinstance(answer, float):  # hang this long, then 200
            await asyncio.sleep(answer)
            answer = 200
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        item.status = status
        if self._on_request is not None:
            self._on_request(item, status)
        return web.Response(status=status, text="ok", headers=headers)

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def on(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]


async def wait_for(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll until ``predicate`` holds; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running_operator(
    emu: Emulator, settings: Settings, *, metrics: Metrics | None = None, resolver: Resolver | None = None
) -> AsyncIterator[Runtime]:
    """The real operator in this event loop, against the emulator; yields once its watches are open."""
    runtimes: list[Runtime] = []
    registry = build_registry(
        settings,
        connection=kopf.ConnectionInfo(server=emu.url),
        metrics=metrics,
        resolver=resolver,
        runtimes=runtimes,
    )
    ready, stop = asyncio.Event(), asyncio.Event()
    before = emu.watches()
    tasks = await kopf.spawn_tasks(
        registry=registry, clusterwide=True, standalone=True, ready_flag=ready, stop_flag=stop
    )
    ignored = set(asyncio.all_tasks())
    runner = asyncio.create_task(kopf.run_tasks(tasks, ignored=ignored))
    try:
        await asyncio.wait_for(ready.wait(), timeout=20)
        await wait_for(
            lambda: emu.watches() - before >= 3,
            timeout=20,
            what="the operator's watch streams",
        )
        yield runtimes[0]
    finally:
        # kopf waits up to 5 s for every task born while it ran; the emulator's and receivers'
        # connection handlers are not the operator's, so they are not waited for.
        ignored.update(t for t in asyncio.all_tasks() if not t.get_name().startswith("herald-"))
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(runner, timeout=20)


# ---------------------------------------------------------------- the demo itself

DEMO_SETTINGS = Settings(
    egress_allow=(ipaddress.ip_network("127.0.0.0/8"),),
    retry_schedule=(0.5, 1.0),
    retry_jitter=0.1,
    delivery_timeout=5,
    status_interval=0.5,
    health_port=0,
    metrics_port=0,
    scanning=False,
)


def _print(text: str) -> None:
    print(text, flush=True)


def _rewrite_for_demo(docs: list[dict[str, Any]], receiver: Receiver) -> list[dict[str, Any]]:
    """Point every example at the local receiver, one path per webhook."""
    out = []
    for doc in copy.deepcopy(docs):
        kind, name = doc.get("kind"), doc["metadata"]["name"]
        spec = doc.get("spec", {})
        if kind in ("Webhook", "ClusterWebhook") and "url" in spec:
            spec["url"] = f"{receiver.url}/{kind.lower()}/{name}"
        if kind == "Secret":
            for field in ("data", "stringData"):
                values = doc.get(field) or {}
                if "url" in values:
                    local = f"{receiver.url}/slack/{name}"
                    values["url"] = base64.b64encode(local.encode()).decode() if field == "data" else local
        out.append(doc)
    return out


def _status_table(emu: Emulator, webhooks: list[tuple[str, str | None, str]]) -> str:
    rows = [
        (
            "KIND",
            "NAMESPACE",
            "NAME",
            "TYPE",
            "ENABLED",
            "READY",
            "LAST OUTCOME",
            "DELIVERED",
            "FAILED",
            "PENDING",
        )
    ]
    for kind, namespace, name in webhooks:
        obj = emu.get(kind, namespace, name) or {}
        status = obj.get("status") or {}
        ready = next(
            (c["status"] for c in status.get("conditions", []) if c.get("type") == "Ready"), "Unknown"
        )
        counters = status.get("counters") or {}
        rows.append(
            (
                kind,
                namespace or "-",
                name,
                obj.get("spec", {}).get("kind", "?"),
                str(obj.get("spec", {}).get("enabled", True)).lower(),
                ready,
                (status.get("lastDelivery") or {}).get("outcome", "-"),
                str(counters.get("delivered", 0)),
                str(counters.get("failed", 0)),
                str(len(status.get("pending") or [])),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)


def _summary(payload: Any) -> str:
    """One line of what arrived, in each kind's own terms."""
    if not isinstance(payload, dict):
        return "?"
    if "specversion" in payload:  # a CloudEvent names itself by its type
        return str(payload.get("type"))[:40]
    if "summary" in payload:
        return f"custom: {payload['summary']}"[:40]
    return str(payload.get("event_type") or f"slack: {payload.get('text', '')}")[:40]


def _signing_keys(docs: list[dict[str, Any]]) -> list[str]:
    keys = []
    for doc in docs:
        if doc.get("kind") == "Secret":
            values = {**(doc.get("stringData") or {})}
            values.update({k: base64.b64decode(v).decode() for k, v in (doc.get("data") or {}).items()})
            keys += [v for v in values.values() if v.startswith("whsec_")]
    return keys


def _signature(item: Received, keys: list[str]) -> str:
    """What a receiver would conclude from the Standard Webhooks headers."""
    if "webhook-signature" not in {k.lower() for k in item.headers}:
        return ""
    for key in keys:
        try:
            Webhook(key).verify(item.body, item.headers)
        except WebhookVerificationError:
            continue
        return "signature verified"
    return "SIGNATURE INVALID"


async def run_demo() -> int:
    started = time.monotonic()
    docs = load_manifests(project_root() / "deploy" / "examples")
    keys = _signing_keys(docs)

    def show(item: Received, status: int) -> None:
        event = _summary(item.json())
        elapsed = time.monotonic() - started
        _print(f"  -> {item.path:<34} {event:<40} HTTP {status}  +{elapsed:.2f}s  {_signature(item, keys)}")

    receiver = Receiver(on_request=show)
    await receiver.start()
    try:
        async with emulator() as emu:
            docs = _rewrite_for_demo(docs, receiver)
            _print(f"Kubernetes API emulator at {emu.url}; receiver at {receiver.url}")
            async with running_operator(emu, DEMO_SETTINGS):
                for doc in docs:
                    await emu.create(doc)
                    _print(f"created {doc['kind']}/{doc['metadata']['name']}")
                return await _drive(emu, receiver, docs)
    finally:
        await receiver.stop()


async def _drive(emu: Emulator, receiver: Receiver, docs: list[dict[str, Any]]) -> int:
    env = next(d for d in docs if d["kind"] == "Environment")
    namespace = env["metadata"]["namespace"]
    failing = copy.deepcopy(env)
    failing["metadata"] = {"name": f"{env['metadata']['name']}-canary", "namespace": namespace}
    await emu.create(failing)
    webhooks = [
        (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"])
        for d in docs
        if d["kind"] in ("Webhook", "ClusterWebhook")
    ]
    await asyncio.sleep(0.3)  # let the webhooks' first status land before the storm (cosmetic only)
    script = [
        (env["metadata"]["name"], "deploy-1", ["QUEUED", "DEPLOYING", "DEPLOYED"]),
        (failing["metadata"]["name"], "deploy-2", ["QUEUED", "BUILDING", "DEPLOYMENT_ERROR"]),
    ]
    for name, deployment_id, states in script:
        _print(f"\nEnvironment {namespace}/{name}: deployment {deployment_id}")
        for state in states:
            _print(f"  status.deployment.currentStatus = {state}")
            await emu.deploy(namespace, name, deployment_id, state)
            await asyncio.sleep(0.3)

    def settled() -> bool:
        finished = 0
        for kind, ns, name in webhooks:
            status = (emu.get(kind, ns, name) or {}).get("status") or {}
            if status.get("pending"):
                return False
            counters = status.get("counters") or {}
            finished += counters.get("delivered", 0) + counters.get("failed", 0)
        return finished == len(receiver.received) > 0

    try:
        await wait_for(settled, timeout=30, what="every webhook's status to settle")
    except TimeoutError as exc:
        _print(f"\nDEMO FAILED: {exc}")
        _print(_status_table(emu, webhooks))
        return 1
    _print(f"\n{len(receiver.received)} deliveries received.\n\n$ kubectl get webhooks,clusterwebhooks -A")
    _print(_status_table(emu, webhooks))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(asyncio.run(run_demo()))
