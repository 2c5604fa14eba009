"""Receivers the security tests need beyond the shared one: on another loopback address (so an
egress allow-list can tell two receivers apart), over HTTPS with a private CA, and a resolver
whose answers the test writes (a hostname resolving to loopback, DNS rebinding)."""

from __future__ import annotations

import ssl

import trustme
from aiohttp import web

from herald.testing import Receiver

__all__ = ["HostedReceiver", "ScriptedResolver", "server_tls"]


def server_tls(ca: trustme.CA, *identities: str) -> ssl.SSLContext:
    """A server-side TLS context with a certificate ``ca`` issued for ``identities`` (names or IPs)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*identities).configure_cert(context)
    return context


class HostedReceiver(Receiver):
    """The shared recording receiver, listening on ``host`` and, given a context, over TLS."""

    def __init__(self, *, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        super().__init__()
        self.host = host
        self.tls = tls

    @property
    def url(self) -> str:
        return f"{'https' if self.tls is not None else 'http'}://{self.host}:{self.port}"

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, port, ssl_context=self.tls).start()
        self.port = int(self._runner.addresses[0][1])


class ScriptedResolver:
    """Answers per hostname from a script; the last answer repeats once the others are used."""

    def __init__(self, script: dict[str, list[list[str]]]) -> None:
        self.script = {host: list(answers) for host, answers in script.items()}
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        answers = self.script.get(host) or [[]]
        return answers.pop(0) if len(answers) > 1 else answers[0]
