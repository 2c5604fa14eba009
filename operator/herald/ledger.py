"""Writes the notified ledger (``herald.dev/notified``) onto Environments, off the hot path.

A few writers drain one queue of Environments whose ledger changed. Bounding the writes in
flight matters twice in a deployment storm: the API server is not handed hundreds of PATCHes at
once, and each write comes back to Herald as a watch event of its own, so a burst of writes
would hold up the next deployment event behind hundreds of echoes (bench/: the p99 latency).
Queued writes coalesce per Environment: whatever is written is the newest ledger then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from herald.events import LEDGER_ANNOTATION, dump_ledger
from herald.kube import ApiError, ApiNotFound, KubeClient
from herald.models import NotifiedLedger

__all__ = ["LEDGER_WRITERS", "LedgerWriter"]

logger = logging.getLogger("herald.ledger")

LEDGER_WRITERS = 2  # ledger writes in flight at once


@dataclass(frozen=True)
class _Target:
    namespace: str
    name: str


class LedgerWriter:
    def __init__(self, kube: KubeClient, newest: Callable[[str], NotifiedLedger | None]) -> None:
        self._kube = kube
        self._newest = newest
        self._queue: dict[str, _Target] = {}  # by Environment uid, oldest first
        self._writing: set[str] = set()
        self._changed = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._drain(), name=f"herald-ledger-writer-{n}")
            for n in range(LEDGER_WRITERS)
        ]

    def enqueue(self, uid: str, namespace: str, name: str) -> None:
        self._queue.setdefault(uid, _Target(namespace, name))
        self._changed.set()

    @property
    def idle(self) -> bool:
        return not self._queue and not self._writing

    async def close(self, timeout: float) -> None:
        """Let queued writes land for up to ``timeout`` seconds, then stop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not self.idle:
                    self._changed.clear()
                    await self._changed.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _take(self) -> tuple[str, _Target] | None:
        """The oldest queued Environment not being written already (one write per object at a time,
        so an older ledger can never land after a newer one)."""
        for uid, target in self._queue.items():
            if uid not in self._writing:
                del self._queue[uid]
                return uid, target
        return None

    async def _drain(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                self._changed.clear()
                await self._changed.wait()
                continue
            uid, target = taken
            self._writing.add(uid)
            try:
                await self._write(uid, target)
            except Exception:  # a bug must not stop the other Environments' ledgers
                logger.exception("recording notified events on %s/%s failed", target.namespace, target.name)
            finally:
                self._writing.discard(uid)
                self._changed.set()

    async def _write(self, uid: str, target: _Target) -> None:
        """One write of the newest ledger; the client retries what is transient."""
        ledger = self._newest(uid)
        if ledger is None:
            return
        try:
            await self._kube.patch_annotations(
                plural="environments",
                namespace=target.namespace,
                name=target.name,
                annotations={LEDGER_ANNOTATION: dump_ledger(ledger)},
            )
        except ApiNotFound:
            return  # the Environment is gone
        except ApiError as exc:
            # Not recorded: after a restart the events are derived again and recognised by their
            # payload_id on the webhooks' status, so nothing is sent twice.
            logger.warning("cannot record notified events on %s/%s: %s", target.namespace, target.name, exc)
