"""One webhook's backlog: its deliveries not finished yet, and how each came to be there.

A delivery enters the backlog new (an event), looked up first (an event derived again, which an
earlier Herald may have stored), adopted (a pending Delivery object read back after a restart),
or sent again (a redelivery request); it leaves when it finishes or its object is deleted. The
backlog holds three things the worker must never get wrong:

- a payload is never queued twice, whichever way it comes in;
- a payload finished lately is not queued again by a read made before it finished (a startup
  listing, a lookup); such reads time out long before ``RECENT_WINDOW``;
- every change is stored through the ``DeliveryStore`` as it is made.

It decides nothing about sending: the worker takes due deliveries from ``queue`` and says which
finished. ``changed`` is called after every change, for the worker to sum up and wake.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import logging
from collections.abc import Awaitable, Callable, Iterator

from herald.decision import new_record
from herald.delivery_object import Owner, Stored
from herald.delivery_store import DeliveryStore, Key, NotPersisted
from herald.due import DueQueue
from herald.kube import ApiError
from herald.models import DeliveryOutcome, DeploymentEvent, PendingDelivery

__all__ = ["RECENT_WINDOW", "Backlog"]

logger = logging.getLogger("herald.backlog")

RECENT_WINDOW = 120.0  # seconds a finished payload_id is remembered (API reads time out after 30)

Spawn = Callable[..., None]  # Dispatcher.spawn(coro, name=...)


class Backlog:
    def __init__(
        self,
        store: DeliveryStore,
        owner: Callable[[], Owner],
        *,
        now: Callable[[], datetime.datetime],
        clock: Callable[[], float],
        spawn: Spawn,
        lookups: asyncio.Semaphore,
        changed: Callable[[], None],
        name: str,
    ) -> None:
        self._store = store
        self._owner = owner  # whose Delivery objects these are (the webhook, as last seen)
        self._now = now
        self._clock = clock
        self._spawn = spawn
        self._lookups = lookups  # reads of possibly stored deliveries in flight, shared by all
        self._changed = changed
        self._name = name
        self.queue = DueQueue()
        self._verifying: dict[str, asyncio.Future[None]] = {}  # payload_id -> lookup done
        self._finished: collections.OrderedDict[str, float] = collections.OrderedDict()  # -> when

    def __len__(self) -> int:
        """Deliveries queued or being looked up."""
        return len(self.queue) + len(self._verifying)

    def __contains__(self, payload_id: str) -> bool:
        return payload_id in self.queue or payload_id in self._verifying

    def __iter__(self) -> Iterator[PendingDelivery]:
        return iter(self.queue)

    @property
    def looking_up(self) -> bool:
        """A delivery being looked up may be due before any queued one: nothing is sent meanwhile."""
        return bool(self._verifying)

    def key(self, payload_id: str) -> Key:
        return self._store.key(self._owner(), payload_id)

    def add(self, event: DeploymentEvent, *, verify: bool) -> None:
        """Queue a new delivery of ``event`` (not in the backlog already). ``verify``: an earlier
        Herald may have stored it, so it is looked up first and, if found, resumed from there or
        left alone."""
        delivery = PendingDelivery(record=new_record(event, now=self._now()), notification=event)
        if verify:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._verifying[event.payload_id] = done
            self._spawn(self._verify(delivery, done), name=f"herald-verify-{self._name}")
        else:
            self.queue.put(delivery)
            self._store.put(self._owner(), delivery)
        self._changed()

    def verified(self, payload_id: str) -> Awaitable[None] | None:
        """Completes once the lookup of ``payload_id`` is over, if one is in flight."""
        return self._verifying.get(payload_id)

    async def _verify(self, delivery: PendingDelivery, done: asyncio.Future[None]) -> None:
        payload_id = delivery.record.payload_id
        try:
            async with self._lookups:
                stored = await self._store.read(self._owner(), payload_id)
        except ApiError as exc:  # unknown: send it (a duplicate at worst, never a loss)
            logger.warning("cannot tell whether %s was delivered already (%s); sending it", payload_id, exc)
            stored = None
        finally:
            self._verifying.pop(payload_id, None)
        if payload_id in self.queue or payload_id in self._finished:
            pass  # resumed from its object meanwhile, or even sent: never queued twice
        elif stored is None:
            self.queue.put(delivery)
            self._store.put(self._owner(), delivery)
        elif stored.delivery.record.outcome in (DeliveryOutcome.PENDING, DeliveryOutcome.RETRYING):
            self.adopt(stored.delivery)
        self._changed()
        if not done.done():
            done.set_result(None)

    def adopt(self, stored: PendingDelivery) -> None:
        """A pending Delivery object read back (after a restart, by a lookup): attempted again on
        its schedule, unless this process finished it or holds it with as many attempts."""
        queued = self.queue.get(stored.record.payload_id)
        if stored.record.payload_id in self._finished:
            return  # read before this process finished it
        if queued is not None and queued.record.attempts >= stored.record.attempts:
            return
        self.queue.put(stored)
        self._store.put(self._owner(), stored, exists=True, write=False)
        self._changed()

    def redeliver(self, stored: Stored, value: str, *, annotated: bool) -> None:
        """Send a stored delivery again, with its payload_id and a fresh retry schedule;
        ``annotated``: asked on the Delivery object, whose request ``value`` is then acknowledged."""
        delivery = stored.delivery
        record = delivery.record.model_copy(
            update={
                "outcome": DeliveryOutcome.PENDING,
                "attempts": 0,
                "next_attempt_at": self._now(),
                "http_status": None,
                "error": None,
            }
        )
        delivery = delivery.model_copy(update={"record": record})
        self.queue.put(delivery)
        self._store.put(self._owner(), delivery, exists=True, redelivered=value if annotated else None)
        self._changed()

    def drop(self, payload_id: str) -> None:
        """Its Delivery object was deleted (by a person, or with its webhook): it is not sent."""
        if self.queue.remove(payload_id) is not None:
            self._changed()

    def finish(self, payload_id: str) -> None:
        """It finished: out of the queue, and remembered for ``RECENT_WINDOW`` seconds."""
        self.queue.remove(payload_id)
        now = self._clock()
        self._finished[payload_id] = now
        self._finished.move_to_end(payload_id)
        while self._finished and next(iter(self._finished.values())) < now - RECENT_WINDOW:
            self._finished.popitem(last=False)

    def outlived(self, finished: PendingDelivery, *, retain: int) -> bool:
        """Whether at least ``retain`` deliveries, all newer than this finished one, are still
        queued: once they finish, retention prunes it anyway (a backlog draining). Events derived
        together share their creation time; none of those counts as newer."""
        oldest = self.queue.oldest()
        return len(self.queue) >= retain and (oldest is None or finished.notification.created_at < oldest)

    def close(self, what: str) -> None:
        """Herald stops: whoever waits on a lookup learns that nothing was stored."""
        for done in self._verifying.values():
            if not done.done():
                done.set_exception(NotPersisted(f"{what}: Herald stopped before a lookup"))
