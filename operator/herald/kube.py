"""Herald's Kubernetes API client: the calls it makes outside kopf's own watching.

kopf watches and posts Events; Herald also writes the status of *other* objects (every webhook a
delivery touches, from background workers), records the notified ledger on Environments, reads
Secrets, Namespaces and its Lease, lists its webhooks at startup, and keeps its Delivery objects
(``create``/``get``/``patch``/``delete``, paginated ``pages`` and a ``watch`` stream on any of
Herald's own kinds). Each request is built from an entry of ``herald.rbac.HERALD_CALLS``, so the
client cannot make a call RBAC does not grant.

Like kopf's own client, failures are typed (``ApiNotFound``, ``ApiConflict``, ``ApiGone``,
``ApiTooManyRequests``, ``ApiServerError``, ``ApiForbidden``, ``ApiUnreachable``...), each chained
to the httpx error it came from, and one retry policy (``Backoff``) retries what is transient:
429, 5xx, timeouts and connection errors, waiting at least what ``Retry-After`` asks. Callers pick
how patient a call is (``NO_RETRY`` for the Lease, which keeps its own deadlines; ``UNTIL_STORED``
for a status that must land) and never retry themselves.

Credentials and TLS come from the connection kopf resolved at login, passed in as an
``ApiConnection``; a 401 logs in again once (a rotated service-account token).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import certifi
import httpx

from herald import USER_AGENT
from herald.http_client import AiohttpTransport
from herald.rbac import ApiCall, find
from herald.retry import parse_retry_after

__all__ = [
    "API_CONNECTIONS",
    "API_GROUP",
    "API_VERSION",
    "DEFAULT_BACKOFF",
    "NO_RETRY",
    "TRANSIENT",
    "UNTIL_STORED",
    "ApiClientError",
    "ApiConflict",
    "ApiConnection",
    "ApiError",
    "ApiForbidden",
    "ApiGone",
    "ApiInvalid",
    "ApiNotFound",
    "ApiServerError",
    "ApiTooManyRequests",
    "ApiUnauthorized",
    "ApiUnreachable",
    "Backoff",
    "KubeClient",
    "Page",
    "Secret",
    "error_for",
]

logger = logging.getLogger("herald.kube")

API_GROUP = "herald.dev"
API_VERSION = "v1alpha1"
API_CONNECTIONS = 16
_HERALD = f"{API_GROUP}/{API_VERSION}"
_LIST_PAGE = 500  # objects per page when Herald lists its own kinds
_MERGE = {"Content-Type": "application/merge-patch+json"}
_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# Metadata only (names, labels, annotations, uids): the server drops spec and status, and one that
# cannot (or a proxy that strips the parameter) answers the plain JSON listed second.
_AS_METADATA_LIST = {
    "Accept": "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
}
_AS_METADATA = {"Accept": "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"}
_WATCH_EVENTS = frozenset({"ADDED", "MODIFIED", "DELETED", "BOOKMARK"})
_WATCH_SLACK = 30.0  # seconds a watch may stay silent past its timeoutSeconds before it is dead


@dataclass(frozen=True, kw_only=True)
class ApiConnection:
    """Where the API server is and how to talk to it, as kopf's login resolved it."""

    server: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # Authorization
    tls: ssl.SSLContext | None = field(default=None, repr=False)  # None: the system's CAs


# ---------------------------------------------------------------- errors


class ApiError(Exception):
    """The API server refused a call (``status``) or could not be reached (``status`` None)."""

    def __init__(
        self, message: str, *, status: int | None = None, reason: str = "", retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after  # seconds the server asked to wait, if it did


class ApiUnreachable(ApiError):
    """No answer: connection refused or reset, TLS failure, timeout, pool exhausted."""


class ApiClientError(ApiError):
    """4xx."""


class ApiUnauthorized(ApiClientError):
    """401 even after logging in again, or no credentials at all."""


class ApiForbidden(ApiClientError):
    """403: RBAC does not grant the call."""


class ApiNotFound(ApiClientError):
    """404."""


class ApiConflict(ApiClientError):
    """409: a stale ``resourceVersion`` or an object that already exists."""


class ApiGone(ApiClientError):
    """410: a ``continue`` token or a watch's resourceVersion is too old."""


class ApiInvalid(ApiClientError):
    """422: the server's validation refused the body."""


class ApiTooManyRequests(ApiClientError):
    """429: API Priority and Fairness or a rate limit; retried after ``retry_after``."""


class ApiServerError(ApiError):
    """5xx."""


# What a later try may cure: the one list the retry policy consults.
TRANSIENT: tuple[type[ApiError], ...] = (ApiUnreachable, ApiTooManyRequests, ApiServerError)

_BY_STATUS: Mapping[int, type[ApiError]] = {
    401: ApiUnauthorized,
    403: ApiForbidden,
    404: ApiNotFound,
    409: ApiConflict,
    410: ApiGone,
    422: ApiInvalid,
    429: ApiTooManyRequests,
}


def error_for(response: httpx.Response, *, now: datetime.datetime) -> ApiError:
    """The typed error for a non-2xx answer, with the server's reason and message (a Status)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    status = body if isinstance(body, Mapping) and body.get("kind") == "Status" else {}
    return _status_error(
        response.status_code,
        status,
        phrase=response.reason_phrase,
        text=response.text,
        retry_after=parse_retry_after(response.headers.get("Retry-After"), now=now),
    )


def _status_error(
    code: int, status: Mapping[str, Any], *, phrase: str, text: str, retry_after: float | None
) -> ApiError:
    """The typed error for a Status: an answer's body, or the object of a watch's ERROR event."""
    cls = _BY_STATUS.get(code) or (
        ApiClientError if 400 <= code < 500 else ApiServerError if 500 <= code < 600 else ApiError
    )
    reason = str(status.get("reason") or "")
    message = str(status.get("message") or "") or text[:200]
    details = status.get("details")
    if retry_after is None and isinstance(details, Mapping):
        seconds = details.get("retryAfterSeconds")
        retry_after = float(seconds) if isinstance(seconds, int | float) else None
    return cls(
        f"Kubernetes API answered {code} {reason or phrase}: {message[:200]}",
        status=code,
        reason=reason,
        retry_after=retry_after,
    )


# ---------------------------------------------------------------- the retry policy


@dataclass(frozen=True)
class Backoff:
    """Delays before each retry of a transient failure; ``forever`` keeps retrying at the last one.

    A ``Retry-After`` longer than the scheduled delay wins (capped at ``retry_after_max``, so a
    server cannot park Herald for an hour).
    """

    delays: tuple[float, ...]
    forever: bool = False
    retry_after_max: float = 60.0

    def delay(self, retry: int, retry_after: float | None) -> float | None:
        """Seconds before retry number ``retry`` (from 1); None when the policy gives up."""
        if retry < 1:
            raise ValueError(f"retries count from 1, got {retry}")
        if retry > len(self.delays) and not (self.forever and self.delays):
            return None
        scheduled = self.delays[min(retry, len(self.delays)) - 1]
        if retry_after is None:
            return scheduled
        return max(scheduled, min(retry_after, self.retry_after_max))


DEFAULT_BACKOFF = Backoff((0.5, 1.0, 2.0, 5.0, 10.0))  # about 20 s, then the error is the caller's
NO_RETRY = Backoff(())
UNTIL_STORED = Backoff((0.5, 1.0, 2.0, 5.0, 10.0, 30.0), forever=True)


# ---------------------------------------------------------------- the client


class Page(list[dict[str, Any]]):
    """One page of a list: its items, and the list's resourceVersion (the same on every page of
    one list; a watch from it sees every change after the list). A list, so callers that only
    want the items iterate it."""

    def __init__(self, items: Iterable[dict[str, Any]], *, resource_version: str | None) -> None:
        super().__init__(items)
        self.resource_version = resource_version


@dataclass(frozen=True)
class Secret:
    data: Mapping[str, str]  # decoded; a key that is not UTF-8 text is left out
    labels: Mapping[str, str]


@dataclass(frozen=True)
class _Session:
    """Where requests go once logged in: the server, the credentials, the connection pool."""

    server: str
    headers: Mapping[str, str]
    transport: httpx.AsyncBaseTransport


class KubeClient:
    """One pooled connection to the API server."""

    def __init__(
        self,
        login: Callable[[], Awaitable[ApiConnection]],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._login = login
        self._transport = transport  # tests: httpx.MockTransport
        self._sleep = sleep
        self._session: _Session | None = None
        self._connecting = asyncio.Lock()  # concurrent first calls log in once, share one pool

    async def _current(self) -> _Session:
        async with self._connecting:
            if self._session is None:
                self._session = await self._connect()
            return self._session

    async def _connect(self) -> _Session:
        try:
            conn = await self._login()
        except Exception as exc:  # kopf.LoginError, an unreadable kubeconfig...
            raise ApiUnauthorized(f"cannot log in to the Kubernetes API: {exc}") from exc
        # A burst queues for a few kept-alive connections instead of opening (and closing) a hundred.
        transport = self._transport or AiohttpTransport(
            tls=conn.tls if conn.tls is not None else ssl.create_default_context(cafile=certifi.where()),
            connections=API_CONNECTIONS,
        )
        headers = {"User-Agent": USER_AGENT, **conn.headers}
        return _Session(server=conn.server.rstrip("/"), headers=headers, transport=transport)

    async def _once(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        timeout: httpx.Timeout = _TIMEOUT,
        stream: bool = False,
    ) -> httpx.Response:
        """One request (logging in again once on a 401), its failure typed.

        The request goes to the transport as it is built: no client in between (merging URLs and
        headers, redirects, auth flows, cookies) that Herald's calls have no use for.
        With ``stream`` the body of a 2xx answer is left to the caller to read and close.
        """
        for attempt in (1, 2):
            session = await self._current()
            request = httpx.Request(
                method,
                session.server + path,
                params=params,
                headers={**session.headers, **(headers or {})},
                json=json,
                extensions={"timeout": timeout.as_dict()},
            )
            try:
                response = await session.transport.handle_async_request(request)
                if not stream or response.is_error:
                    try:
                        await response.aread()  # the whole answer, or the Status for the typed error
                    finally:
                        await response.aclose()
            except httpx.TransportError as exc:
                raise ApiUnreachable(f"Kubernetes API unreachable: {type(exc).__name__}: {exc}") from exc
            except httpx.HTTPError as exc:
                raise ApiError(f"Kubernetes API call failed: {type(exc).__name__}: {exc}") from exc
            if response.status_code == 401 and attempt == 1:
                await self.aclose()
                continue
            if response.is_error:
                cause = httpx.HTTPStatusError(
                    f"{response.status_code} for {method} {path}", request=request, response=response
                )
                raise error_for(response, now=datetime.datetime.now(tz=datetime.UTC)) from cause
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    async def _call(
        self,
        call: ApiCall,
        *,
        namespace: str | None = None,
        name: str | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        body: Callable[[], Any] | None = None,
        read: bool = True,
    ) -> Any:
        """Make one call of the RBAC table, retrying transient failures by ``backoff``.

        ``body``, when given, renders the JSON body afresh for each try (a retry sends the newest).
        ``read`` False: the answer (the whole object, for a write) is not decoded; None is returned.
        """
        method = _METHODS[call.verb]
        path = _path(call, namespace, name)
        headers = {**(headers or {}), **(_MERGE if call.verb == "patch" else {})}
        retry = 0
        while True:
            try:
                payload = body() if body is not None else json
                response = await self._once(method, path, params=params, json=payload, headers=headers)
            except TRANSIENT as exc:
                retry += 1
                delay = backoff.delay(retry, exc.retry_after)
                if delay is None:
                    raise
                logger.warning("%s %s failed (%s); retry %d in %.1fs", method, path, exc, retry, delay)
                await self._sleep(delay)
                continue
            return response.json() if read and response.content else None

    # ------------------------------------------------------------ Herald's own kinds

    async def create(
        self,
        plural: str,
        namespace: str | None,
        body: Mapping[str, Any],
        *,
        backoff: Backoff = DEFAULT_BACKOFF,
    ) -> None:
        """Create an object; ApiConflict when the name is taken (AlreadyExists).

        A retry after an answer that was lost may meet the object its first try created: callers
        name objects deterministically, so a conflict means "stored", whoever stored it.
        """
        await self._call(
            find(_HERALD, plural, "create"), namespace=namespace, json=body, backoff=backoff, read=False
        )

    async def get(
        self, plural: str, namespace: str | None, name: str, *, backoff: Backoff = DEFAULT_BACKOFF
    ) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        call = find(_HERALD, plural, "get")
        try:
            found: dict[str, Any] = await self._call(call, namespace=namespace, name=name, backoff=backoff)
        except ApiNotFound:
            return None
        return found

    async def patch(
        self,
        plural: str,
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any],
        *,
        backoff: Backoff = DEFAULT_BACKOFF,
    ) -> None:
        """A JSON merge patch of the object itself (not its status); ApiNotFound when it is gone."""
        call = find(_HERALD, plural, "patch")
        await self._call(call, namespace=namespace, name=name, json=patch, backoff=backoff, read=False)

    async def delete(
        self, plural: str, namespace: str | None, name: str, *, backoff: Backoff = DEFAULT_BACKOFF
    ) -> bool:
        """Delete the object; False when it was already gone."""
        call = find(_HERALD, plural, "delete")
        try:
            await self._call(call, namespace=namespace, name=name, backoff=backoff, read=False)
        except ApiNotFound:
            return False
        return True

    async def pages(
        self,
        plural: str,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        metadata_only: bool = False,
        cached: bool = False,
    ) -> AsyncIterator[Page]:
        """Every object of a kind (in one namespace, or all), one ``Page`` per request of 500.

        With ``metadata_only`` the server sends PartialObjectMetadata items (no spec or status); a
        server that ignores the request sends whole objects, which carry the same metadata.
        With ``cached`` (``resourceVersion=0``) the API server answers from its watch cache, maybe
        a moment old, instead of reading every object of the namespace from etcd to select a few;
        it may then ignore the page size and send everything at once, so only for small answers.
        Each page is retried by the default policy; an expired continue token raises ApiGone
        (the caller lists again from the start).
        """
        call = find(_HERALD, plural, "list")
        params = {"limit": str(_LIST_PAGE)}
        if label_selector:
            params["labelSelector"] = label_selector
        query = {**params, "resourceVersion": "0"} if cached else params
        headers = _AS_METADATA_LIST if metadata_only else None
        while True:
            body = await self._call(call, namespace=namespace, params=query, headers=headers) or {}
            meta = body.get("metadata") or {}
            version = meta.get("resourceVersion")
            yield Page(body.get("items") or (), resource_version=str(version) if version else None)
            token = meta.get("continue")
            if not token:
                return
            query = {**params, "continue": str(token)}  # a continued list names no resourceVersion

    async def watch(
        self,
        plural: str,
        namespace: str | None,
        *,
        resource_version: str | None,
        label_selector: str | None = None,
        metadata_only: bool = False,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """The changes to a kind after ``resource_version``, as (type, object) pairs: ADDED,
        MODIFIED, DELETED and BOOKMARK (an object carrying only the newest resourceVersion).

        Ends when the server closes the stream (after ``timeout_seconds``); a stream silent for
        longer than that is dead and raises ApiUnreachable. A resourceVersion too old for the
        server raises ApiGone (list again). Opening is tried once: the caller's loop re-watches.
        """
        call = find(_HERALD, plural, "watch")
        params = {
            "watch": "true",  # client-go's spelling: kube-apiserver reads "1" alike, kmock only this
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        if resource_version:
            params["resourceVersion"] = resource_version
        if label_selector:
            params["labelSelector"] = label_selector
        timeout = httpx.Timeout(30.0, connect=5.0, read=timeout_seconds + _WATCH_SLACK)
        headers = _AS_METADATA if metadata_only else None
        path = _path(call, namespace, None)
        response = await self._once("GET", path, params=params, headers=headers, timeout=timeout, stream=True)
        try:
            async for line in response.aiter_lines():
                if line.strip():
                    yield _watch_event(line)
        except httpx.TransportError as exc:
            raise ApiUnreachable(f"Kubernetes API watch broke off: {type(exc).__name__}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise ApiError(f"Kubernetes API watch failed: {type(exc).__name__}: {exc}") from exc
        finally:
            await response.aclose()

    # ------------------------------------------------------------ the calls

    async def patch_status(
        self, *, plural: str, namespace: str | None, name: str, status: Callable[[], Mapping[str, Any]]
    ) -> None:
        """Write a status, retrying transient failures until it is stored (``UNTIL_STORED``);
        ``status`` renders it for each try, so a retry writes the newest."""
        call = find(_HERALD, f"{plural}/status", "patch")
        await self._call(
            call,
            namespace=namespace,
            name=name,
            body=lambda: {"status": status()},
            backoff=UNTIL_STORED,
            read=False,
        )

    async def patch_annotations(
        self, *, plural: str, namespace: str | None, name: str, annotations: Mapping[str, str]
    ) -> None:
        await self.patch(plural, namespace, name, {"metadata": {"annotations": annotations}})

    async def list_uids(self, plural: str, namespace: str | None) -> set[str]:
        """The uids of every Herald object of a kind (in one namespace, or all)."""
        uids: set[str] = set()
        async for page in self.pages(plural, namespace, metadata_only=True):
            uids.update(str(uid) for item in page if (uid := (item.get("metadata") or {}).get("uid")))
        return uids

    async def probe(self, namespace: str | None) -> None:
        """A cheap list of one Webhook that proves the API server answers Herald (``/readyz``)."""
        call = find(f"{API_GROUP}/{API_VERSION}", "webhooks", "list")
        await self._call(call, namespace=namespace, params={"limit": "1"}, backoff=NO_RETRY)

    async def read_secret(self, namespace: str, name: str) -> Secret | None:
        """The Secret's decoded data and its labels, or None when it does not exist."""
        try:
            body = await self._call(find("v1", "secrets", "get"), namespace=namespace, name=name)
        except ApiNotFound:
            return None
        decoded: dict[str, str] = {}
        for key, value in (body.get("data") or {}).items():
            try:
                decoded[str(key)] = base64.b64decode(str(value), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                continue  # a key Herald cannot read is reported as missing by the caller
        return Secret(data=decoded, labels=_labels(body))

    async def read_namespace_labels(self, name: str) -> dict[str, str] | None:
        """No retry here: the flow holds only the ClusterWebhooks that need the labels and handles
        the Environment again on its own schedule, so the namespace's other webhooks never wait."""
        try:
            body = await self._call(find("v1", "namespaces", "get"), name=name, backoff=NO_RETRY)
        except ApiNotFound:
            return None
        return _labels(body)

    async def create_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        """A core/v1 Event (``kube_events.object_event``)."""
        await self._call(find("v1", "events", "create"), namespace=namespace, json=body, read=False)

    async def can_list(self, api_version: str, resource: str, namespace: str | None) -> None:
        """Raise unless Herald may list this kind here (ApiNotFound: the cluster does not serve it)."""
        call = find(api_version, resource, "list")
        await self._call(call, namespace=namespace, params={"limit": "1"}, backoff=NO_RETRY)

    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        """No retry: the elector keeps its own cadence and deadlines."""
        try:
            lease: dict[str, Any] = await self._call(
                find("coordination.k8s.io/v1", "leases", "get"),
                namespace=namespace,
                name=name,
                backoff=NO_RETRY,
            )
        except ApiNotFound:
            return None
        return lease

    async def write_lease(self, namespace: str, name: str, body: Mapping[str, Any], *, create: bool) -> bool:
        """Create or update the Lease; False when another writer got there first (409)."""
        verb = "create" if create else "patch"
        try:
            await self._call(
                find("coordination.k8s.io/v1", "leases", verb),
                namespace=namespace,
                name=None if create else name,
                json=body,
                backoff=NO_RETRY,
            )
        except ApiConflict:
            return False
        return True

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.transport.aclose()


_METHODS = {
    "get": "GET",
    "list": "GET",
    "create": "POST",
    "patch": "PATCH",
    "update": "PUT",
    "delete": "DELETE",
}


def _path(call: ApiCall, namespace: str | None, name: str | None) -> str:
    base = "/api/v1" if call.api_version == "v1" else f"/apis/{call.api_version}"
    plural, _, subresource = call.resource.partition("/")
    scope = f"/namespaces/{namespace}" if namespace else ""
    tail = f"/{name}" if name else ""
    return f"{base}{scope}/{plural}{tail}{'/' + subresource if subresource else ''}"


def _watch_event(line: str) -> tuple[str, dict[str, Any]]:
    """One line of a watch stream as (type, object); an ERROR event raises its typed error."""
    try:
        event = json.loads(line)
    except ValueError as exc:
        # A stream cut off mid-line ends with a fragment: the connection broke.
        raise ApiUnreachable(f"Kubernetes API watch broke off mid-event: {line[:200]!r}") from exc
    kind = event.get("type") if isinstance(event, dict) else None
    obj = event.get("object") if isinstance(event, dict) else None
    if not isinstance(obj, dict):
        raise ApiError(f"Kubernetes API sent an unreadable watch event: {line[:200]!r}")
    if kind == "ERROR":
        code = obj.get("code")
        raise _status_error(code if isinstance(code, int) else 500, obj, phrase="", text="", retry_after=None)
    if kind not in _WATCH_EVENTS:
        raise ApiError(f"Kubernetes API sent a watch event of unknown type {kind!r}")
    return str(kind), obj


def _labels(body: Any) -> dict[str, str]:
    labels = ((body or {}).get("metadata") or {}).get("labels") or {}
    return {str(k): str(v) for k, v in labels.items()}
