"""One delivery attempt over HTTP: the only module that opens a socket to a receiver.

``DeliveryClient.send`` never raises for a delivery failure: whatever happens ends as an
``AttemptResult``, whose verdict the dispatcher turns into a retry, a pause or a record.
The pure policies it applies live elsewhere: ``egress`` (where we may connect), ``signing``
(Standard Webhooks headers), ``retry`` (what a status means), ``redact`` (what may be shown).

Outcomes::

    a response arrived ─── retry.classify_status
    │   2xx             SUCCESS
    │   3xx             PERMANENT  Redirect   "Redirect not followed: HTTP 301"
    │   410             GONE       Gone       "HTTP 410"
    │   408, 429, 5xx   RETRY      HTTPError  "HTTP 503"  (Retry-After parsed)
    │   other 4xx       PERMANENT  HTTPError  "HTTP 404"
    │
    DeliveryError (reason, error)        raised inside an attempt, returned by send()
    ├── PermanentError  PERMANENT    no attempt will do better until the spec or policy changes
    │   ├── EgressDenied             refused scheme, or every address of the host denied
    │   └── InvalidURL               httpx cannot parse the URL
    └── TransientError  RETRY        the network, the receiver or a Secret may get better
            Timeout                  connect/read/write timeout, or the whole-attempt deadline
            ConnectError             refused, unreachable, name not resolved
            TLSError                 handshake or certificate verification failed
            NetworkError, ProtocolError, TransportError
            InvalidCA, InvalidSecret, SigningError   a Secret's value is unusable (re-read per attempt)

Egress is judged on the address actually connected to: ``PolicedResolver`` resolves the host
itself, once per connection, checks every candidate and hands the connection only the allowed
IP addresses, so no second resolution (DNS rebinding) can swap the address after the check; an
IP literal is judged before the request. TLS still verifies the URL's hostname (aiohttp passes
it as the server name). Requests are httpx's, sent straight to an ``AiohttpTransport``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import ipaddress
import os
import re
import socket
import ssl
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import aiohttp
import aiohttp.abc
import certifi
import httpx

from herald.egress import Address, denial_reason, scheme_error
from herald.http_client import AiohttpTransport
from herald.redact import redact_url, scrub
from herald.retry import AttemptResult, Verdict, classify_status, parse_retry_after
from herald.settings import Settings
from herald.signing import signature_headers

__all__ = [
    "CA_CLIENT_CACHE_SIZE",
    "DeliveryClient",
    "DeliveryError",
    "EgressDenied",
    "OutgoingRequest",
    "PermanentError",
    "PolicedResolver",
    "Resolver",
    "SystemResolver",
    "TransientError",
    "Unresolvable",
]

# Receivers behind private CAs each get a connection pool; this bounds how many stay open.
CA_CLIENT_CACHE_SIZE = 32
# Idle connections are kept this long: below Node.js's 5 s server keep-alive default, so we
# rarely reuse a connection the receiver is closing, yet a burst of events shares one.
KEEPALIVE_EXPIRY = 4.0
# Header values must be visible ASCII (RFC 9110); anything else would be refused or, worse,
# echoed by the HTTP library in an error message.
_HEADER_VALUE = re.compile(r"[\x20-\x7e\t]*")
_DEFAULT_TEXT: dict[type[BaseException], str] = {
    httpx.ConnectTimeout: "connect timed out",
    httpx.ReadTimeout: "read timed out",
    httpx.WriteTimeout: "write timed out",
    httpx.PoolTimeout: "no free connection in time",
}


# ---------------------------------------------------------------- values


@dataclass(frozen=True, kw_only=True)
class OutgoingRequest:
    """One delivery to make; its repr shows the redacted URL and never a secret."""

    url: str
    body: bytes
    content_type: str
    payload_id: str
    headers: tuple[tuple[str, str], ...] = ()  # the format's own (CloudEvents, a CUSTOM template's)
    secret: str | None = None
    signing_keys: tuple[str, ...] = ()
    ca_pem: str | None = None

    def __repr__(self) -> str:
        return (
            f"OutgoingRequest(url={redact_url(self.url)!r}, payload_id={self.payload_id!r}, "
            f"content_type={self.content_type!r}, body=<{len(self.body)} bytes>, "
            f"secret={'***' if self.secret else None}, signing_keys=<{len(self.signing_keys)}>, "
            f"ca_pem={'<set>' if self.ca_pem else None})"
        )

    def secrets(self) -> tuple[str, ...]:
        """Everything that must never appear in an error message."""
        return (self.url, self.secret or "", *self.signing_keys)


# ---------------------------------------------------------------- errors


class DeliveryError(Exception):
    """A failed attempt; ``send`` returns it as an AttemptResult and never lets it out."""

    verdict: ClassVar[Verdict]

    def __init__(self, reason: str, error: str) -> None:
        super().__init__(error)
        self.reason = reason
        self.error = error


class TransientError(DeliveryError):
    verdict = Verdict.RETRY


class PermanentError(DeliveryError):
    verdict = Verdict.PERMANENT


class EgressDenied(PermanentError):
    """Raised from inside the connection, so httpx never opens a socket to a denied address."""

    def __init__(self, why: str) -> None:
        super().__init__("EgressDenied", f"EgressDenied: {why}")


# ---------------------------------------------------------------- resolution and egress


class Resolver(Protocol):
    async def resolve(self, host: str, port: int) -> list[str]:
        """IP addresses (as text) for ``host``, in preference order."""
        ...


class SystemResolver:
    """The operating system's resolver, off the event loop."""

    async def resolve(self, host: str, port: int) -> list[str]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(str(info[4][0]) for info in infos))


class Unresolvable(OSError):
    """The receiver's host has no address: said as the resolver said it, not as aiohttp wraps it."""


class PolicedResolver(aiohttp.abc.AbstractResolver):
    """Resolves a receiver's host and hands the connection only the addresses the egress policy
    allows, so the address judged is the address connected to (DNS rebinding cannot slip past).

    aiohttp skips the resolver for an IP literal: ``DeliveryClient`` judges those before a request.
    Each new connection resolves afresh (the connection keeps no DNS cache).
    """

    def __init__(self, settings: Settings, *, resolver: Resolver) -> None:
        self._settings = settings
        self._resolver = resolver

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        try:
            async with asyncio.timeout(self._settings.connect_timeout):
                answers = await self._resolver.resolve(host, port)
        except TimeoutError as exc:
            raise aiohttp.ConnectionTimeoutError(f"resolving {host} timed out") from exc
        except OSError as exc:
            raise Unresolvable(f"cannot resolve {host}: {exc.strerror or exc}") from exc
        candidates: list[Address] = []
        for answer in answers:
            with contextlib.suppress(ValueError):
                candidates.append(ipaddress.ip_address(answer))
        if not candidates:
            raise Unresolvable(f"cannot resolve {host}: no address")
        allowed: list[Address] = []
        denials: list[str] = []
        for candidate in candidates:
            why = denial_reason(candidate, self._settings)
            if why is None:
                allowed.append(candidate)
            else:
                denials.append(why)
        if not allowed:
            raise EgressDenied(denials[0])
        return [
            aiohttp.abc.ResolveResult(
                hostname=host,
                host=str(address),
                port=port,
                family=socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in allowed
        ]

    async def close(self) -> None:
        return None


def _literal_denial(host: str, settings: Settings) -> str | None:
    """Why the egress policy refuses ``host`` when it is an IP literal (None: allowed, or a name)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return denial_reason(address, settings)


# ---------------------------------------------------------------- the client


@dataclass
class _Pooled:
    """A cached connection pool and how many attempts are using it right now."""

    transport: httpx.AsyncBaseTransport
    users: int = 0


@dataclass
class _Received:
    """What arrived before the attempt ended, however it ended."""

    status: int | None = None
    retry_after: str | None = None
    excerpt: bytearray = field(default_factory=bytearray)


class DeliveryClient:
    """Makes attempts over pooled connections: one shared pool, one per private CA bundle."""

    def __init__(self, settings: Settings, *, resolver: Resolver | None = None, user_agent: str) -> None:
        self._settings = settings
        self._user_agent = user_agent
        self._resolver = PolicedResolver(
            settings, resolver=resolver if resolver is not None else SystemResolver()
        )
        self._shared = _Pooled(self._transport(_ssl_context(None)))
        timeout = httpx.Timeout(settings.delivery_timeout, connect=settings.connect_timeout)
        self._extensions = {"timeout": timeout.as_dict()}
        self._by_ca: OrderedDict[str, _Pooled] = OrderedDict()
        self._retired: list[_Pooled] = []

    async def send(self, request: OutgoingRequest, *, now: datetime.datetime | None = None) -> AttemptResult:
        """Make one attempt; ``now`` stamps the signature (a fresh timestamp on every attempt)."""
        when = now if now is not None else datetime.datetime.now(datetime.UTC)
        if when.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        started = time.monotonic()
        received = _Received()
        try:
            status = await self._attempt(request, when=when, received=received)
        except DeliveryError as failure:
            return AttemptResult(
                verdict=failure.verdict,
                http_status=None,
                error=scrub(failure.error, request.secrets()),
                reason=failure.reason,
                retry_after=None,
                duration_ms=_elapsed_ms(started),
                response_excerpt=b"",
            )
        verdict = classify_status(status)
        reason, error = _status_reason(status, verdict)
        return AttemptResult(
            verdict=verdict,
            http_status=status,
            error=error,
            reason=reason,
            retry_after=parse_retry_after(received.retry_after, now=when)
            if verdict is Verdict.RETRY
            else None,
            duration_ms=_elapsed_ms(started),
            response_excerpt=bytes(received.excerpt),
        )

    async def aclose(self) -> None:
        pooled = [self._shared, *self._by_ca.values(), *self._retired]
        self._by_ca.clear()
        self._retired.clear()
        for entry in pooled:
            await entry.transport.aclose()

    # ------------------------------------------------------------ one attempt

    async def _attempt(
        self, request: OutgoingRequest, *, when: datetime.datetime, received: _Received
    ) -> int:
        """The response status, with ``received`` filled; DeliveryError for any failure before it.

        Once a status has arrived it decides the outcome: a body that fails or stalls mid-read
        keeps what was read (the receiver has answered; retrying would only duplicate).
        """
        try:
            url = httpx.URL(request.url)
        except httpx.InvalidURL as exc:
            raise PermanentError("InvalidURL", f"InvalidURL: {exc}") from exc
        refused = scheme_error(request.url, self._settings)
        if refused is not None:
            raise EgressDenied(refused)
        if not url.host:
            raise PermanentError("InvalidURL", "InvalidURL: the URL has no host")
        denied = _literal_denial(url.host, self._settings)
        if denied is not None:
            raise EgressDenied(denied)
        headers = self._headers(request, when=when)
        limit = self._settings.max_response_bytes
        # Straight to the connection pool: no redirects, cookies, auth flows or proxies in between.
        outgoing = httpx.Request(
            "POST", url, content=request.body, headers=headers, extensions=self._extensions
        )
        async with self._lease(request.ca_pem) as transport:
            try:
                async with asyncio.timeout(self._settings.delivery_timeout):
                    response = await transport.handle_async_request(outgoing)
                    try:
                        received.status = response.status_code
                        received.retry_after = response.headers.get("Retry-After")
                        async for chunk in response.aiter_raw():
                            received.excerpt += chunk[: limit - len(received.excerpt)]
                            if len(received.excerpt) >= limit:
                                break  # leaving unread bytes closes the connection instead of pooling it
                    finally:
                        await response.aclose()
            except (httpx.HTTPError, httpx.InvalidURL, OSError, TimeoutError) as exc:
                if received.status is None:
                    raise _wrapped(exc, settings=self._settings) from exc
        if received.status is None:  # httpx yields a response or raises
            raise TransientError("NoResponse", "NoResponse: the attempt ended without a response")
        return received.status

    def _headers(self, request: OutgoingRequest, *, when: datetime.datetime) -> dict[str, str]:
        headers = {
            **dict(request.headers),  # the models refuse the names set below (RESERVED_HEADERS)
            "Content-Type": request.content_type,
            "Accept": "*/*",
            "User-Agent": self._user_agent,
            # Raw bytes are what per-kind checks read, and a compressed body could expand unbounded.
            "Accept-Encoding": "identity",
        }
        if request.secret:
            if not _HEADER_VALUE.fullmatch(request.secret):
                raise TransientError(
                    "InvalidSecret",
                    "InvalidSecret: the secretRef value is not a valid header value"
                    " (control or non-ASCII characters)",
                )
            headers["Qovery-Secret"] = headers["Qovery-Signature"] = request.secret
        if request.signing_keys:
            try:
                headers |= signature_headers(
                    msg_id=request.payload_id, timestamp=when, body=request.body, keys=request.signing_keys
                )
            except ValueError as exc:
                raise TransientError(
                    "SigningError", f"SigningError: cannot sign the delivery: {exc}"
                ) from exc
        return headers

    # ------------------------------------------------------------ connection pools

    def _transport(self, context: ssl.SSLContext) -> httpx.AsyncBaseTransport:
        # Nothing from the environment: a proxy would connect for us, past the egress policy.
        return AiohttpTransport(
            tls=context,
            connections=0,  # the dispatcher bounds attempts in flight
            resolver=self._resolver,
            keepalive=KEEPALIVE_EXPIRY,
        )

    @contextlib.asynccontextmanager
    async def _lease(self, ca_pem: str | None) -> AsyncIterator[httpx.AsyncBaseTransport]:
        entry = self._shared if ca_pem is None else self._ca_pool(ca_pem)
        entry.users += 1
        try:
            yield entry.transport
        finally:
            entry.users -= 1
            await self._close_retired()

    def _ca_pool(self, ca_pem: str) -> _Pooled:
        """The cached pool trusting ``ca_pem`` too; past the bound the least recently used retires."""
        key = hashlib.sha256(ca_pem.encode()).hexdigest()
        entry = self._by_ca.get(key)
        if entry is not None:
            self._by_ca.move_to_end(key)
            return entry
        entry = _Pooled(self._transport(_ssl_context(ca_pem)))
        self._by_ca[key] = entry
        while len(self._by_ca) > CA_CLIENT_CACHE_SIZE:
            self._retired.append(self._by_ca.popitem(last=False)[1])
        return entry

    async def _close_retired(self) -> None:
        """Close evicted pools once no attempt is using them (closing one mid-attempt would break it)."""
        idle = [entry for entry in self._retired if entry.users == 0]
        self._retired = [entry for entry in self._retired if entry.users > 0]
        for entry in idle:
            await entry.transport.aclose()


def _ssl_context(ca_pem: str | None) -> ssl.SSLContext:
    """Verification always on: certifi's roots, plus the webhook's own CA when it has one."""
    context = ssl.create_default_context(cafile=certifi.where())
    if ca_pem is not None:
        try:
            context.load_verify_locations(cadata=ca_pem)
        except (ssl.SSLError, ValueError, TypeError) as exc:
            raise TransientError(
                "InvalidCA", "InvalidCA: the caSecretRef value is not a PEM certificate bundle"
            ) from exc
    return context


def _status_reason(status: int, verdict: Verdict) -> tuple[str | None, str | None]:
    if verdict is Verdict.SUCCESS:
        return None, None
    if verdict is Verdict.GONE:
        return "Gone", f"HTTP {status}"
    if 300 <= status <= 399:
        return "Redirect", f"Redirect not followed: HTTP {status}"
    return "HTTPError", f"HTTP {status}"


def _elapsed_ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def _wrapped(exc: Exception, *, settings: Settings) -> DeliveryError:
    """Our error for an httpx, OS or deadline failure (the message is scrubbed by the caller)."""
    if isinstance(exc, TimeoutError):
        return TransientError(
            "Timeout", f"Timeout: no complete answer within {settings.delivery_timeout:g} s"
        )
    detail = str(exc) or _DEFAULT_TEXT.get(type(exc), "no detail")
    name = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return TransientError("Timeout", f"{name}: {detail}")
    for cause in _causes(exc):
        if isinstance(cause, Unresolvable):
            return TransientError("ConnectError", f"ConnectError: {cause}")
        if isinstance(cause, aiohttp.ClientError):
            continue  # aiohttp's wrapper (some subclass ssl's errors): the original is further down
        if isinstance(cause, ssl.SSLCertVerificationError):
            return TransientError("TLSError", f"TLSError: certificate verify failed: {cause.verify_message}")
        if isinstance(cause, ssl.SSLError):
            return TransientError("TLSError", f"TLSError: {cause.reason or cause}")
    if isinstance(exc, httpx.ConnectError | OSError):
        # The socket's errno ("Connection refused") says more than anyio's "All connection attempts failed".
        errnos = [c.errno for c in _causes(exc) if type(c) is not socket.gaierror and isinstance(c, OSError)]
        known = [os.strerror(number) for number in errnos if number]
        return TransientError("ConnectError", f"ConnectError: {known[-1] if known else detail}")
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return PermanentError("InvalidURL", f"InvalidURL: {detail}")
    if isinstance(exc, httpx.NetworkError):
        return TransientError("NetworkError", f"{name}: {detail}")
    if isinstance(exc, httpx.ProtocolError):
        return TransientError("ProtocolError", f"{name}: {detail}")
    return TransientError("TransportError", f"{name}: {detail}")


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and what it was raised from, outermost first."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
