"""Writes the notified ledger (``herald.dev/notified``) onto Environments, off the hot path.

A few writers drain one queue of Environments whose ledger changed. Bounding the writes in
flight matters twice in a deployment storm: the API server is not handed hundreds of PATCHes at
once, and each write comes back to Herald as a watch event of its own, so a burst of writes
would hold up the next deployment event behind hundreds of echoes (bench/: the p99 latency).
Queued writes coalesce per Environment. The flow hands each write the ledger it may name (events
whose deliveries are stored); the writer keeps the union per Environment, so a write never names an
event before its deliveries are stored, and never drops one an earlier write of this process named.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from dataclasses import dataclass

from herald.events import LEDGER_ANNOTATION, dump_ledger, merge_ledgers
from herald.kube import ApiError, ApiNotFound, KubeClient
from herald.models import NotifiedLedger

__all__ = ["LEDGER_MEMORY", "LEDGER_WRITERS", "LedgerWriter", "Ledgers"]

logger = logging.getLogger("herald.ledger")

LEDGER_WRITERS = 2  # ledger writes in flight at once
LEDGER_MEMORY = 100_000  # Environments whose ledger this process remembers


@dataclass(frozen=True)
class _Target:
    namespace: str
    name: str


class Ledgers:
    """A ledger per Environment uid, newest last, bounded (the annotation is the truth after a
    restart). The flow keeps what it notified (a watch event may predate the annotation write
    that recorded it; an event that went to no webhook is never written); the writer keeps what
    it may write."""

    def __init__(self, limit: int = LEDGER_MEMORY) -> None:
        self._limit = limit
        self._kept: collections.OrderedDict[str, NotifiedLedger] = collections.OrderedDict()

    def get(self, uid: str) -> NotifiedLedger | None:
        return self._kept.get(uid)

    def merged(self, uid: str, persisted: NotifiedLedger) -> NotifiedLedger:
        remembered = self._kept.get(uid)
        return persisted if remembered is None else merge_ledgers(persisted, remembered)

    def remember(self, uid: str, ledger: NotifiedLedger) -> None:
        self._kept[uid] = ledger
        self._kept.move_to_end(uid)
        while len(self._kept) > self._limit:
            self._kept.popitem(last=False)


class LedgerWriter:
    def __init__(self, kube: KubeClient) -> None:
        self._kube = kube
        self._stored = Ledgers()
        self._queue: dict[str, _Target] = {}  # by Environment uid, oldest first
        self._writing: set[str] = set()
        self._changed = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._drain(), name=f"herald-ledger-writer-{n}")
            for n in range(LEDGER_WRITERS)
        ]

    def enqueue(self, uid: str, namespace: str, name: str, stored: NotifiedLedger) -> None:
        """Write ``stored`` (events whose deliveries are stored) with what was stored before."""
        self._stored.remember(uid, self._stored.merged(uid, stored))
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
        ledger = self._stored.get(uid)
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
