"""Leader election against a fake Lease API and a fake monotonic clock: no sleeping, no network.

The fake API server keeps one Lease with real ``resourceVersion`` semantics (every write moves
it on; a write carrying an older one is a 409 Conflict) and hands each replica its own client,
which a test can black-hole (calls hang until cancelled) or break (calls raise). The fake clock
only moves when a test advances it, waking sleepers in order, so every deadline is exact.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest

from herald.leader import LeaseConfig, LeaseElector

NS, NAME = "herald-system", "herald"
CONFIG = {"duration": 15.0, "renew_deadline": 10.0, "retry_period": 2.0}


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.t + seconds, next(self._order), wake))
        await wake

    async def advance(self, seconds: float) -> None:
        """Move time on by ``seconds``, waking each sleeper at its time and letting it run."""
        target = self.t + seconds
        await settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            when, _, wake = heapq.heappop(self._sleepers)
            self.t = max(self.t, when)
            if not wake.done():
                wake.set_result(None)
                await settle()
        self.t = target
        await settle()


async def settle() -> None:
    """Let every runnable task run until it waits on the clock or on a hanging call."""
    for _ in range(100):
        await asyncio.sleep(0)


class ApiDown(Exception):
    pass


class FakeServer:
    """One Lease, stored the way the API server stores it: a write names the version it read."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self._versions = itertools.count(1)
        self.before_write: Callable[[], None] | None = None  # a rival acting between read and write
        self.writes: list[dict[str, Any]] = []

    def put(self, spec: Mapping[str, Any]) -> None:
        """Another replica writes the Lease (or an operator edits it)."""
        self.lease = {"metadata": {"name": NAME, "namespace": NS}, "spec": {}}
        self.lease["spec"].update(spec)
        self.lease["metadata"]["resourceVersion"] = str(next(self._versions))

    def holder(self) -> str | None:
        return None if self.lease is None else self.lease["spec"].get("holderIdentity")

    def write(self, body: Mapping[str, Any], *, create: bool) -> bool:
        if self.before_write is not None:
            rival, self.before_write = self.before_write, None
            rival()
        self.writes.append(dict(body))
        if create:
            if self.lease is not None:
                return False  # 409 AlreadyExists
            self.lease = {"metadata": {"name": NAME, "namespace": NS}, "spec": {}}
        else:
            if self.lease is None:
                raise ApiDown("404 NotFound: no Lease to update")
            read = body["metadata"].get("resourceVersion")
            if read is not None and read != self.lease["metadata"]["resourceVersion"]:
                return False  # 409 Conflict
        self.lease["spec"].update(body["spec"])  # a merge patch
        self.lease["metadata"]["resourceVersion"] = str(next(self._versions))
        return True


class FakeClient:
    """One replica's connection to the fake server: working, black-holed or failing."""

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.hang: set[str] = set()  # "read", "write": those calls never answer
        self.fail: set[str] = set()  # those calls raise at once
        self.hanging = 0  # calls hanging right now (a deadline must cancel each)

    async def _call(self, kind: str) -> None:
        await asyncio.sleep(0)  # an API call is a suspension point: others may act meanwhile
        if kind in self.fail:
            raise ApiDown(f"{kind}: connection refused")
        if kind in self.hang:
            self.hanging += 1
            try:
                await asyncio.Event().wait()
            finally:
                self.hanging -= 1

    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        assert (namespace, name) == (NS, NAME)
        await self._call("read")
        lease = self.server.lease
        return None if lease is None else {"metadata": dict(lease["metadata"]), "spec": dict(lease["spec"])}

    async def write_lease(self, namespace: str, name: str, body: Mapping[str, Any], *, create: bool) -> bool:
        assert (namespace, name) == (NS, NAME)
        await self._call("write")
        return self.server.write(body, create=create)


class Replica:
    def __init__(self, server: FakeServer, clock: FakeClock, identity: str, **config: float) -> None:
        self.client = FakeClient(server)
        self.identity = identity
        self.elector = LeaseElector(
            self.client,
            LeaseConfig(namespace=NS, name=NAME, identity=identity, **{**CONFIG, **config}),
            clock=clock,
        )
        self.task: asyncio.Task[None] | None = None

    @property
    def delivering(self) -> bool:
        return self.elector.leading.is_set() and not self.elector.lost.is_set()


@asynccontextmanager
async def running(*replicas: Replica) -> AsyncIterator[None]:
    for replica in replicas:
        replica.task = asyncio.create_task(replica.elector.run())
    try:
        yield
    finally:
        for replica in replicas:
            assert replica.task is not None
            replica.task.cancel()
        await asyncio.gather(*(r.task for r in replicas if r.task), return_exceptions=True)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


async def leading_replica(server: FakeServer, clock: FakeClock, identity: str = "a") -> Replica:
    replica = Replica(server, clock, identity)
    replica.task = asyncio.create_task(replica.elector.run())
    await clock.advance(0)
    assert replica.delivering
    assert server.holder() == identity
    return replica


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("duration", "renew_deadline", "retry_period"),
    [(15, 15, 2), (15, 20, 2), (15, 10, 10), (15, 10, 0), (10, 15, 2)],
)
def test_config_refuses_a_renew_deadline_not_inside_the_lease(
    duration: float, renew_deadline: float, retry_period: float
) -> None:
    with pytest.raises(ValueError, match="retry period < renew deadline < lease duration"):
        LeaseConfig(
            namespace=NS,
            identity="a",
            duration=duration,
            renew_deadline=renew_deadline,
            retry_period=retry_period,
        )


@pytest.mark.parametrize(
    ("duration", "renew_deadline", "retry_period"), [(15, 10, 2), (30, 20, 2), (3, 2, 0.6), (0.5, 1 / 3, 0.1)]
)
def test_scaled_config_keeps_client_gos_proportions(
    duration: float, renew_deadline: float, retry_period: float
) -> None:
    config = LeaseConfig.scaled(namespace=NS, name=NAME, identity="a", duration=duration)
    assert (config.duration, config.renew_deadline, config.retry_period) == pytest.approx(
        (duration, renew_deadline, retry_period)
    )


# ---------------------------------------------------------------- a standby judges expiry on its own clock

HOURS_AGO = "2026-01-01T09:00:00.000000Z"
HOURS_AHEAD = "2099-01-01T13:00:00.000000Z"


@pytest.mark.parametrize(
    ("renew_time", "lease_seconds", "expires_after"),
    [
        pytest.param(HOURS_AGO, 15, 15, id="renewTime-hours-behind-the-standby"),
        pytest.param(HOURS_AHEAD, 15, 15, id="renewTime-years-ahead-of-the-standby"),
        pytest.param(None, 15, 15, id="no-renewTime"),
        pytest.param("not a time", 15, 15, id="garbage-renewTime"),
        pytest.param(HOURS_AGO, 40, 40, id="the-lease's-own-duration"),
        pytest.param(HOURS_AGO, None, 15, id="no-duration:-the-standby's-own"),
        pytest.param(HOURS_AGO, 0, 15, id="zero-duration:-the-standby's-own"),
    ],
)
async def test_standby_takes_over_only_after_the_record_stood_still_for_the_lease_duration(
    server: FakeServer,
    clock: FakeClock,
    renew_time: str | None,
    lease_seconds: int | None,
    expires_after: float,
) -> None:
    server.put(
        {
            "holderIdentity": "gone",
            "renewTime": renew_time,
            "leaseDurationSeconds": lease_seconds,
            "leaseTransitions": 4,
        }
    )
    standby = Replica(server, clock, "b")
    async with running(standby):
        await clock.advance(expires_after - 0.01)
        assert not standby.elector.leading.is_set()
        assert server.holder() == "gone"
        await clock.advance(2.0 + 0.01)  # the next poll after the lease expired
        assert standby.delivering
    assert server.lease is not None
    assert server.holder() == "b"
    assert server.lease["spec"]["leaseTransitions"] == 5


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"renewTime"}, id="renewTime"),
        pytest.param({"resourceVersion"}, id="resourceVersion-only"),
        pytest.param({"holderIdentity"}, id="a-new-holder"),
    ],
)
async def test_a_record_that_keeps_changing_never_expires(
    server: FakeServer, clock: FakeClock, changes: set[str]
) -> None:
    """The holder's wall clock is an hour behind, as if it never renewed, yet it renews every 5 s."""
    server.put({"holderIdentity": "other", "renewTime": HOURS_AGO, "leaseDurationSeconds": 15})
    standby = Replica(server, clock, "b")
    async with running(standby):
        for step in range(20):
            await clock.advance(5)
            holder = f"other-{step}" if "holderIdentity" in changes else "other"
            renew = f"2026-01-01T09:00:{step:02d}.000000Z" if "renewTime" in changes else HOURS_AGO
            server.put({"holderIdentity": holder, "renewTime": renew, "leaseDurationSeconds": 15})
            assert not standby.elector.leading.is_set()
        await clock.advance(15 + 2 + 2)  # it stops renewing: expired at the first poll 15 s after
        assert standby.delivering


async def test_standby_takes_a_released_lease_at_its_next_poll(server: FakeServer, clock: FakeClock) -> None:
    server.put({"holderIdentity": "other", "renewTime": HOURS_AHEAD, "leaseDurationSeconds": 3600})
    standby = Replica(server, clock, "b")
    async with running(standby):
        await clock.advance(10)
        assert not standby.elector.leading.is_set()
        server.put({"holderIdentity": "", "renewTime": HOURS_AHEAD, "leaseDurationSeconds": 1})
        await clock.advance(2)  # one retry period
        assert standby.delivering


# ---------------------------------------------------------------- a renewal has its own deadline


@pytest.mark.parametrize(
    ("hang", "fail"),
    [
        pytest.param({"read"}, set(), id="black-holed-read"),
        pytest.param({"write"}, set(), id="black-holed-write"),
        pytest.param(set(), {"read"}, id="refused-read"),
        pytest.param(set(), {"write"}, id="refused-write"),
    ],
)
async def test_a_leader_that_cannot_renew_stops_at_the_renew_deadline(
    server: FakeServer, clock: FakeClock, hang: set[str], fail: set[str]
) -> None:
    leader = await leading_replica(server, clock)  # last successful renewal sent at 0
    leader.client.hang, leader.client.fail = hang, fail
    await clock.advance(10 - 0.01)
    assert leader.delivering
    await clock.advance(0.01)
    assert leader.elector.lost.is_set()
    assert leader.client.hanging == 0, "a call outlived its deadline"
    assert leader.task is not None
    assert leader.task.done()


async def test_renewals_keep_the_lease_and_the_standby_waits(server: FakeServer, clock: FakeClock) -> None:
    leader = await leading_replica(server, clock)
    standby = Replica(server, clock, "b")
    async with running(standby):
        await clock.advance(300)
        assert leader.delivering
        assert not standby.elector.leading.is_set()
    assert server.lease is not None
    assert server.lease["spec"]["leaseTransitions"] == 0
    assert leader.task is not None
    leader.task.cancel()


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param({"hang": {"read", "write"}}, id="black-holed"),
        pytest.param({"hang": {"write"}}, id="writes-black-holed"),
        pytest.param({"fail": {"write"}}, id="writes-refused"),
    ],
)
async def test_two_replicas_never_deliver_at_once(
    server: FakeServer, clock: FakeClock, faults: dict[str, set[str]]
) -> None:
    """The leader loses the API server at an awkward moment (just after a renewal went out);
    stepped through in tenths of a second, there is no instant at which both deliver."""
    leader = await leading_replica(server, clock)
    standby = Replica(server, clock, "b")
    async with running(standby):
        await clock.advance(2.05)  # the renewal at 2 s went through
        leader.client.hang = faults.get("hang", set())
        leader.client.fail = faults.get("fail", set())
        for _ in range(400):
            await clock.advance(0.1)
            assert not (leader.delivering and standby.delivering), f"both deliver at {clock.t:.1f} s"
        assert leader.elector.lost.is_set()
        assert standby.delivering
    assert leader.task is not None
    assert leader.task.done()


async def test_a_leader_that_sees_another_holder_steps_down_at_once(
    server: FakeServer, clock: FakeClock
) -> None:
    leader = await leading_replica(server, clock)
    server.put({"holderIdentity": "usurper", "leaseDurationSeconds": 15})
    await clock.advance(2)  # the next renewal reads it
    assert leader.elector.lost.is_set()
    assert server.holder() == "usurper", "a leader never takes the Lease back"


# ---------------------------------------------------------------- release on a graceful stop


async def test_release_clears_the_holder_and_the_standby_takes_over_within_a_poll(
    server: FakeServer, clock: FakeClock
) -> None:
    leader = await leading_replica(server, clock)
    standby = Replica(server, clock, "b")
    async with running(standby):
        await clock.advance(5)
        assert leader.task is not None
        leader.task.cancel()  # the operator stopped; then the Lease is released
        assert await leader.elector.release()
        assert server.lease is not None
        assert server.lease["spec"]["holderIdentity"] == ""
        assert server.lease["spec"]["leaseDurationSeconds"] == 1
        assert not standby.elector.leading.is_set()
        await clock.advance(2)  # one retry period, nowhere near the 15 s lease
        assert standby.delivering
    assert server.holder() == "b"
    assert server.lease["spec"]["leaseTransitions"] == 1
    release = server.writes[-2]
    assert release["spec"]["holderIdentity"] == ""
    assert release["metadata"]["resourceVersion"], "a release names the version it read"


def _rival_takes_over(server: FakeServer) -> None:
    server.put({"holderIdentity": "rival", "leaseDurationSeconds": 15})


@pytest.mark.parametrize(
    ("case", "released", "holder"),
    [
        ("never led", False, "other"),
        ("taken by another", False, "rival"),
        ("rival writes between read and write", False, "rival"),
        ("black-holed", False, "a"),
        ("ours", True, ""),
    ],
)
async def test_release_only_clears_the_lease_while_it_is_ours(
    server: FakeServer, clock: FakeClock, case: str, released: bool, holder: str
) -> None:
    if case == "never led":
        server.put({"holderIdentity": "other", "leaseDurationSeconds": 15})
        replica = Replica(server, clock, "a")
        assert await replica.elector.release() is released
        assert server.holder() == holder
        return
    replica = await leading_replica(server, clock)
    assert replica.task is not None
    replica.task.cancel()
    await settle()
    if case == "taken by another":
        _rival_takes_over(server)
    elif case == "rival writes between read and write":
        server.before_write = lambda: _rival_takes_over(server)
    elif case == "black-holed":
        replica.client.hang = {"read"}
    release = asyncio.create_task(replica.elector.release())
    await clock.advance(10)  # the release has a renew deadline too
    assert release.done()
    assert release.result() is released
    assert server.holder() == holder
    assert replica.client.hanging == 0


# ---------------------------------------------------------------- races for the Lease


async def test_a_conflict_on_takeover_leaves_the_candidate_standing_by(
    server: FakeServer, clock: FakeClock
) -> None:
    server.put({"holderIdentity": "", "leaseDurationSeconds": 1})  # released: free to take
    server.before_write = lambda: _rival_takes_over(server)  # the rival's write lands first
    candidate = Replica(server, clock, "b")
    async with running(candidate):
        await clock.advance(10)
        assert not candidate.elector.leading.is_set()  # 409, then the rival's fresh record
        assert server.holder() == "rival"
        await clock.advance(15 + 2)  # the rival never renews
        assert candidate.delivering


@pytest.mark.parametrize("lease", ["absent", "released", "expired"])
async def test_two_candidates_racing_for_the_lease_one_wins(
    server: FakeServer, clock: FakeClock, lease: str
) -> None:
    if lease == "released":
        server.put({"holderIdentity": "", "leaseDurationSeconds": 1})
    elif lease == "expired":
        server.put({"holderIdentity": "gone", "leaseDurationSeconds": 15})
    candidates = [Replica(server, clock, "b"), Replica(server, clock, "c")]
    async with running(*candidates):
        await clock.advance(60)
        assert [c.delivering for c in candidates].count(True) == 1
        winner = next(c for c in candidates if c.delivering)
        assert server.holder() == winner.identity
