"""The kopf shell: it translates kopf's callbacks into ``flow``'s calls and back, nothing more.

Only event handlers are used: they write nothing of kopf's own (no finalizers, no
last-handled annotations, no progress). Environments, the hot path, are not kopf's: the startup
handler starts Herald's own list-watch of them (``listwatch``), so a deployment event is one
watch event in, one delivery out, and one annotation patch recording what was notified.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from herald import USER_AGENT
from herald.delivery import DeliveryClient, Resolver
from herald.delivery_store import RedeliverWatch
from herald.dispatcher import Dispatcher
from herald.flow import Flow, GoneWebhooks
from herald.index import WebhookIndex
from herald.kube import API_GROUP, API_VERSION, ApiConnection, KubeClient
from herald.kube_events import EventPoster
from herald.ledger import Ledgers, LedgerWriter
from herald.listwatch import ListWatch
from herald.metrics import Metrics
from herald.models import ObjectRef
from herald.settings import Settings
from herald.source_handlers import register_sources
from herald.status import parse_webhook

__all__ = ["NoDiffBase", "Runtime", "api_login", "build_registry", "in_cluster_server", "login_info"]

logger = logging.getLogger("herald.handlers")

LEDGER_DRAIN_TIMEOUT = 5.0  # seconds a stopping Herald gives queued ledger writes
WORKER_IDLE = 1.0  # seconds an idle per-object kopf worker lives (kopf: 5)


@dataclass
class Runtime:
    """What lives as long as the operator: made at startup inside its event loop, closed at cleanup."""

    settings: Settings
    metrics: Metrics
    kube: KubeClient
    dispatcher: Dispatcher
    ledger_writer: LedgerWriter
    events: EventPoster
    flow: Flow
    environments: tuple[ListWatch, ...] = ()
    background: tuple[asyncio.Task[None], ...] = ()

    @property
    def index(self) -> WebhookIndex:
        return self.flow.index

    def handling(self) -> bool:
        """Deployment events are being handled: every webhook that existed at startup has arrived
        and every Environment has been listed."""
        return self.index.ready and all(watch.listed for watch in self.environments)


def _api_connection(info: kopf.ConnectionInfo) -> ApiConnection:
    """kopf's own headers and TLS context: CA and client certificate from paths, PEM or base64."""
    return ApiConnection(server=info.server, headers=info.as_http_headers(), tls=info.as_ssl_context())


def in_cluster_server(env: Mapping[str, str]) -> str | None:
    """The API server as client-go finds it in a pod: from the kubelet's service variables.

    kopf's own service-account login dials ``kubernetes.default.svc``, which only resolves where
    the pod uses cluster DNS (not with ``hostNetwork`` and the default DNS policy)."""
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        return None
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def login_info() -> kopf.ConnectionInfo:
    """In-cluster service account first, then KUBECONFIG: the same order kopf uses."""
    settings = kopf.OperatorSettings()
    info = kopf.login_with_service_account(logger=logger, settings=settings)
    server = in_cluster_server(os.environ)
    if info is not None and server is not None:
        info = dataclasses.replace(info, server=server)
    info = info or kopf.login_with_kubeconfig(logger=logger, settings=settings)
    if info is None:
        raise kopf.LoginError("No in-cluster service account and no usable KUBECONFIG")
    return info


async def api_login() -> ApiConnection:
    return _api_connection(login_info())


async def deliveries(dispatcher: Dispatcher, index: WebhookIndex) -> None:
    """Once every webhook is known: resume the pending Delivery objects, then keep retention."""
    await index.wait_ready()
    while True:
        try:
            resumed = await dispatcher.resume()
        except Exception as exc:  # the API answers later: new deliveries flow meanwhile
            logger.warning("cannot list pending Delivery objects (%s); trying again", exc)
            await asyncio.sleep(5)
            continue
        logger.info("%d pending deliveries resumed", resumed)
        break
    await dispatcher.retention.run()


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff base: kopf compares it with each object only for change handlers, which Herald has
    none of (a test holds to that), yet builds it from a deep copy of every watched object, status
    included: a big Environment's whole status per watch event."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def build_registry(
    config: Settings,
    *,
    connection: kopf.ConnectionInfo | None = None,
    metrics: Metrics | None = None,
    resolver: Resolver | None = None,
    runtimes: list[Runtime] | None = None,
) -> kopf.OperatorRegistry:
    """A fresh registry with Herald's handlers; ``connection`` pins the API server (tests, demo).

    ``runtimes`` receives the Runtime made at startup, for callers that inspect it (tests, demo).
    """
    registry = kopf.OperatorRegistry()
    runtime: Runtime | None = None

    def connection_info() -> kopf.ConnectionInfo:
        return connection if connection is not None else login_info()

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info()

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        nonlocal runtime
        # Scanning lists namespaces and CRDs; off where RBAC forbids that (HERALD_SCANNING=off).
        settings.scanning.disabled = not config.scanning
        # Log lines stay logs; Herald posts the Kubernetes Events it means explicitly.
        settings.posting.loggers = False
        settings.posting.reporting_component = "herald"
        settings.persistence.diffbase_storage = NoDiffBase()
        # Re-list periodically so a silently dead watch connection heals on its own.
        settings.watching.server_timeout = config.watch_timeout
        settings.watching.client_timeout = config.watch_timeout + min(30, config.watch_timeout)
        settings.watching.connect_timeout = 10
        # kopf keeps a worker per object, with its last event, until it idles this long. After a
        # burst (a startup listing, the echo of every webhook's first status) all of them are
        # alive at once: with kopf's 5 s, 45 MB more RSS at 5,000 Webhooks (README, Performance).
        settings.queueing.idle_timeout = WORKER_IDLE

        async def connect() -> ApiConnection:
            return _api_connection(connection_info())

        herald_metrics = metrics if metrics is not None else Metrics()
        kube = KubeClient(connect)
        events = EventPoster(
            kube.create_event,
            component=settings.posting.reporting_component,
            wallclock=lambda: datetime.datetime.now(datetime.UTC),
        )

        def announce(body: Mapping[str, Any], reason: str, message: str) -> None:
            events.post(body, "Normal", reason, message)

        index = WebhookIndex()

        def gone(cluster: bool, ref: ObjectRef, uid: str) -> None:
            flow.webhook_gone(cluster, ref, uid)  # the flow is made below, after its dispatcher

        dispatcher = Dispatcher(
            settings=config,
            client=DeliveryClient(config, resolver=resolver, user_agent=USER_AGENT),
            sink=GoneWebhooks(kube, index=index, gone=gone),
            api=kube,
            secrets=kube,
            post_event=events.post,
            metrics=herald_metrics,
            clock=time.monotonic,
            wallclock=time.time,
        )
        ledgers = Ledgers()
        ledger_writer = LedgerWriter(kube)
        flow = Flow(
            settings=config,
            index=index,
            cluster=kube,
            dispatcher=dispatcher,
            ledger_writer=ledger_writer,
            ledgers=ledgers,
            metrics=herald_metrics,
            announce=announce,
            clock=time.monotonic,
        )
        # Environments are Herald's own watch, not kopf's: the hot path (listwatch, why).
        environments = tuple(
            ListWatch(
                kube,
                "environments",
                namespace,
                seen=flow.environment_seen,
                timeout_seconds=config.watch_timeout,
            )
            for namespace in config.namespaces or (None,)
        )
        runtime = Runtime(
            settings=config,
            metrics=herald_metrics,
            kube=kube,
            dispatcher=dispatcher,
            ledger_writer=ledger_writer,
            events=events,
            flow=flow,
            environments=environments,
            background=(
                asyncio.create_task(flow.learn_webhooks(), name="herald-learn-webhooks"),
                asyncio.create_task(flow.reconcile_webhooks(), name="herald-reconcile-webhooks"),
                asyncio.create_task(deliveries(dispatcher, index), name="herald-deliveries"),
                *(
                    asyncio.create_task(watch.run(), name=f"herald-environment-watch-{watch.what}")
                    for watch in environments
                ),
                *(
                    asyncio.create_task(
                        RedeliverWatch(
                            kube,
                            namespace=namespace,
                            redeliver=dispatcher.redeliver_requested,
                            deleted=dispatcher.object_deleted,
                            timeout_seconds=config.watch_timeout,
                        ).run(),
                        name=f"herald-delivery-watch-{namespace or 'all'}",
                    )
                    for namespace in dispatcher.delivery_namespaces()
                ),
            ),
        )
        if runtimes is not None:
            runtimes.append(runtime)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        if runtime is not None:
            for task in runtime.background:
                task.cancel()
            await runtime.flow.close()
            await runtime.dispatcher.close()
            await runtime.ledger_writer.close(timeout=LEDGER_DRAIN_TIMEOUT)
            await runtime.events.close()
            await runtime.dispatcher.client.aclose()
            await runtime.kube.aclose()

    def active() -> Runtime:
        if runtime is None:
            raise kopf.TemporaryError("Herald is still starting", delay=1)
        return runtime

    async def webhook_event(event: kopf.RawEvent, body: kopf.Body, *, cluster: bool) -> None:
        flow = active().flow
        if event.get("type") == "DELETED":
            meta = body.get("metadata", {})
            ref = ObjectRef(namespace=None if cluster else meta.get("namespace"), name=meta.get("name", ""))
            await flow.webhook_deleted(cluster=cluster, ref=ref, uid=str(meta.get("uid", "")))
        else:
            flow.webhook_seen(parse_webhook(body, cluster=cluster), status=body.get("status"))

    @kopf.on.event(API_GROUP, API_VERSION, "webhooks", registry=registry)
    async def on_webhook(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        await webhook_event(event, body, cluster=False)

    @kopf.on.event(API_GROUP, API_VERSION, "clusterwebhooks", registry=registry)
    async def on_clusterwebhook(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        await webhook_event(event, body, cluster=True)

    register_sources(registry, flags=config.sources or (), kube=lambda: active().kube)
    return registry
