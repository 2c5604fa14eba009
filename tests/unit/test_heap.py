"""heap.py: survivors of a full collection are frozen; a periodic thaw lets cycles be collected."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from herald.demo import wait_for
from herald.heap import HeapKeeper


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


async def test_the_periodic_thaw_collects_cycles_that_died_frozen() -> None:
    now = [0.0]
    keeper = HeapKeeper(check_every=0.01, rethaw_every=60, clock=lambda: now[0])

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: only the collector frees it
    alive = weakref.ref(a)
    task = asyncio.create_task(keeper.run())
    try:
        await wait_for(lambda: keeper._observe in gc.callbacks, timeout=5, what="the keeper running")
        gc.collect()
        await wait_for(lambda: gc.get_freeze_count() > 0, timeout=5, what="the cycle frozen")
        del a, b
        gc.collect()
        assert alive() is not None  # frozen: not collected
        now[0] = 61.0  # an hour later, in this test's clock
        await wait_for(lambda: alive() is None, timeout=5, what="the cycle collected")
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
