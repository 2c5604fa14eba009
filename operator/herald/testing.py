"""The harness Herald's tests, benchmarks and demo share, as ``kopf.testing`` is kopf's: an
in-process Kubernetes API emulator (kmock) serving Herald's CRDs, local HTTP receivers that record
what they get and answer from a script, a simulated Deployment controller, and the real operator
running against the emulator in the caller's event loop.

It needs the ``demo`` extra (``pip install 'herald[demo]'``, which ``make`` installs): the
production image does not ship the emulator.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import dataclasses
import datetime
import itertools
import json
import pathlib
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, cast

import kmock
import kopf
import yaml
from aiohttp import web

from herald.delivery import Resolver
from herald.handlers import Runtime, build_registry
from herald.kube import API_GROUP, API_VERSION
from herald.metrics import Metrics
from herald.settings import Settings
from herald.sources import SOURCES

__all__ = [
    "Emulator",
    "Received",
    "Receiver",
    "SimulatedDeployment",
    "emulator",
    "herald_watches",
    "label_selector",
    "load_manifests",
    "project_root",
    "running_operator",
    "wait_for",
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
    """kmock, plus what of a real API server Herald's tests rely on: ``creationTimestamp``,
    ``generateName`` (kopf names
    its Events that way), ``stringData`` on Secrets, ``labelSelector`` on lists and watches, and
    lists in pages (``limit`` and ``continue``, in the API server's namespace/name order)."""

    async def _handle(self, request: Any) -> Any:
        data = request.data if isinstance(request.data, dict) else None
        if request.action == kmock.action.CREATE and data is not None:
            meta = data.setdefault("metadata", {})
            meta.setdefault("creationTimestamp", _now())
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = f"{meta['generateName']}{next(_names):08x}"
            if data.get("kind") == "Secret" and data.get("stringData"):
                encoded = {
                    k: base64.b64encode(str(v).encode()).decode() for k, v in data.pop("stringData").items()
                }
                data["data"] = {**(data.get("data") or {}), **encoded}
        return await super()._handle(request)

    async def _serve_list(self, request: Any) -> Any:
        selects = _selector(request.params)
        listed: dict[str, Any] = cast(dict[str, Any], await super()._serve_list(request))
        items = sorted((o for o in listed["items"] if selects is None or selects(_labels_of(o))), key=_key)
        token = request.params.get("continue")
        if token:
            after = _after(token)
            items = [o for o in items if _key(o) > after]
        limit = _limit(request.params.get("limit"))
        if 0 < limit < len(items):
            items = items[:limit]
            listed["metadata"]["continue"] = _token(_key(items[-1]))
        listed["items"] = items
        return listed

    async def _serve_watch(self, request: Any) -> Any:
        """With a selector, only the objects it picks; like kube-apiserver, a change that makes an
        object match arrives as ADDED, one that makes it stop matching as DELETED."""
        selects = _selector(request.params)
        seen: set[tuple[str, str]] = set()
        stream: Any = super()._serve_watch(request)  # an async generator
        async with contextlib.aclosing(stream) as events:
            async for event in events:
                if selects is None or not isinstance(event, dict):
                    yield event
                    continue
                key = _key(event["object"])
                was = key in seen
                now = event["type"] != "DELETED" and selects(_labels_of(event["object"]))
                if now:
                    seen.add(key)
                else:
                    seen.discard(key)
                if was or now:
                    yield {**event, "type": "MODIFIED" if was and now else "ADDED" if now else "DELETED"}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _bad_request(message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=400, reason="BadRequest", message=message)


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _labels_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def _token(key: tuple[str, str]) -> str:
    """A continue token: the key of a page's last object (the emulator's tokens never expire)."""
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


def _after(token: str) -> tuple[str, str]:
    """The key a continue token resumes after."""
    try:
        namespace, name = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError) as exc:
        raise _bad_request(f"continue key is not valid: {exc}") from exc
    return str(namespace), str(name)


def _limit(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError as exc:
        raise _bad_request(f"limit is not an integer: {value!r}") from exc


# One requirement of a label selector: "!key", "key", "key=v", "key==v", "key!=v",
# "key in (a,b)", "key notin (a,b)"; followed by a comma or the end.
_REQUIREMENT = re.compile(
    r"\s*(?:!\s*(?P<absent>[\w./-]+)"
    r"|(?P<key>[\w./-]+)(?:\s*(?P<op>==|=|!=)\s*(?P<value>[\w.-]*)"
    r"|\s+(?P<set>in|notin)\s*\((?P<values>[^()]*)\))?)\s*(?:,|$)"
)
_VALUE = re.compile(r"[\w.-]*")
Labels = Mapping[str, str]


def label_selector(text: str) -> Callable[[Labels], bool]:
    """What a ``labelSelector`` picks, as kube-apiserver reads it: every requirement must hold, and
    ``!=`` and ``notin`` also hold where the label is absent. ValueError when it does not parse."""
    tests: list[Callable[[Labels], bool]] = []
    pos, text = 0, text.strip()
    if text.endswith(","):
        raise ValueError(f"a requirement is missing after the last comma: {text!r}")
    while pos < len(text):
        m = _REQUIREMENT.match(text, pos)
        if m is None:
            raise ValueError(f"unable to parse requirement: {text[pos:]!r}")
        tests.append(_requirement(m))
        pos = m.end()
    return lambda labels: all(test(labels) for test in tests)


def _requirement(m: re.Match[str]) -> Callable[[Labels], bool]:
    key = m["absent"] or m["key"]
    if m["absent"]:
        return lambda labels: key not in labels
    if m["set"]:
        values = {v.strip() for v in m["values"].split(",")}
        if not all(_VALUE.fullmatch(v) for v in values):
            raise ValueError(f"invalid value in {m[0].strip()!r}")
    elif m["op"]:
        values = {m["value"]}
    else:
        return lambda labels: key in labels
    if m["set"] == "notin" or m["op"] == "!=":
        return lambda labels: labels.get(key) not in values
    return lambda labels: key in labels and labels[key] in values


def _selector(params: Mapping[str, str]) -> Callable[[Labels], bool] | None:
    """The request's label selector; None without one (every object)."""
    text = params.get("labelSelector")
    if not text:
        return None
    try:
        return label_selector(text)
    except ValueError as exc:
        raise _bad_request(f"unable to parse labelSelector {text!r}: {exc}") from exc


_names = itertools.count(1)


class Emulator:
    """A kmock KubernetesEmulator that knows Herald's CRDs, with helpers to create and patch objects."""

    def __init__(self, server: kmock.KubernetesEmulator) -> None:
        self.kmock = server
        self._counter = itertools.count(1)
        self.plurals: dict[str, tuple[str, bool]] = {}  # kind -> (plural, namespaced)
        self.groups: dict[str, tuple[str, str]] = {}  # kind -> (group, version) outside herald.dev

    @property
    def url(self) -> str:
        return str(self.kmock.url).rstrip("/")

    def declare(self, crds: list[dict[str, Any]]) -> None:
        for resource, namespaced in OBSERVED.items():
            self.kmock.resources[resource] = kmock.ResourceInfo(
                namespaced=namespaced, verbs=VERBS, kind=resource.rsplit("/", 1)[-1].capitalize()[:-1]
            )
        for crd in crds:
            if crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            names = spec["names"]
            namespaced = spec["scope"] == "Namespaced"
            self.plurals[names["kind"]] = (names["plural"], namespaced)
            for version in spec["versions"]:
                if not version.get("served", True):
                    continue
                resource = f"{spec['group']}/{version['name']}/{names['plural']}"
                self.kmock.resources[resource] = kmock.ResourceInfo(
                    namespaced=namespaced,
                    kind=names["kind"],
                    singular=names.get("singular"),
                    shortnames=set(names.get("shortNames", ())),
                    categories=set(names.get("categories", ())),
                    subresources=set(version.get("subresources") or ()),  # Delivery has none
                    verbs=VERBS,
                )
        # The kinds deployment sources watch: kmock serves them as it serves any other.
        for source in SOURCES.values():
            self.kmock.resources[f"{source.group}/{source.version}/{source.plural}"] = kmock.ResourceInfo(
                namespaced=True, kind=source.kind, subresources={"status"}, verbs=VERBS
            )
            self.plurals[source.kind] = (source.plural, True)
            self.groups[source.kind] = (source.group, source.version)
        self.plurals.update({"Secret": ("secrets", True), "Namespace": ("namespaces", False)})
        self.groups.update({"Secret": ("", "v1"), "Namespace": ("", "v1")})

    def path(
        self, kind: str, namespace: str | None, name: str | None = None, *, subresource: str = ""
    ) -> str:
        plural, namespaced = self.plurals[kind]
        group, version = self.groups.get(kind, (API_GROUP, API_VERSION))
        base = f"/apis/{group}/{version}" if group else f"/api/{version}"
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
        group = self.groups.get(kind, (API_GROUP, API_VERSION))[0]
        for (resource, ns, obj_name), obj in self.kmock.objects.items():
            if (
                resource.plural == plural
                and (resource.group or "") == group
                and ns == namespace
                and obj_name == name
            ):
                return None if obj.deleted else dict(obj.raw)
        return None

    def delivery_log(self, webhook: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """A webhook's Delivery objects as records (spec and status side by side), most recently
        changed first; ``namespace`` None: a ClusterWebhook's, wherever they live."""
        records = []
        for (resource, ns, _), obj in self.kmock.objects.items():
            raw = dict(obj.raw)
            spec = raw.get("spec") or {}
            if (
                resource.plural != "deliveries"
                or obj.deleted
                or (spec.get("webhook") or {}).get("name") != webhook
            ):
                continue
            if (namespace is None) != ((spec.get("webhook") or {}).get("kind") == "ClusterWebhook") or (
                namespace is not None and ns != namespace
            ):
                continue
            status = raw.get("status") or {}
            env = spec.get("environment") or {}
            records.append(
                {
                    **{k: spec.get(k) for k in ("payloadId", "event", "deploymentId", "createdAt")},
                    "environment": f"{env.get('namespace')}/{env.get('name')}",
                    "name": (raw.get("metadata") or {}).get("name"),
                    **status,
                    "time": max(str(status.get(k) or "") for k in ("finishedAt", "lastAttemptAt"))
                    or spec.get("createdAt"),
                }
            )
        return sorted(records, key=lambda r: (str(r["time"]), str(r["createdAt"])), reverse=True)

    def watches(self) -> int:
        """How many watch requests on Herald's resources the emulator has served so far (one
        operator opens ``herald_watches`` of them)."""
        return sum(
            1
            for r in list(self.kmock._requests)
            if "watch=true" in str(r.url) and "/herald.dev/" in str(r.url)
        )


class SimulatedDeployment:
    """An apps/v1 Deployment and the writes kube-controller-manager's Deployment controller makes to
    it, step by step: the emulator runs no controllers, so tests and the demo play that part."""

    def __init__(
        self,
        emu: Emulator,
        namespace: str,
        name: str,
        *,
        labels: Mapping[str, str],
        image: str,
        replicas: int = 2,
    ) -> None:
        self.emu, self.namespace, self.name = emu, namespace, name
        self.labels, self.image, self.replicas = dict(labels), image, replicas
        self.generation, self.revision, self.template_changed = 1, 0, True

    def _spec(self) -> dict[str, Any]:
        return {
            "replicas": self.replicas,
            "selector": {"matchLabels": {"app": self.name}},
            "progressDeadlineSeconds": 600,
            "template": {
                "metadata": {"labels": {"app": self.name}},
                "spec": {"containers": [{"name": self.name, "image": self.image}]},
            },
        }

    async def create(self) -> None:
        """``kubectl apply``: the object, before the controller has looked at it."""
        await self.emu.create(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {
                    "name": self.name,
                    "namespace": self.namespace,
                    "labels": self.labels,
                    "generation": self.generation,
                },
                "spec": self._spec(),
            }
        )

    async def _spec_write(self) -> None:
        self.generation += 1  # the API server bumps it on every spec change
        await self.emu.patch(
            "Deployment",
            self.namespace,
            self.name,
            {"metadata": {"generation": self.generation}, "spec": self._spec()},
        )

    async def set_image(self, image: str) -> None:
        """``kubectl set image``: a new pod template, so a new rollout."""
        self.image, self.template_changed = image, True
        await self._spec_write()

    async def scale(self, replicas: int) -> None:
        """``kubectl scale`` and the controller's status after it: same template, same revision."""
        self.replicas = replicas
        await self._spec_write()
        await self._status(
            updated=replicas, total=replicas, available=replicas, reason="NewReplicaSetAvailable"
        )

    async def progress(self, updated: int = 1) -> None:
        """The controller creates the new ReplicaSet (a new revision) and scales it up."""
        if self.template_changed:
            self.revision, self.template_changed = self.revision + 1, False
            annotations = {"deployment.kubernetes.io/revision": str(self.revision)}
            await self.emu.patch(
                "Deployment", self.namespace, self.name, {"metadata": {"annotations": annotations}}
            )
        await self._status(
            updated=updated, total=self.replicas + 1, available=self.replicas - 1, reason="ReplicaSetUpdated"
        )

    async def complete(self) -> None:
        """Every replica updated and available, the old ReplicaSet scaled down."""
        n = self.replicas
        await self._status(updated=n, total=n, available=n, reason="NewReplicaSetAvailable")

    async def time_out(self) -> None:
        """No progress within progressDeadlineSeconds."""
        await self._status(
            updated=1, total=self.replicas + 1, available=self.replicas - 1, reason="ProgressDeadlineExceeded"
        )

    async def _status(self, *, updated: int, total: int, available: int, reason: str) -> None:
        failed = reason == "ProgressDeadlineExceeded"
        messages = {
            "ReplicaSetUpdated": "is progressing.",
            "NewReplicaSetAvailable": "has successfully progressed.",
            "ProgressDeadlineExceeded": "has timed out progressing.",
        }
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        status = {
            "observedGeneration": self.generation,
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": available,
            "availableReplicas": available,
            "conditions": [
                {
                    "type": "Progressing",
                    "status": "False" if failed else "True",
                    "reason": reason,
                    "message": f'ReplicaSet "{self.name}-{self.revision}" {messages[reason]}',
                    "lastUpdateTime": now,
                    "lastTransitionTime": now,
                }
            ],
        }
        await self.emu.patch(
            "Deployment", self.namespace, self.name, {"status": status}, subresource="status"
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


def herald_watches(*, sources: bool) -> int:
    """The watch streams one operator opens on Herald's kinds: kopf's on Webhooks and
    ClusterWebhooks, Herald's own on Environments and Deliveries, and with sources kopf's on
    Environments too. A test writes only once all are open: the emulator has no resourceVersion,
    so a watch misses what changed before it opened."""
    return 5 if sources else 4


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
            lambda: emu.watches() - before >= herald_watches(sources=bool(settings.sources)),
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
