"""Leader election on a ``coordination.k8s.io`` Lease, so two replicas deliver everything once.

Only the holder of the Lease runs the operator; the other replica waits and takes over when the
holder stops renewing (killed, partitioned). Deliveries resume from the webhooks' status, which
is where the previous leader persisted them. A leader that cannot renew in time steps down by
stopping its operator rather than risk two active replicas.

On a real API server every write carries the ``resourceVersion`` it read, so two candidates
racing for an expired Lease cannot both win (one gets 409 Conflict and stays standby).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["LeaseApi", "LeaseConfig", "LeaseElector"]

logger = logging.getLogger("herald.leader")


class LeaseApi(Protocol):
    async def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def write_lease(
        self, namespace: str, name: str, body: Mapping[str, Any], *, create: bool
    ) -> bool: ...


@dataclass(frozen=True, kw_only=True)
class LeaseConfig:
    namespace: str
    name: str = "herald"
    identity: str
    duration: float = 15.0  # a holder silent this long is presumed gone
    renew_every: float = 5.0
    retry_every: float = 2.0


def _now() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC)


def _micro(ts: datetime.datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: Any) -> datetime.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


class LeaseElector:
    def __init__(self, api: LeaseApi, config: LeaseConfig) -> None:
        self._api = api
        self._config = config
        self.leading = asyncio.Event()
        self.lost = asyncio.Event()

    def _body(self, current: Mapping[str, Any] | None, *, transitions: int) -> dict[str, Any]:
        now = _micro(_now())
        spec = {
            "holderIdentity": self._config.identity,
            "leaseDurationSeconds": int(self._config.duration),
            "renewTime": now,
            "leaseTransitions": transitions,
        }
        meta: dict[str, Any] = {"name": self._config.name, "namespace": self._config.namespace}
        if current is not None:
            held = (current.get("spec") or {}).get("holderIdentity") == self._config.identity
            spec["acquireTime"] = (current.get("spec") or {}).get("acquireTime") if held else now
            version = (current.get("metadata") or {}).get("resourceVersion")
            if version:
                meta["resourceVersion"] = version
        else:
            spec["acquireTime"] = now
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}

    async def try_acquire(self) -> bool:
        """One round: take or renew the Lease if it is free, expired or ours."""
        cfg = self._config
        current = await self._api.read_lease(cfg.namespace, cfg.name)
        if current is None:
            return await self._api.write_lease(
                cfg.namespace, cfg.name, self._body(None, transitions=0), create=True
            )
        spec = current.get("spec") or {}
        holder = spec.get("holderIdentity")
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder != cfg.identity:
            renewed = _parse(spec.get("renewTime"))
            duration = float(spec.get("leaseDurationSeconds") or cfg.duration)
            if holder and renewed is not None and (_now() - renewed).total_seconds() < duration:
                return False
            transitions += 1
            logger.info("lease %s/%s: taking over from %s", cfg.namespace, cfg.name, holder or "nobody")
        body = self._body(current, transitions=transitions)
        return await self._api.write_lease(cfg.namespace, cfg.name, body, create=False)

    async def run(self) -> None:
        """Campaign until leading, then renew; set ``lost`` and return when leadership is lost."""
        cfg = self._config
        while not self.leading.is_set():
            try:
                if await self.try_acquire():
                    logger.info("lease %s/%s acquired by %s", cfg.namespace, cfg.name, cfg.identity)
                    self.leading.set()
                    break
            except Exception as exc:  # the API server is unreachable: keep campaigning
                logger.warning("lease %s/%s: %s", cfg.namespace, cfg.name, exc)
            await asyncio.sleep(cfg.retry_every)
        last_renewal = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(cfg.renew_every)
            try:
                renewed = await self.try_acquire()
            except Exception as exc:
                logger.warning("lease %s/%s renewal failed: %s", cfg.namespace, cfg.name, exc)
                renewed = False
            now = asyncio.get_running_loop().time()
            if renewed:
                last_renewal = now
            elif now - last_renewal > cfg.duration * 2 / 3:
                logger.error("lease %s/%s lost; stepping down", cfg.namespace, cfg.name)
                self.lost.set()
                return
