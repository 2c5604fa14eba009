"""A small reverse proxy in front of the real API server, for the faults it cannot produce on
demand: 429 with ``Retry-After``, 5xx, 403, latency, and a watch cut with ``410 Gone``.

Herald talks plain HTTP to the proxy with a bearer token; the proxy passes the token on over TLS
to kube-apiserver, so authentication and RBAC stay the real server's. Rules match a method and a
path pattern and fire a set number of times; everything else streams through untouched (watches
included).
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host"}
GONE = {
    "type": "ERROR",
    "object": {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": "too old resource version (injected by the test proxy)",
        "reason": "Expired",
        "code": 410,
    },
}


@dataclass
class Rule:
    """Answer ``status`` (or cut a watch with 410) to requests matching ``method`` and ``path``."""

    method: str
    path: str  # a regular expression searched in the path
    status: int = 0  # 0: pass through (after ``delay``)
    retry_after: str | None = None
    delay: float = 0.0
    watch_gone: bool = False
    times: int = 1  # how many requests it fires on; -1: always
    fired: int = 0

    def matches(self, request: web.Request) -> bool:
        if self.times == 0 or request.method != self.method:
            return False
        if self.watch_gone != (request.query.get("watch") in ("true", "1")):
            return False
        return re.search(self.path, request.path) is not None


@dataclass
class FaultProxy:
    upstream: str
    ca_pem: bytes
    rules: list[Rule] = field(default_factory=list)
    seen: list[tuple[str, str]] = field(default_factory=list)  # (method, path) of every request
    url: str = ""
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None

    def add(self, rule: Rule) -> Rule:
        self.rules.append(rule)
        return rule

    async def start(self) -> str:
        context = ssl.create_default_context(cadata=self.ca_pem.decode())
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context), timeout=aiohttp.ClientTimeout(total=None)
        )
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # Open watch streams must not hold a stop up for aiohttp's default minute.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()  # ends the streams passed through first
        if self._runner is not None:
            await self._runner.cleanup()

    def _rule_for(self, request: web.Request) -> Rule | None:
        for rule in self.rules:
            if rule.matches(request):
                rule.fired += 1
                if rule.times > 0:
                    rule.times -= 1
                return rule
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.path))
        rule = self._rule_for(request)
        if rule is not None:
            if rule.delay:
                await asyncio.sleep(rule.delay)
            if rule.watch_gone:
                return web.Response(text=json.dumps(GONE) + "\n", content_type="application/json")
            if rule.status:
                headers = {"Retry-After": rule.retry_after} if rule.retry_after else {}
                body = {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "message": f"injected by the test proxy: {rule.status}",
                    "reason": "TooManyRequests" if rule.status == 429 else "InternalError",
                    "code": rule.status,
                }
                return web.json_response(body, status=rule.status, headers=headers)
        return await self._forward(request)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        body = await request.read()
        async with self._session.request(
            request.method,
            self.upstream + request.rel_url.raw_path_qs,
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as upstream:
            response = web.StreamResponse(
                status=upstream.status,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS},
            )
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except (ConnectionResetError, aiohttp.ClientError):
                pass  # the client went away (a watch it stopped): nothing to pass on
            return response
