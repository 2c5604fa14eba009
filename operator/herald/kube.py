"""The few Kubernetes API calls Herald makes outside kopf's own handling.

kopf watches and patches the object a handler is handling; Herald also writes the status of
*other* objects (every webhook a delivery touches, from background workers) and reads Secrets
and Namespaces on demand. That is four verbs, so a small httpx client does it rather than a
second Kubernetes client library. Credentials come from the same login kopf uses (see
``handlers``), passed here as a plain ``ApiConnection``.

Errors: ``ApiError`` carries the HTTP status and the API server's ``reason``; a 404 on a read
is not an error but ``None``.
"""

from __future__ import annotations

import base64
import binascii
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from herald import USER_AGENT

__all__ = ["API_GROUP", "API_VERSION", "ApiConnection", "ApiError", "KubeClient"]

API_GROUP = "herald.dev"
API_VERSION = "v1alpha1"
_MERGE = {"Content-Type": "application/merge-patch+json"}
_LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
API_CONNECTIONS = 16
_LIST_PAGE = 500  # objects per page when Herald lists its own kinds at startup


@dataclass(frozen=True, kw_only=True)
class ApiConnection:
    server: str
    token: str | None = field(default=None, repr=False)
    ca_path: str | None = None
    ca_data: bytes | None = field(default=None, repr=False)
    cert_path: str | None = None
    key_path: str | None = None
    insecure: bool = False


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"Kubernetes API answered {status} {reason}: {message[:200]}")
        self.status = status
        self.reason = reason


def _ssl_context(conn: ApiConnection) -> ssl.SSLContext | bool:
    if conn.insecure:
        return False
    ctx = ssl.create_default_context(cafile=conn.ca_path)
    if conn.ca_data:
        ctx.load_verify_locations(cadata=conn.ca_data.decode())
    if conn.cert_path:
        ctx.load_cert_chain(conn.cert_path, conn.key_path)
    return ctx


class KubeClient:
    """One pooled connection to the API server, re-authenticated once on a 401."""

    def __init__(self, login: Callable[[], Awaitable[ApiConnection]]) -> None:
        self._login = login
        self._client: httpx.AsyncClient | None = None

    async def _connect(self) -> httpx.AsyncClient:
        conn = await self._login()
        headers = {"User-Agent": USER_AGENT}
        if conn.token:
            headers["Authorization"] = f"Bearer {conn.token}"
        return httpx.AsyncClient(
            base_url=conn.server,
            headers=headers,
            verify=_ssl_context(conn),
            timeout=httpx.Timeout(30.0, connect=5.0),
            # A burst queues for a few kept-alive connections instead of opening (and closing)
            # a hundred: httpcore scans every pooled connection on each request.
            limits=httpx.Limits(max_connections=API_CONNECTIONS, max_keepalive_connections=API_CONNECTIONS),
            trust_env=False,
        )

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        patch: bool = False,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        for attempt in (1, 2):
            if self._client is None:
                self._client = await self._connect()
            response = await self._client.request(
                method, path, json=json, params=params, headers=_MERGE if patch else None
            )
            if response.status_code == 401 and attempt == 1:
                await self._client.aclose()
                self._client = None
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _check(response: httpx.Response) -> None:
        if response.is_success:
            return
        try:
            body = response.json()
        except ValueError:
            body = {}
        reason = body.get("reason", "") if isinstance(body, Mapping) else ""
        message = body.get("message", "") if isinstance(body, Mapping) else ""
        raise ApiError(response.status_code, str(reason), str(message))

    @staticmethod
    def herald_path(plural: str, namespace: str | None, name: str, *, subresource: str = "") -> str:
        scope = f"/namespaces/{namespace}" if namespace else ""
        suffix = f"/{subresource}" if subresource else ""
        return f"/apis/{API_GROUP}/{API_VERSION}{scope}/{plural}/{name}{suffix}"

    async def patch_status(
        self, *, plural: str, namespace: str | None, name: str, status: Mapping[str, Any]
    ) -> None:
        path = self.herald_path(plural, namespace, name, subresource="status")
        self._check(await self._request("PATCH", path, json={"status": status}, patch=True))

    async def patch_annotations(
        self, *, plural: str, namespace: str | None, name: str, annotations: Mapping[str, str]
    ) -> None:
        path = self.herald_path(plural, namespace, name)
        self._check(
            await self._request("PATCH", path, json={"metadata": {"annotations": annotations}}, patch=True)
        )

    async def list_uids(self, plural: str, namespace: str | None) -> set[str]:
        """The uids of every Herald object of a kind (in one namespace, or all), page by page."""
        scope = f"/namespaces/{namespace}" if namespace else ""
        path = f"/apis/{API_GROUP}/{API_VERSION}{scope}/{plural}"
        uids: set[str] = set()
        params: dict[str, str] = {"limit": str(_LIST_PAGE)}
        while True:
            response = await self._request("GET", path, params=params)
            self._check(response)
            page = response.json()
            for item in page.get("items") or ():
                uid = (item.get("metadata") or {}).get("uid")
                if uid:
                    uids.add(str(uid))
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return uids
            params = {"limit": str(_LIST_PAGE), "continue": str(token)}

    async def probe(self, path: str) -> None:
        """A cheap read that proves the API server answers Herald (used by /readyz)."""
        self._check(await self._request("GET", path))

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """The Secret's decoded data, or None when it does not exist."""
        response = await self._request("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")
        if response.status_code == 404:
            return None
        self._check(response)
        data = response.json().get("data") or {}
        decoded: dict[str, str] = {}
        for key, value in data.items():
            try:
                decoded[str(key)] = base64.b64decode(str(value), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                continue  # a key Herald cannot read is reported as missing by the caller
        return decoded

    async def read_namespace_labels(self, name: str) -> dict[str, str] | None:
        response = await self._request("GET", f"/api/v1/namespaces/{name}")
        if response.status_code == 404:
            return None
        self._check(response)
        labels = (response.json().get("metadata") or {}).get("labels") or {}
        return {str(k): str(v) for k, v in labels.items()}

    async def create_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        """A core/v1 Event (about a cluster-scoped object: kopf posts the others)."""
        self._check(await self._request("POST", f"/api/v1/namespaces/{namespace}/events", json=body))

    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        response = await self._request("GET", f"{_LEASES.format(namespace=namespace)}/{name}")
        if response.status_code == 404:
            return None
        self._check(response)
        lease: dict[str, Any] = response.json()
        return lease

    async def write_lease(self, namespace: str, name: str, body: Mapping[str, Any], *, create: bool) -> bool:
        """Create or update the Lease; False when another writer got there first (409)."""
        base = _LEASES.format(namespace=namespace)
        if create:
            response = await self._request("POST", base, json=body)
        else:
            response = await self._request("PATCH", f"{base}/{name}", json=body, patch=True)
        if response.status_code == 409:
            return False
        self._check(response)
        return True

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def write_temp_pem(data: bytes) -> str:
    """kopf hands CA data as bytes; ssl wants a path for ``cafile`` on some platforms."""
    with tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False) as handle:
        handle.write(data)
        return handle.name
