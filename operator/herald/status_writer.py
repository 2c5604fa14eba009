"""A webhook's summary status, written in the background at most once per interval.

The first write after a quiet spell waits ``GRACE``, so a burst of changes is summed up in one
patch; later ones wait out the interval. Each try renders the newest status (a retry writes what
is current). ``hold`` delays every write until something is stored elsewhere first (a Herald 0.1
queue is cleared from the status only once its Delivery objects exist).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from herald import background
from herald.kube import ApiError
from herald.metrics import Metrics
from herald.models import ObjectRef
from herald.status import WebhookStatus, to_patch

__all__ = ["GRACE", "StatusSink", "StatusWriter"]

logger = logging.getLogger("herald.status")

GRACE = 0.2  # seconds the first write after a quiet spell waits


class StatusSink(Protocol):
    async def patch_status(
        self, *, plural: str, namespace: str | None, name: str, status: Callable[[], Mapping[str, Any]]
    ) -> None: ...


class StatusWriter:
    def __init__(
        self,
        sink: StatusSink,
        *,
        plural: str,
        ref: ObjectRef,
        status: WebhookStatus,
        interval: float,
        clock: Callable[[], float],
        metrics: Metrics,
    ) -> None:
        self.status = status
        self._sink = sink
        self._plural = plural
        self._ref = ref
        self._interval = interval
        self._clock = clock
        self._metrics = metrics
        self._seq = 0
        self._flushed = 0
        self._last = float("-inf")
        self._held: Awaitable[None] | None = None
        self._task: asyncio.Task[None] | None = None

    def change(self, status: WebhookStatus) -> None:
        if status is self.status:
            return
        self.status = status
        self._seq += 1
        if self._task is None or self._task.done():
            self._task = background.start(self._flush(), name=f"herald-flush-{self._ref}")

    def hold(self, until: Awaitable[None]) -> None:
        """Write nothing before ``until`` completes (or fails: Herald is stopping)."""
        self._held = until

    async def _flush(self) -> None:
        if self._held is not None:
            with contextlib.suppress(Exception):
                await self._held
            self._held = None
        while self._flushed < self._seq:
            now = self._clock()
            quiet = now - self._last > self._interval
            delay = GRACE if quiet else self._last + self._interval - now
            await asyncio.sleep(max(0.0, min(delay, self._interval)))
            seq = self._seq

            def newest() -> dict[str, Any]:
                nonlocal seq
                seq = self._seq
                return to_patch(self.status)

            ref = self._ref
            try:  # the client retries transient failures until the status is stored
                await self._sink.patch_status(
                    plural=self._plural, namespace=ref.namespace, name=ref.name, status=newest
                )
            except ApiError as exc:  # gone (404), or refused for good: the next change tries again
                logger.warning(
                    "status of %s not stored: %s; it is written again with its next change", ref, exc
                )
                return
            self._metrics.status_patches.inc()
            self._last = self._clock()
            self._flushed = seq

    async def close(self, timeout: float = 5.0) -> None:
        """Let a write in progress finish (for up to ``timeout`` seconds)."""
        if self._task is not None and not self._task.done():
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout=timeout)
