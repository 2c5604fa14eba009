"""The real operator against the kmock API emulator, delivering to real local receivers."""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import AsyncIterator
from typing import Any

import pytest

from herald.dispatcher import SECRET_LABEL
from herald.handlers import Runtime
from herald.metrics import Metrics
from herald.settings import Settings
from herald.testing import Emulator, emulator, running_operator

NS = "team-a"
FAST = Settings(
    egress_allow=(ipaddress.ip_network("127.0.0.0/8"),),
    retry_schedule=(0.2, 0.4, 0.8),
    retry_jitter=0.0,
    delivery_timeout=2,
    connect_timeout=1,
    status_interval=0.2,
    secret_cache_ttl=0.1,
    health_port=0,
    metrics_port=0,
    scanning=False,
)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with emulator() as e:
        yield e


@pytest.fixture
def settings() -> Settings:
    return FAST


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def operator(emu: Emulator, settings: Settings, metrics: Metrics) -> AsyncIterator[Runtime]:
    async with running_operator(emu, settings, metrics=metrics) as runtime:
        yield runtime


def webhook(
    name: str,
    url: str,
    *,
    namespace: str = NS,
    kind: str = "STANDARD",
    events: tuple[str, ...] = (
        "DEPLOYMENT_STARTED",
        "DEPLOYMENT_SUCCESSFUL",
        "DEPLOYMENT_CANCELLED",
        "DEPLOYMENT_FAILURE",
    ),
    cluster: bool = False,
    **spec: Any,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if not cluster:
        meta["namespace"] = namespace
    body: dict[str, Any] = {"kind": kind, "events": list(events), **spec}
    if url:
        body["url"] = url
    return {
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "ClusterWebhook" if cluster else "Webhook",
        "metadata": meta,
        "spec": body,
    }


def environment(
    name: str,
    *,
    namespace: str = NS,
    project: str = "shop-frontend",
    type_: str = "PRODUCTION",
    status: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "herald.dev/v1alpha1",
        "kind": "Environment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "organization": {"id": "org-1", "name": "Acme"},
            "project": {"id": "prj-1", "name": project},
            "type": type_,
            "clusterName": "eu-west-1",
            "applications": [{"id": "app-1", "name": "web"}],
            "databases": [{"name": "orders-db"}],
        },
    }
    if status is not None:
        body["status"] = status
    return body


def secret(name: str, data: dict[str, str], *, namespace: str = NS) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": {SECRET_LABEL: "true"}},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


async def deploy(
    emu: Emulator, name: str, deployment_id: str, state: str, *, namespace: str = NS, **extra: Any
) -> None:
    await emu.deploy(namespace, name, deployment_id, state, **extra)


def status_of(emu: Emulator, kind: str, namespace: str | None, name: str) -> dict[str, Any]:
    return (emu.get(kind, namespace, name) or {}).get("status") or {}


def deliveries(emu: Emulator, name: str, *, namespace: str | None = NS) -> list[dict[str, Any]]:
    """A webhook's delivery log (its Delivery objects), most recently changed first."""
    return emu.delivery_log(name, namespace)


def pending(emu: Emulator, name: str, *, namespace: str | None = NS) -> list[dict[str, Any]]:
    """Its unfinished deliveries."""
    return [
        r for r in deliveries(emu, name, namespace=namespace) if r.get("outcome") in ("Pending", "Retrying")
    ]


def condition(
    emu: Emulator, kind: str, namespace: str | None, name: str, type_: str = "Ready"
) -> dict[str, Any]:
    for c in status_of(emu, kind, namespace, name).get("conditions", []):
        if c.get("type") == type_:
            return dict(c)
    return {}
