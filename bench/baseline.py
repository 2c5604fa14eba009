"""The baseline every operator figure is divided by: the smallest notifier that could exist.

One raw watch stream on Environments, one POST per new deployment state over one pooled
connection, nothing else: no kopf, no matching, no payload model, no status, no retries, no
persistence. Whatever Herald costs beyond this is Herald's overhead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Callable

import aiohttp

__all__ = ["BaselineProcess", "RawNotifier", "raw_notifier"]


# The events a state stands for, in sending order (as Herald sends them for a first-seen state).
_EVENTS: dict[str, tuple[str, ...]] = {
    "QUEUED": ("DEPLOYMENT_STARTED",),
    "DEPLOYING": ("DEPLOYMENT_STARTED",),
    "DEPLOYED": ("DEPLOYMENT_STARTED", "DEPLOYMENT_SUCCESSFUL"),
}


class RawNotifier:
    """Watch Environments on the API emulator; POST each new (deployment, event) to ``target(namespace)``."""

    def __init__(self, api: str, target: Callable[[str], str]) -> None:
        self._api = api
        self._target = target
        self._sent: set[tuple[str, str, str]] = set()
        self.ready = asyncio.Event()
        self.posted = 0

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(f"{self._api}/apis/herald.dev/v1alpha1/environments?watch=true") as stream,
        ):
            self.ready.set()
            async for line in stream.content:
                if line.strip():
                    await self._on_event(session, json.loads(line))

    async def _on_event(self, session: aiohttp.ClientSession, event: dict[str, object]) -> None:
        obj = event.get("object")
        if not isinstance(obj, dict):
            return
        deployment = (obj.get("status") or {}).get("deployment") or {}
        meta = obj["metadata"]
        for event_type in _EVENTS.get(deployment.get("currentStatus", ""), ()):
            key = (meta["name"], deployment["id"], event_type)
            if key in self._sent:
                continue
            self._sent.add(key)
            body = json.dumps(
                {
                    "event_type": event_type,
                    "payload": {
                        "id": deployment["id"],
                        "environment": {"name": meta["name"], "namespace": meta["namespace"]},
                    },
                }
            )
            async with session.post(
                self._target(meta["namespace"]), data=body, headers={"Content-Type": "application/json"}
            ) as response:
                await response.read()
            self.posted += 1


@contextlib.asynccontextmanager
async def raw_notifier(api: str, target: Callable[[str], str]) -> AsyncIterator[RawNotifier]:
    notifier = RawNotifier(api, target)
    task = asyncio.create_task(notifier.run(), name="bench-raw-notifier")
    try:
        await asyncio.wait_for(notifier.ready.wait(), timeout=10)
        yield notifier
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class BaselineProcess:
    """The raw notifier in a child process (``python -m bench.baseline API TARGET``), to compare with
    ``herald run`` in a child process: each alone in its own interpreter, as in production.
    ``{namespace}`` in TARGET stands for the Environment's namespace."""

    def __init__(self, api: str, target: str) -> None:
        self._args = (api, target)
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        # Imported here, not at the top: the child process stays the smallest notifier.
        from bench.harness import start_module

        self._proc, line = await start_module("bench.baseline", *self._args)
        if line.strip() != b"ready":
            raise RuntimeError(f"the baseline's process did not start: {line!r}")

    async def stop(self) -> None:
        from bench.harness import stop_module

        await stop_module(self._proc)

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the baseline's process is not running")
        return self._proc.pid

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[BaselineProcess]:
        await self.start()
        try:
            yield self
        finally:
            await self.stop()


async def _serve(api: str, target: str) -> None:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    async with raw_notifier(api, lambda namespace: target.format(namespace=namespace)):
        print("ready", flush=True)
        await stdin.read()  # until the parent closes it


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1], sys.argv[2]))
