"""Leader election on a ``coordination.k8s.io`` Lease, as client-go's ``leaderelection`` does it.

Only the holder of the Lease runs the operator; the other replicas wait. Three rules keep two
replicas from delivering at once, whatever the network or the clocks do:

- **A renewal has its own deadline.** The leader renews every ``retry_period``; a renewal, its
  API calls included, must succeed within ``renew_deadline`` of when the last successful one was
  *sent* (so before the API server stored it). Otherwise the leader sets ``lost`` and stops
  delivering: a black-holed connection is cut at that deadline, not at the transport's timeout.
- **A standby judges expiry on its own clock.** It never compares ``renewTime`` with its wall
  clock: it notes, on its monotonic clock, when it first saw the current record (holder,
  ``renewTime``, ``resourceVersion``) and holds the Lease expired once that record has not
  changed for ``leaseDurationSeconds``. It saw the record after the API server stored it, so
  ``renew_deadline < duration`` puts the leader's step-down before any standby's takeover, with
  ``duration - renew_deadline`` to spare for stopping. Clock skew between replicas does not enter.
- **A graceful stop releases the Lease** once delivery has stopped: ``holderIdentity`` cleared,
  as client-go's ``ReleaseOnCancel`` does, and a standby that sees no holder takes the Lease at
  its next poll instead of waiting for it to expire.

Every write carries the ``resourceVersion`` it read, so two candidates racing for a free or
expired Lease cannot both win: one gets 409 Conflict and stays standby.
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import logging
import math
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

__all__ = ["Clock", "LeaseApi", "LeaseConfig", "LeaseElector", "LoopClock"]

logger = logging.getLogger("herald.leader")
T = TypeVar("T")


class LeaseApi(Protocol):
    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def write_lease(
        self, namespace: str, name: str, body: Mapping[str, Any], *, create: bool
    ) -> bool: ...


class Clock(Protocol):
    """Monotonic seconds, and a sleep on the same clock (tests drive a fake one)."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class LoopClock:
    """The event loop's monotonic clock."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True, kw_only=True)
class LeaseConfig:
    namespace: str
    name: str = "herald"
    identity: str
    duration: float = 15.0  # a record unchanged this long (on a standby's clock) is expired
    renew_deadline: float = 10.0  # a leader that has not renewed for this long stops delivering
    retry_period: float = 2.0  # between attempts, leading or waiting

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.duration:
            raise ValueError(
                "leader election needs 0 < retry period < renew deadline < lease duration, got "
                f"{self.retry_period} s, {self.renew_deadline} s, {self.duration} s"
            )

    @classmethod
    def scaled(cls, *, namespace: str, name: str, identity: str, duration: float) -> LeaseConfig:
        """client-go's proportions (15 s lease, 10 s renew deadline, 2 s retry) for any duration."""
        return cls(
            namespace=namespace,
            name=name,
            identity=identity,
            duration=duration,
            renew_deadline=duration * 2 / 3,
            retry_period=min(2.0, duration / 5),
        )


class _Round(enum.Enum):
    WON = "won"  # the Lease is ours, written
    HELD = "held"  # another replica holds it and it has not expired
    MISSED = "missed"  # a conflict, an error or the deadline: try again


_Record = tuple[str, str, str]  # holderIdentity, renewTime, resourceVersion


def _record(lease: Mapping[str, Any]) -> _Record:
    spec = lease.get("spec") or {}
    meta = lease.get("metadata") or {}
    return (
        str(spec.get("holderIdentity") or ""),
        str(spec.get("renewTime") or ""),
        str(meta.get("resourceVersion") or ""),
    )


def _precondition(lease: Mapping[str, Any]) -> dict[str, str]:
    """The version read, which the API server checks on write (409 Conflict if it moved on)."""
    version = _record(lease)[2]
    return {"resourceVersion": version} if version else {}


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _wall_time() -> str:
    """``renewTime`` and ``acquireTime`` are for people reading the Lease; no replica judges them."""
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    def __init__(self, api: LeaseApi, config: LeaseConfig, *, clock: Clock | None = None) -> None:
        self._api = api
        self._config = config
        self._clock: Clock = clock or LoopClock()
        self._seen: tuple[_Record, float] | None = None  # another holder's record, first seen when
        self._renewed_at = -math.inf  # when the last successful write was sent
        self.leading = asyncio.Event()
        self.lost = asyncio.Event()

    async def run(self) -> None:
        """Campaign until leading (sets ``leading``); then renew until a renewal misses its deadline
        or another replica holds the Lease (sets ``lost`` and returns)."""
        cfg = self._config
        while True:
            sent = self._clock.now()
            if await self._attempt(sent + cfg.renew_deadline) is _Round.WON:
                break
            await self._clock.sleep(cfg.retry_period)
        self._renewed_at = sent
        self.leading.set()
        logger.info("lease %s/%s acquired by %s", cfg.namespace, cfg.name, cfg.identity)
        while await self._renew():
            pass
        self.lost.set()

    async def release(self) -> bool:
        """Clear the holder if the Lease is still ours, so a standby takes it at once. Call only
        once this replica has stopped delivering. True when released."""
        if not self.leading.is_set():
            return False
        cfg = self._config
        try:
            released = await self._by(self._clock.now() + cfg.renew_deadline, self._release())
        except Exception as exc:  # the standby takes over when the Lease expires instead
            logger.warning("lease %s/%s: not released (%s)", cfg.namespace, cfg.name, exc)
            return False
        if released:
            logger.info("lease %s/%s released by %s", cfg.namespace, cfg.name, cfg.identity)
        return released

    async def _renew(self) -> bool:
        """One renewal, retried every ``retry_period`` until ``renew_deadline`` after the last one."""
        cfg = self._config
        await self._clock.sleep(cfg.retry_period)
        deadline = self._renewed_at + cfg.renew_deadline
        while (sent := self._clock.now()) < deadline:
            outcome = await self._attempt(deadline)
            if outcome is _Round.WON:
                self._renewed_at = sent
                return True
            if outcome is _Round.HELD:
                logger.error("lease %s/%s: held by another replica; stepping down", cfg.namespace, cfg.name)
                return False
            await self._clock.sleep(max(0.0, min(cfg.retry_period, deadline - self._clock.now())))
        logger.error(
            "lease %s/%s: not renewed within %.1f s; stepping down",
            cfg.namespace,
            cfg.name,
            cfg.renew_deadline,
        )
        return False

    async def _attempt(self, deadline: float) -> _Round:
        cfg = self._config
        try:
            return await self._by(deadline, self._round())
        except Exception as exc:  # unreachable, refused or too slow: this round is missed
            logger.warning("lease %s/%s: %s", cfg.namespace, cfg.name, exc or type(exc).__name__)
            return _Round.MISSED

    async def _by(self, deadline: float, call: Awaitable[T]) -> T:
        """``call``'s result, or ``TimeoutError`` at ``deadline`` on this elector's clock (the call
        cancelled): an API call never outlives the deadline it serves."""
        task = asyncio.ensure_future(call)
        timer = asyncio.ensure_future(self._clock.sleep(max(0.0, deadline - self._clock.now())))
        try:
            await asyncio.wait((task, timer), return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                return task.result()
            raise TimeoutError("the API server did not answer before the renew deadline")
        finally:
            task.cancel()
            timer.cancel()

    async def _round(self) -> _Round:
        """Read the Lease; take it if free, released, expired or ours, with the version read."""
        cfg = self._config
        current = await self._api.read_lease(cfg.namespace, cfg.name)
        if current is None:
            created = await self._api.write_lease(cfg.namespace, cfg.name, self._body(None), create=True)
            return _Round.WON if created else _Round.MISSED
        holder = _record(current)[0]
        if holder != cfg.identity:
            if self.leading.is_set() or (holder and not self._expired(current)):
                return _Round.HELD  # a leader never takes a Lease back: someone else acted on it
            logger.info("lease %s/%s: taking over from %s", cfg.namespace, cfg.name, holder or "nobody")
        written = await self._api.write_lease(cfg.namespace, cfg.name, self._body(current), create=False)
        return _Round.WON if written else _Round.MISSED

    def _expired(self, lease: Mapping[str, Any]) -> bool:
        """Unchanged for ``leaseDurationSeconds`` since this replica first saw it, on its own clock."""
        now = self._clock.now()
        record = _record(lease)
        if self._seen is None or self._seen[0] != record:
            self._seen = (record, now)
        duration = _int((lease.get("spec") or {}).get("leaseDurationSeconds"), 0)
        return now - self._seen[1] >= (duration if duration > 0 else self._config.duration)

    def _body(self, current: Mapping[str, Any] | None) -> dict[str, Any]:
        cfg = self._config
        now = _wall_time()
        meta: dict[str, Any] = {"name": cfg.name, "namespace": cfg.namespace}
        spec: dict[str, Any] = {
            "holderIdentity": cfg.identity,
            # Rounded up: a standby must never count a shorter lease than the one this leader keeps.
            "leaseDurationSeconds": math.ceil(cfg.duration),
            "renewTime": now,
            "acquireTime": now,
            "leaseTransitions": 0,
        }
        if current is not None:
            old = current.get("spec") or {}
            transitions = _int(old.get("leaseTransitions"), 0)
            if old.get("holderIdentity") == cfg.identity:
                spec["acquireTime"] = old.get("acquireTime") or now
                spec["leaseTransitions"] = transitions
            else:
                spec["leaseTransitions"] = transitions + 1
            meta.update(_precondition(current))
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}

    async def _release(self) -> bool:
        cfg = self._config
        current = await self._api.read_lease(cfg.namespace, cfg.name)
        if current is None or _record(current)[0] != cfg.identity:
            return False  # not ours any more: nothing to release
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": cfg.name, "namespace": cfg.namespace, **_precondition(current)},
            "spec": {"holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": _wall_time()},
        }
        return await self._api.write_lease(cfg.namespace, cfg.name, body, create=False)
