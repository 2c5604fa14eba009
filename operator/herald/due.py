"""A webhook's unfinished deliveries in due order: the next attempt is always the first.

Due order is the retry time (at once for a new delivery), oldest first among equals, which keeps
a deployment's STARTED ahead of its terminal event. A heap with lazy removal: replacing or removing
a delivery costs O(log n) however long the backlog of a receiver that is down.
"""

from __future__ import annotations

import datetime
import heapq
import itertools
from collections.abc import Iterator

from herald.models import PendingDelivery

__all__ = ["DueQueue", "due"]


def due(delivery: PendingDelivery) -> tuple[datetime.datetime, datetime.datetime]:
    """When a delivery is due: its retry time, or at once; oldest first among equals."""
    record = delivery.record
    return (record.next_attempt_at or record.time, delivery.notification.created_at)


class DueQueue:
    def __init__(self) -> None:
        self._items: dict[str, PendingDelivery] = {}  # by payload_id
        self._heap: list[tuple[datetime.datetime, datetime.datetime, int, str]] = []
        self._order = itertools.count()
        self._live: dict[str, int] = {}  # payload_id -> the heap entry that counts
        self._created: list[tuple[datetime.datetime, str]] = []  # for ``oldest``, lazily cleaned

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, payload_id: str) -> bool:
        return payload_id in self._items

    def __iter__(self) -> Iterator[PendingDelivery]:
        return iter(self._items.values())

    def get(self, payload_id: str) -> PendingDelivery | None:
        return self._items.get(payload_id)

    def put(self, delivery: PendingDelivery) -> None:
        """Add a delivery, or replace the one with its payload_id (a retry moves it back)."""
        payload_id = delivery.record.payload_id
        seq = next(self._order)
        queued = self._items.get(payload_id)
        if queued is None or queued.notification.created_at != delivery.notification.created_at:
            heapq.heappush(self._created, (delivery.notification.created_at, payload_id))
        self._items[payload_id] = delivery
        self._live[payload_id] = seq
        heapq.heappush(self._heap, (*due(delivery), seq, payload_id))
        if len(self._heap) > 2 * len(self._items) + 64:  # mostly replaced entries: rebuild
            self._heap = [(*due(d), self._live[p], p) for p, d in self._items.items()]
            heapq.heapify(self._heap)

    def remove(self, payload_id: str) -> PendingDelivery | None:
        self._live.pop(payload_id, None)
        return self._items.pop(payload_id, None)

    def first(self) -> PendingDelivery | None:
        """The delivery due first."""
        heap = self._heap
        while heap and self._live.get(heap[0][3]) != heap[0][2]:
            heapq.heappop(heap)  # replaced or removed
        return self._items[heap[0][3]] if heap else None

    def _current(self, created_at: datetime.datetime, payload_id: str) -> bool:
        queued = self._items.get(payload_id)
        return queued is not None and queued.notification.created_at == created_at

    def oldest(self) -> datetime.datetime | None:
        """When the oldest unfinished delivery was created."""
        created = self._created
        while created and not self._current(*created[0]):
            heapq.heappop(created)  # removed or replaced since
        if len(created) > 2 * len(self._items) + 64:  # removed and queued again: rebuild
            self._created = created = [(d.notification.created_at, p) for p, d in self._items.items()]
            heapq.heapify(created)
        return created[0][0] if created else None
