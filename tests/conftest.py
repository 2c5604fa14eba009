"""Fixtures shared by the integration and the real-cluster suites, and the property tests' profile."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import settings

from herald.testing import Receiver
from tests.cluster.controlplane import ControlPlane, running

# `make test` draws the same examples on every run, so a red CI is a real regression that
# reproduces, never a lucky draw; HYPOTHESIS_PROFILE=explore draws new ones (and more of them).
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A local HTTP receiver that records every request it gets."""
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """A real etcd + kube-apiserver + kube-controller-manager for the session (built or reused).

    Never skipped: without one the suite fails saying what it needs (tests/cluster/controlplane.py).
    """
    with running() as plane:
        yield plane
