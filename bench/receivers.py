"""Receivers in a child process, for the throughput runs.

In one process, every request costs the receiver's aiohttp server as much CPU as it costs the
sender, and that shared cost would pull any two senders' ratio towards 1. A receiver elsewhere
(as in production) leaves the sender's own cost alone in the parent's event loop.

``python -m bench.receivers N`` serves N ports, prints them as one JSON line, and stops when its
standard input closes; the parent reads the records over HTTP (``harness.CONTROL``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator

import aiohttp

from bench.harness import CONTROL, Arrival, Sinks, start_module, stop_module

__all__ = ["RemoteSinks", "remote_sinks"]


class RemoteSinks:
    """The parent's handle on receivers in a child process."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._session: aiohttp.ClientSession | None = None

    def url(self, index: int = 0) -> str:
        return f"http://127.0.0.1:{self.ports[index]}"

    async def start(self, ports: int) -> None:
        self._proc, line = await start_module("bench.receivers", str(ports))
        if not line:
            raise RuntimeError("the receivers' process exited before listening")
        self.ports = json.loads(line)
        self._session = aiohttp.ClientSession()

    async def _get(self, what: str) -> object:
        if self._session is None:
            raise RuntimeError("receivers not started")
        async with self._session.get(f"{self.url()}{CONTROL}{what}") as response:
            return await response.json()

    async def count(self) -> int:
        value = await self._get("count")
        return int(value) if isinstance(value, int) else 0

    async def arrivals(self) -> list[Arrival]:
        rows = await self._get("arrivals")
        if not isinstance(rows, list):
            return []
        return [
            Arrival(path=p, at=at, key=tuple(key) if isinstance(key, list) else key) for p, at, key in rows
        ]

    async def wait_count(self, count: int, *, timeout: float) -> None:
        """Poll (every 50 ms, a cost both compared senders pay) until ``count`` requests arrived."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while await self.count() < count:
            if loop.time() > deadline:
                raise TimeoutError(f"fewer than {count} deliveries within {timeout}s")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        await stop_module(self._proc)


@contextlib.asynccontextmanager
async def remote_sinks(ports: int) -> AsyncIterator[RemoteSinks]:
    receivers = RemoteSinks()
    try:
        await receivers.start(ports)
        yield receivers
    finally:
        await receivers.stop()


async def _serve(ports: int) -> None:
    receivers = Sinks()
    await receivers.start(ports)
    print(json.dumps(receivers.ports), flush=True)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    await stdin.read()  # until the parent closes it
    await receivers.stop()


if __name__ == "__main__":
    asyncio.run(_serve(int(sys.argv[1])))
