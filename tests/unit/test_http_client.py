"""http_client.py: httpx requests over aiohttp, as httpx's own transport would answer them.

A real aiohttp server on loopback: what arrives (method, path, query, headers, body, Basic
credentials from the URL), what comes back (status, headers, body, streamed lines, gzip decoded
by httpx once), and each failure as the httpx error the clients classify.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import socket
import ssl
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from aiohttp import web

from herald.http_client import AiohttpTransport


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[web.Request], list[bytes]]]:
    seen: list[web.Request] = []
    bodies: list[bytes] = []

    async def echo(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        bodies.append(await request.read())
        if request.path == "/slow":
            await asyncio.sleep(1)
        if request.path == "/gzip":
            return web.Response(
                body=gzip.compress(b'{"zipped": true}'),
                headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
            )
        if request.path == "/lines":
            response = web.StreamResponse()
            await response.prepare(request)
            for line in (b'{"n": 1}\n', b'{"n": 2}\n'):
                await response.write(line)
            await response.write_eof()
            return response
        return web.json_response(
            {"ok": True}, status=201, headers={"Retry-After": "3", "Set-Cookie": "session=abc; Path=/"}
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", seen, bodies
    await runner.cleanup()


def client(**timeouts: float) -> httpx.AsyncClient:
    transport = AiohttpTransport(tls=ssl.create_default_context(), connections=4)
    return httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5.0, **timeouts), trust_env=False)


async def test_a_request_arrives_whole_and_its_answer_comes_back(
    server: tuple[str, list[web.Request], list[bytes]],
) -> None:
    url, seen, bodies = server
    async with client() as http:
        response = await http.post(
            f"{url}/apis/x?limit=1", json={"a": 1}, headers={"Content-Type": "application/merge-patch+json"}
        )
        again = await http.get(f"{url}/again")
    assert (response.status_code, response.json(), response.headers["Retry-After"]) == (
        201,
        {"ok": True},
        "3",
    )
    assert response.reason_phrase == "Created"
    assert (seen[0].method, seen[0].path, seen[0].query_string) == ("POST", "/apis/x", "limit=1")
    assert seen[0].headers["Content-Type"] == "application/merge-patch+json"  # only once, httpx's
    assert len(seen[0].headers.getall("Content-Type")) == 1
    assert bodies[0] == b'{"a":1}'
    assert again.status_code == 201


async def test_a_cookie_is_never_sent_back(server: tuple[str, list[web.Request], list[bytes]]) -> None:
    """Straight to the transport, as Herald sends: a receiver's Set-Cookie rides on nothing later."""
    url, seen, _ = server
    transport = AiohttpTransport(tls=ssl.create_default_context(), connections=4)
    try:
        for _ in range(2):
            response = await transport.handle_async_request(httpx.Request("GET", f"{url}/hook"))
            await response.aread()
    finally:
        await transport.aclose()
    assert response.headers["Set-Cookie"].startswith("session=abc")
    assert [r.headers.get("Cookie") for r in seen] == [None, None]


async def test_credentials_in_the_url_become_basic_authorization(
    server: tuple[str, list[web.Request], list[bytes]],
) -> None:
    url, seen, _ = server
    transport = AiohttpTransport(tls=ssl.create_default_context(), connections=4)
    try:
        target = url.replace("http://", "http://us%40er:s3cr%3At@") + "/hook"
        response = await transport.handle_async_request(httpx.Request("GET", target))
        await response.aread()
    finally:
        await transport.aclose()
    assert response.status_code == 201
    assert seen[0].headers["Authorization"] == "Basic " + base64.b64encode(b"us@er:s3cr:t").decode()


async def test_an_encoded_body_is_decoded_once(server: tuple[str, list[web.Request], list[bytes]]) -> None:
    url, _, _ = server
    async with client() as http:
        response = await http.get(f"{url}/gzip")
    assert response.json() == {"zipped": True}


async def test_a_streamed_answer_reads_line_by_line(
    server: tuple[str, list[web.Request], list[bytes]],
) -> None:
    url, _, _ = server
    async with client() as http, http.stream("GET", f"{url}/lines") as response:
        lines = [line async for line in response.aiter_lines()]
    assert lines == ['{"n": 1}', '{"n": 2}']


async def test_a_silent_server_is_a_read_timeout(server: tuple[str, list[web.Request], list[bytes]]) -> None:
    url, _, _ = server
    async with client(read=0.2) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get(f"{url}/slow")


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port bound but not listening: connecting to it is refused, deterministically."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_a_refused_connection_is_a_connect_error(refused_port: int) -> None:
    async with client() as http:
        with pytest.raises(httpx.ConnectError) as raised:
            await http.get(f"http://127.0.0.1:{refused_port}/")
    assert isinstance(raised.value.__cause__, OSError)  # the socket's own error stays in the chain


async def test_tls_is_verified_with_the_given_context(
    server: tuple[str, list[web.Request], list[bytes]],
) -> None:
    """A plain-HTTP server answering a TLS handshake: a connect error, never a response."""
    url, seen, _ = server
    async with client() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(url.replace("http://", "https://"))
    assert seen == []
