"""The transport under Herald's API client and its receivers' client: aiohttp's connection pool.

httpx is the interface (its typed errors, timeouts, request and response models are what
``kube`` and ``delivery`` are written against), without httpx's client: requests go straight
to the transport (redirects, auth flows, cookies and proxies are nothing Herald wants; httpx's
cookie jar alone parsed every response through urllib, 7% of the CPU at 50 events a second).
Underneath, requests go through aiohttp, whose HTTP parser is compiled: httpcore's pure-Python
HTTP/1.1 and anyio layers cost about four times the CPU per request (a POST of a Delivery
object and its JSON answer: 1.1 ms against 0.25 ms on these machines), and Herald makes four
to five requests per deployment event: its POST to the receiver, the Delivery object, the
ledger, an Event and, in time, the Delivery's pruning.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator

import aiohttp
import aiohttp.abc
import httpx

__all__ = ["AiohttpTransport"]


# aiohttp's failures as httpx's, most specific first: callers tell "unreachable" (TransportError)
# from a timeout by httpx's classes alone.
_ERRORS: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.SocketTimeoutError, httpx.ReadTimeout),
    (asyncio.TimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.ReadError),
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),  # an answer that is not HTTP
    (aiohttp.ClientError, httpx.NetworkError),
    (OSError, httpx.NetworkError),
)


def _mapped(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    cls = next(mapped for source, mapped in _ERRORS if isinstance(exc, source))
    return cls(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, request=request)


def _credentials(url: httpx.URL) -> tuple[str, str | None]:
    """The URL without its credentials, and those as a Basic Authorization value (as httpx's client
    sends them; aiohttp refuses a URL with credentials beside an Authorization header)."""
    if not url.userinfo:
        return str(url), None
    token = base64.b64encode(f"{url.username}:{url.password}".encode()).decode("ascii")
    return str(url.copy_with(userinfo=b"")), f"Basic {token}"


class _Body(httpx.AsyncByteStream):
    """An aiohttp response body, read as httpx reads a stream; closing it frees the connection
    (kept alive when the body was read to its end)."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _mapped(exc, self._request) from exc

    async def aclose(self) -> None:
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests over one aiohttp session: at most ``connections`` at once, TLS by
    ``tls``, addresses from ``resolver``, no cookies, no proxies from the environment, no
    redirects, bodies left encoded (httpx decodes them as for its own transports)."""

    def __init__(
        self,
        *,
        tls: ssl.SSLContext,
        connections: int,
        resolver: aiohttp.abc.AbstractResolver | None = None,
        keepalive: float = 15.0,
    ) -> None:
        self._tls = tls
        self._connections = connections  # 0: no bound
        self._resolver = resolver  # None: the system's, with aiohttp's DNS cache
        self._keepalive = keepalive  # seconds an idle connection is kept
        self._session: aiohttp.ClientSession | None = None  # made in the event loop, on first use

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._connections,
                ssl=self._tls,
                resolver=self._resolver,
                use_dns_cache=self._resolver is None,
                keepalive_timeout=self._keepalive,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                trust_env=False,
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        limits = request.extensions.get("timeout") or {}
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=limits.get("pool"),  # waiting for a pooled connection, connecting included
            sock_connect=limits.get("connect"),
            sock_read=limits.get("read"),
        )
        headers = [(key.decode("latin-1"), value.decode("latin-1")) for key, value in request.headers.raw]
        url, authorization = _credentials(request.url)
        if authorization is not None and "authorization" not in request.headers:
            headers.append(("Authorization", authorization))
        body = await request.aread()
        try:
            response = await self._client().request(
                request.method,
                url,
                headers=headers,
                data=body or None,
                timeout=timeout,
                allow_redirects=False,
                skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _mapped(exc, request) from exc
        return httpx.Response(
            status_code=response.status,
            headers=list(response.raw_headers),
            stream=_Body(response, request),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode()},
            request=request,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
