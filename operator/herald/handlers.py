"""The kopf shell: the only module that knows kopf. Handlers translate cluster objects into the
core's values and hand deliveries to the dispatcher; they never wait on a receiver.

Only event handlers are used: they write nothing of kopf's own (no finalizers, no
last-handled annotations, no progress), so the hot path of a deployment event is one watch
event in, one delivery out, and one annotation patch recording what was notified.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import kopf

from herald import USER_AGENT
from herald.delivery import DeliveryClient, Resolver
from herald.dispatcher import Dispatcher
from herald.events import (
    LEDGER_ANNOTATION,
    BadEnvironment,
    BadLedger,
    build_event,
    derive_events,
    merge_ledgers,
    parse_environment,
    parse_ledger,
    record_events,
)
from herald.index import WebhookIndex
from herald.kube import API_GROUP, API_VERSION, ApiConnection, ApiError, KubeClient
from herald.ledger import LedgerWriter
from herald.matching import matches, selector_matches
from herald.metrics import Metrics
from herald.models import DeploymentEvent, NotifiedLedger, ObjectRef
from herald.settings import Settings
from herald.status import WebhookView, parse_webhook

__all__ = ["Runtime", "api_login", "build_registry", "login_info"]

logger = logging.getLogger("herald.handlers")

RELIST_INTERVAL = 5.0  # seconds between listings while the webhooks that exist are not all known
LEDGER_MEMORY = 100_000  # Environments whose last notification this process remembers
LEDGER_DRAIN_TIMEOUT = 5.0  # seconds a stopping Herald gives queued ledger writes
EVENT_REASONS = {
    "DEPLOYMENT_STARTED": "DeploymentStarted",
    "DEPLOYMENT_SUCCESSFUL": "DeploymentSuccessful",
    "DEPLOYMENT_CANCELLED": "DeploymentCancelled",
    "DEPLOYMENT_FAILURE": "DeploymentFailure",
}


@dataclass
class Runtime:
    """What lives as long as the operator: made at startup inside its event loop, closed at cleanup."""

    settings: Settings
    metrics: Metrics
    kube: KubeClient
    dispatcher: Dispatcher
    namespace_labels: dict[str, tuple[float, dict[str, str] | None]]
    # What this process notified per Environment uid, newest last: a watch event may predate
    # the annotation write that recorded it (bounded; the annotation is the truth on restart).
    ledgers: collections.OrderedDict[str, NotifiedLedger]
    ledger_writer: LedgerWriter
    index: WebhookIndex = dataclasses.field(default_factory=WebhookIndex)
    learning: asyncio.Task[None] | None = None

    async def write_ledger(self, namespace: str, name: str, uid: str, persisted: Awaitable[None]) -> None:
        """Mark events notified on the Environment once their deliveries are persisted."""
        await persisted
        self.ledger_writer.enqueue(uid, namespace, name)

    async def learn_webhooks(self) -> None:
        """Hold deployment events until every webhook that exists has come through the watch."""
        while not self.index.ready:
            try:
                uids: set[str] = set()
                for namespace in self.settings.namespaces or (None,):
                    uids |= await self.kube.list_uids("webhooks", namespace)
                uids |= await self.kube.list_uids("clusterwebhooks", None)
            except ApiError as exc:
                logger.warning("cannot list webhooks (%s); deployment events wait until Herald can", exc)
            else:
                self.index.expect(uids)
                if not self.index.ready:
                    logger.info(
                        "waiting for %d webhooks to arrive before handling deployment events", len(uids)
                    )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.index.wait_ready(), timeout=RELIST_INTERVAL)
        logger.info("%d webhooks known; handling deployment events", len(self.index))

    def remember(self, uid: str, ledger: NotifiedLedger) -> None:
        self.ledgers[uid] = ledger
        self.ledgers.move_to_end(uid)
        while len(self.ledgers) > LEDGER_MEMORY:
            self.ledgers.popitem(last=False)

    async def labels_of(self, namespace: str) -> dict[str, str] | None:
        cached = self.namespace_labels.get(namespace)
        now = time.monotonic()
        if cached is None or now - cached[0] > self.settings.namespace_cache_ttl:
            try:
                labels = await self.kube.read_namespace_labels(namespace)
            except Exception as exc:  # unreadable namespace: selectors cannot match, say why
                logger.warning("cannot read labels of namespace %s: %s", namespace, exc)
                labels = None
            cached = (now, labels)
            self.namespace_labels[namespace] = cached
        return cached[1]


def _api_connection(info: kopf.ConnectionInfo) -> ApiConnection:
    """kopf's own headers and TLS context: CA and client certificate from paths, PEM or base64."""
    return ApiConnection(server=info.server, headers=info.as_http_headers(), tls=info.as_ssl_context())


def login_info() -> kopf.ConnectionInfo:
    """In-cluster service account first, then KUBECONFIG: the same order kopf uses."""
    settings = kopf.OperatorSettings()
    info = kopf.login_with_service_account(logger=logger, settings=settings) or kopf.login_with_kubeconfig(
        logger=logger, settings=settings
    )
    if info is None:
        raise kopf.LoginError("No in-cluster service account and no usable KUBECONFIG")
    return info


async def api_login() -> ApiConnection:
    return _api_connection(login_info())


def _post_event(meta: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    kopf.event(kopf.Body(cast(kopf.RawBody, dict(meta))), type=type_, reason=reason, message=message)


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
        # Re-list periodically so a silently dead watch connection heals on its own.
        settings.watching.server_timeout = config.watch_timeout
        settings.watching.client_timeout = config.watch_timeout + min(30.0, config.watch_timeout)
        settings.watching.connect_timeout = 10

        async def connect() -> ApiConnection:
            return _api_connection(connection_info())

        herald_metrics = metrics if metrics is not None else Metrics()
        kube = KubeClient(connect)
        dispatcher = Dispatcher(
            settings=config,
            client=DeliveryClient(config, resolver=resolver, user_agent=USER_AGENT),
            sink=kube,
            secrets=kube,
            post_event=_post_event,
            metrics=herald_metrics,
            clock=time.monotonic,
            wallclock=time.time,
        )
        ledgers: collections.OrderedDict[str, NotifiedLedger] = collections.OrderedDict()
        runtime = Runtime(
            settings=config,
            metrics=herald_metrics,
            kube=kube,
            dispatcher=dispatcher,
            namespace_labels={},
            ledgers=ledgers,
            ledger_writer=LedgerWriter(kube, ledgers.get),
        )
        runtime.learning = asyncio.create_task(runtime.learn_webhooks(), name="herald-learn-webhooks")
        if runtimes is not None:
            runtimes.append(runtime)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        if runtime is not None:
            if runtime.learning is not None:
                runtime.learning.cancel()
            await runtime.dispatcher.close()
            await runtime.ledger_writer.close(timeout=LEDGER_DRAIN_TIMEOUT)
            await runtime.dispatcher.client.aclose()
            await runtime.kube.aclose()

    def active() -> Runtime:
        if runtime is None:
            raise kopf.TemporaryError("Herald is still starting", delay=1)
        return runtime

        # ---------------------------------------------------------------- webhooks

    async def webhook_event(event: kopf.RawEvent, body: kopf.Body, *, cluster: bool) -> None:
        rt = active()
        if event.get("type") == "DELETED":
            meta = body.get("metadata", {})
            ref = ObjectRef(namespace=None if cluster else meta.get("namespace"), name=meta.get("name", ""))
            rt.index.drop(cluster=cluster, ref=ref, uid=str(meta.get("uid", "")))
            await rt.dispatcher.forget(cluster=cluster, ref=ref)
            return
        view = parse_webhook(body, cluster=cluster)
        rt.index.put(view)
        rt.dispatcher.observe(view, status=body.get("status"))

    @kopf.on.event(API_GROUP, API_VERSION, "webhooks", registry=registry)
    async def on_webhook(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        await webhook_event(event, body, cluster=False)

    @kopf.on.event(API_GROUP, API_VERSION, "clusterwebhooks", registry=registry)
    async def on_clusterwebhook(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
        await webhook_event(event, body, cluster=True)

    # ---------------------------------------------------------------- environments

    async def targets(rt: Runtime, namespace: str, event: DeploymentEvent) -> list[WebhookView]:
        """Webhooks of this namespace and ClusterWebhooks: no other namespace's webhooks are read."""
        chosen = [v for v in rt.index.namespaced(namespace) if v.spec is not None and matches(v.spec, event)]
        labels: dict[str, str] | None = None
        for view in rt.index.cluster():
            if view.spec is None or not matches(view.spec, event):
                continue
            selector = view.spec.namespace_selector
            if selector is not None and (selector.match_labels or selector.match_expressions):
                if labels is None:
                    labels = await rt.labels_of(namespace) or {}
                if not selector_matches(selector, labels):
                    continue
            chosen.append(view)
        return chosen

    @kopf.on.event(API_GROUP, API_VERSION, "environments", registry=registry)
    async def on_environment(
        event: kopf.RawEvent,
        body: kopf.Body,
        logger: kopf.Logger,
        **_: Any,
    ) -> None:
        if event.get("type") == "DELETED":
            return
        rt = active()
        await rt.index.wait_ready()
        name = f"{body.get('metadata', {}).get('namespace')}/{body.get('metadata', {}).get('name')}"
        try:
            environment, spec, deployment = parse_environment(body)
        except BadEnvironment as exc:
            logger.warning("Environment %s skipped: %s", name, exc)
            return
        if deployment is None:
            return
        raw_ledger = body.get("metadata", {}).get("annotations", {}).get(LEDGER_ANNOTATION)
        try:
            ledger = parse_ledger(raw_ledger)
        except BadLedger as exc:
            logger.warning(
                "Environment %s: unreadable %s annotation (%s); starting afresh", name, LEDGER_ANNOTATION, exc
            )
            ledger = NotifiedLedger()
        uid = environment.uid
        remembered = rt.ledgers.get(uid)
        if remembered is not None:
            ledger = merge_ledgers(ledger, remembered)
        new_events = derive_events(deployment, ledger)
        if not new_events:
            return
        now = rt.dispatcher.now()
        deliveries: list[tuple[WebhookView, DeploymentEvent]] = []
        for event_type in new_events:
            notification = build_event(
                event_type=event_type,
                environment=environment,
                spec=spec,
                deployment=deployment,
                created_at=now,
            )
            for view in await targets(rt, environment.namespace, notification):
                deliveries.append((view, notification))
        persisted = rt.dispatcher.submit(deliveries)
        notified = record_events(ledger, deployment.id, new_events)
        rt.remember(uid, notified)
        rt.dispatcher.spawn(
            rt.write_ledger(environment.namespace, environment.name, uid, persisted),
            name=f"herald-ledger-{uid}",
        )
        for event_type in new_events:
            rt.metrics.deployment_events.labels(event=event_type.value).inc()
            count = sum(1 for _, n in deliveries if n.event_type is event_type)
            kopf.info(
                body,
                reason=EVENT_REASONS[event_type.value],
                message=f"Deployment {deployment.id} {deployment.current_status.value}: "
                f"{event_type.value} queued for {count} webhooks",
            )
        logger.info(
            "Environment %s deployment %s: %s to %d deliveries",
            name,
            deployment.id,
            ",".join(e.value for e in new_events),
            len(deliveries),
        )

    return registry
