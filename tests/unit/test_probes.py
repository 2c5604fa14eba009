"""``/healthz``, ``/readyz`` and ``/metrics`` listen dual-stack, and on IPv4 alone where the host
has no IPv6: served here on real loopback sockets, IPv6 (``[::1]``) and IPv4 (``127.0.0.1``)."""

from __future__ import annotations

import asyncio
import errno
import socket
import types
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from herald import cli
from herald.cli import Readiness, listen, serve_health, serve_metrics
from herald.metrics import Metrics
from tests.cluster.controlplane import free_port

HOSTS = ["[::1]", "127.0.0.1"]


async def get(host: str, port: int, path: str, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
        return await http.get(f"http://{host}:{port}{path}", headers=headers)


@pytest.fixture
async def health() -> AsyncIterator[tuple[int, Readiness]]:
    port = free_port()
    readiness = Readiness(kopf_ready=asyncio.Event(), standby=True)
    runner = await serve_health(port, readiness)
    try:
        yield port, readiness
    finally:
        await runner.cleanup()


@pytest.fixture
async def metrics_port() -> AsyncIterator[int]:
    port = free_port()
    metrics = Metrics()
    metrics.pending.inc(3)
    runner = await serve_metrics(port, metrics.registry)
    try:
        yield port
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("host", HOSTS)
async def test_probes_answer_on_ipv6_and_ipv4(health: tuple[int, Readiness], host: str) -> None:
    port, readiness = health
    assert (await get(host, port, "/healthz")).text == "ok"
    assert (await get(host, port, "/readyz")).status_code == 503  # the API server never answered
    readiness.api_ok_at = asyncio.get_running_loop().time()
    assert (await get(host, port, "/readyz")).status_code == 200


@pytest.mark.parametrize("host", HOSTS)
async def test_metrics_answer_on_ipv6_and_ipv4(metrics_port: int, host: str) -> None:
    response = await get(host, metrics_port, "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "herald_pending_deliveries 3.0" in response.text.splitlines()


async def test_metrics_speak_openmetrics_to_a_scraper_that_asks(metrics_port: int) -> None:
    response = await get(
        "[::1]", metrics_port, "/metrics", accept="application/openmetrics-text; version=1.0.0"
    )
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


def test_listen_is_dual_stack_whatever_the_hosts_default() -> None:
    with listen(free_port()) as sock:
        assert sock.family == socket.AF_INET6
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0


def host_without_ipv6(fault: str) -> types.ModuleType:
    """``socket`` as ``herald.cli`` sees it on a host where IPv6 sockets cannot be made or bound."""

    class Socket(socket.socket):
        def __init__(self, family: int = -1, *args: Any, **kwargs: Any) -> None:
            if family == socket.AF_INET6 and fault == "create":
                raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
            super().__init__(family, *args, **kwargs)

        def bind(self, address: Any) -> None:
            if self.family == socket.AF_INET6 and fault == "bind":
                raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
            super().bind(address)

    module = types.ModuleType("socket")
    module.__dict__.update(socket.__dict__)
    module.socket = Socket  # type: ignore[attr-defined]
    return module


@pytest.mark.parametrize("fault", ["create", "bind"])
async def test_a_host_without_ipv6_gets_probes_on_ipv4(monkeypatch: pytest.MonkeyPatch, fault: str) -> None:
    monkeypatch.setattr(cli, "socket", host_without_ipv6(fault))
    port = free_port()
    runner = await serve_health(port, Readiness(kopf_ready=asyncio.Event()))
    try:
        assert (await get("127.0.0.1", port, "/healthz")).text == "ok"
        with pytest.raises(httpx.ConnectError):
            await get("[::1]", port, "/healthz")
    finally:
        await runner.cleanup()


async def test_a_port_in_use_is_an_error_not_a_fallback() -> None:
    port = free_port()
    with listen(port) as taken:
        taken.listen()
        with pytest.raises(OSError, match="in use") as raised:
            await serve_health(port, Readiness(kopf_ready=asyncio.Event()))
    assert raised.value.errno == errno.EADDRINUSE
