"""Keeps the garbage collector's full collections short in a long-running operator.

A full (generation 2) collection walks every tracked object, and with thousands of webhooks
that is most of the heap: 0.4-0.7 s per collection with 5,000 Webhooks and 5,000 Environments,
a stall that every deployment event behind it waits out (bench/RESULTS.md, scale). What survives
a full collection is long-lived (webhooks, their workers, kopf's state), so it is frozen: later
full collections walk only what is newer. Frozen objects are still freed by reference counting;
only garbage in reference cycles among them would linger, so everything is thawed, collected
once and frozen again: a minute after the start, whose transients (the startup listings, their
HTTP responses) are the most of that garbage, then once an hour.

That one collection walks the whole heap again: 0.15 s with 5,000 Webhooks, in which no event is
handled. So a due thaw waits for a quiet second (under ``QUIET_SHARE`` of a core used), for up to
``MOST_DEFERRED``; a burst, or the first minute of a big cluster's startup, is not paused by it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["MOST_DEFERRED", "QUIET_SHARE", "HeapKeeper"]

logger = logging.getLogger("herald.heap")

QUIET_SHARE = 0.1  # share of a core under which a second counts as quiet
MOST_DEFERRED = 600.0  # seconds a due thaw waits for a quiet second at most


class HeapKeeper:
    def __init__(
        self,
        *,
        first_thaw: float = 60.0,
        rethaw_every: float = 3600.0,
        check_every: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        cpu: Callable[[], float] = time.process_time,
    ) -> None:
        self._first_thaw = first_thaw
        self._rethaw_every = rethaw_every
        self._check_every = check_every
        self._clock = clock
        self._cpu = cpu
        self._last: tuple[float, float] | None = None  # (clock, CPU seconds used) at the last tick
        self._survivors = False  # a full collection ran since the last freeze
        self._thaw_at: float | None = None

    def _observe(self, phase: str, info: dict[str, Any]) -> None:
        # Runs inside the collector: only note it; the freeze happens in the event loop.
        if phase == "stop" and info.get("generation") == 2:
            self._survivors = True

    async def run(self) -> None:
        gc.callbacks.append(self._observe)
        try:
            while True:
                await asyncio.sleep(self._check_every)
                self.tick()
        finally:
            gc.callbacks.remove(self._observe)

    def _busy(self, now: float) -> bool:
        """Whether the process used more than ``QUIET_SHARE`` of a core since the last tick."""
        used, last = self._cpu(), self._last
        self._last = (now, used)
        return last is not None and used - last[1] > QUIET_SHARE * (now - last[0])

    def tick(self) -> None:
        now = self._clock()
        busy = self._busy(now)
        if self._thaw_at is None:
            self._thaw_at = now + self._first_thaw
        elif now >= self._thaw_at and (not busy or now >= self._thaw_at + MOST_DEFERRED):
            gc.unfreeze()
            collected = gc.collect()
            logger.debug("thawed full collection: %d objects in %.3f s", collected, self._clock() - now)
            self._thaw_at = self._clock() + self._rethaw_every
            self._survivors = True
        if self._survivors:
            self._survivors = False
            gc.freeze()
