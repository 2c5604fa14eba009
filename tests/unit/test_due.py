"""due.py: a webhook's unfinished deliveries in due order (retry time, then creation), through
any number of replacements and removals, against a sorted list as the reference."""

from __future__ import annotations

import datetime

from hypothesis import example, given
from hypothesis import strategies as st

from herald.decision import new_record
from herald.due import DueQueue
from herald.models import DeliveryOutcome, PendingDelivery

from .test_status import T0, event


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def pending(n: int, *, created: float = 0.0, retry: float | None = None) -> PendingDelivery:
    """Delivery ``p-<n>`` of an event created at ``created``; retried at ``retry`` if given."""
    e = event(n).model_copy(update={"created_at": at(created)})
    record = new_record(e, now=at(created))
    if retry is not None:
        record = record.model_copy(
            update={"attempts": 1, "outcome": DeliveryOutcome.RETRYING, "next_attempt_at": at(retry)}
        )
    return PendingDelivery(record=record, notification=e)


def drain(queue: DueQueue) -> list[str]:
    """Payload ids in the order the queue hands them out (emptying it)."""
    order = []
    while (first := queue.first()) is not None:
        order.append(first.record.payload_id)
        assert queue.remove(first.record.payload_id) == first
    return order


def test_new_deliveries_are_due_oldest_first() -> None:
    queue = DueQueue()
    for n, created in ((1, 30), (2, 10), (3, 20)):
        queue.put(pending(n, created=created))
    assert drain(queue) == ["p-2", "p-3", "p-1"]


def test_the_retry_time_comes_before_creation() -> None:
    queue = DueQueue()
    queue.put(pending(1, created=0, retry=300))  # the oldest, but waiting
    queue.put(pending(2, created=10))
    queue.put(pending(3, created=5, retry=60))
    assert drain(queue) == ["p-2", "p-3", "p-1"]


def test_equal_retry_times_keep_creation_order() -> None:
    """A deployment's STARTED stays ahead of its terminal event when both wait for the same time."""
    queue = DueQueue()
    queue.put(pending(2, created=20, retry=100))
    queue.put(pending(1, created=10, retry=100))
    assert drain(queue) == ["p-1", "p-2"]


def test_replacing_a_delivery_moves_it() -> None:
    queue = DueQueue()
    queue.put(pending(1, created=0))
    queue.put(pending(2, created=10))
    first = queue.first()
    assert first is not None
    assert first.record.payload_id == "p-1"
    retried = pending(1, created=0, retry=60)
    queue.put(retried)
    assert len(queue) == 2
    assert queue.get("p-1") == retried
    assert drain(queue) == ["p-2", "p-1"]


def test_removing_a_delivery() -> None:
    queue = DueQueue()
    for n in range(3):
        queue.put(pending(n, created=n))
    assert queue.remove("p-0") is not None
    assert queue.remove("p-0") is None
    assert queue.remove("p-9") is None
    assert "p-0" not in queue
    assert "p-1" in queue
    assert len(queue) == 2
    assert {d.record.payload_id for d in queue} == {"p-1", "p-2"}
    assert drain(queue) == ["p-1", "p-2"]
    assert queue.first() is None
    assert queue.oldest() is None


def test_a_removed_delivery_put_again_counts_once() -> None:
    queue = DueQueue()
    queue.put(pending(1, created=0))
    queue.put(pending(2, created=5))
    queue.remove("p-1")
    queue.put(pending(1, created=0, retry=50))
    assert len(queue) == 2
    assert drain(queue) == ["p-2", "p-1"]


def test_oldest_is_the_earliest_creation_whatever_is_due() -> None:
    queue = DueQueue()
    queue.put(pending(1, created=5, retry=10_000))
    queue.put(pending(2, created=50))
    assert queue.oldest() == at(5)


# (payload n, created, retry or None, remove instead of put)
steps = st.lists(
    st.tuples(
        st.integers(0, 15),
        st.integers(0, 100),
        st.none() | st.integers(0, 200),
        st.booleans(),
    ),
    max_size=400,
)


@given(steps)
@example([(n % 3, n % 7, (n * 37) % 200 if n % 4 else None, n % 11 == 0) for n in range(300)])  # rebuilds
def test_due_order_matches_a_sorted_reference_through_any_changes(
    changes: list[tuple[int, int, int | None, bool]],
) -> None:
    """Many replacements of few deliveries make the queue rebuild its heap; the order holds."""
    queue = DueQueue()
    reference: dict[str, tuple[datetime.datetime, datetime.datetime, int]] = {}  # id -> sort key
    for seq, (n, created, retry, remove) in enumerate(changes):
        payload_id = f"p-{n}"
        if remove:
            queue.remove(payload_id)
            reference.pop(payload_id, None)
        else:
            d = pending(n, created=created, retry=retry)
            queue.put(d)
            due_at = at(retry) if retry is not None else at(created)
            reference[payload_id] = (due_at, at(created), seq)  # the latest put breaks ties
        expected = min(reference, key=reference.__getitem__, default=None)
        first = queue.first()
        assert (first.record.payload_id if first else None) == expected
        assert len(queue) == len(reference)
        assert queue.oldest() == min((key[1] for key in reference.values()), default=None)
    assert drain(queue) == sorted(reference, key=reference.__getitem__)


def test_a_long_backlog_replaced_many_times_stays_in_order() -> None:
    queue = DueQueue()
    for n in range(200):
        queue.put(pending(n, created=n))
    for round_ in range(20):  # every delivery retried 20 times: far more entries than deliveries
        for n in range(200):
            queue.put(pending(n, created=n, retry=1000 + round_ * 10 + (199 - n)))
    assert drain(queue) == [f"p-{n}" for n in reversed(range(200))]
