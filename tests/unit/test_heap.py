"""heap.py: survivors of a full collection are frozen; a periodic thaw lets cycles be collected."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from herald.heap import MOST_DEFERRED, HeapKeeper
from herald.testing import wait_for


@pytest.fixture(autouse=True)
def thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


async def test_a_full_collection_freezes_its_survivors_and_nothing_else_does() -> None:
    keeper = HeapKeeper(check_every=0.01)
    task = asyncio.create_task(keeper.run())
    try:
        await wait_for(lambda: keeper._observe in gc.callbacks, timeout=5, what="the keeper running")
        gc.disable()  # no automatic collection in between
        try:
            gc.collect(1)  # a young collection: nothing is frozen
            keeper.tick()
        finally:
            gc.enable()
        assert gc.get_freeze_count() == 0
        gc.collect()  # a full one: what survived it is frozen
        await wait_for(lambda: gc.get_freeze_count() > 0, timeout=5, what="the survivors frozen")
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert keeper._observe not in gc.callbacks


class Node:
    other: object = None


def _cycle() -> Node:
    """Two objects in a reference cycle: once dropped, only the collector can free them."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a


def test_thaws_collect_cycles_that_died_frozen_a_minute_after_start_then_hourly() -> None:
    now = [0.0]
    keeper = HeapKeeper(first_thaw=60, rethaw_every=3600, clock=lambda: now[0], cpu=lambda: 0.0)
    keeper.tick()  # the start
    for thaw_at in (60.0, 60.0 + 3600.0):
        held = _cycle()
        alive = weakref.ref(held)
        gc.collect()
        gc.freeze()  # as after a full collection, while the cycle was still in use
        del held  # now it is garbage, but frozen
        now[0] = thaw_at - 1
        keeper.tick()
        assert alive() is not None  # not yet: frozen garbage lingers until the thaw
        now[0] = thaw_at
        keeper.tick()
        assert alive() is None
        assert gc.get_freeze_count() > 0  # and what lives is frozen again


def test_a_due_thaw_waits_for_a_quiet_second_but_not_forever() -> None:
    """The thaw's full collection pauses every event: not in the middle of a burst."""
    now, cpu = [0.0], [0.0]
    keeper = HeapKeeper(first_thaw=60, rethaw_every=3600, clock=lambda: now[0], cpu=lambda: cpu[0])

    def second(busy: float) -> object:
        """One more second, ``busy`` of it spent on the CPU, then a tick; a cycle that died frozen
        meanwhile (alive until a thaw collects it)."""
        held = _cycle()
        alive = weakref.ref(held)
        gc.collect()
        gc.freeze()
        del held
        now[0] += 1
        cpu[0] += busy
        keeper.tick()
        return alive()

    keeper.tick()  # the start
    now[0] = 59.0
    keeper.tick()
    for _ in range(30):  # due from 60 s on, but busy: half a core
        assert second(0.5) is not None
    assert second(0.05) is None  # the first quiet second
    due = now[0] + 3600  # the next thaw; busy all the while it is late, until it may wait no more
    now[0] = due - 1
    keeper.tick()
    while now[0] < due + MOST_DEFERRED - 1:
        assert second(0.9) is not None
    assert second(0.9) is None
