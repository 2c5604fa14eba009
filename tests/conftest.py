"""Fixtures shared by the integration and the real-cluster suites."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from herald.demo import Receiver


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A local HTTP receiver that records every request it gets."""
    r = Receiver()
    await r.start()
    yield r
    await r.stop()
