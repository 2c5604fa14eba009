"""Following one kind as client-go's reflector does: list, then watch from the list's version.

kopf follows Webhooks and ClusterWebhooks (and, with sources, what they watch). Environments, the
hot path, and Delivery objects are followed here instead: between an Environment's watch event
and Herald's handler, kopf's per-object worker and processing took 0.5-0.7 ms, and as much again
for the ledger's echo of every event; through ``herald run`` that was a p50 of 2.9-3.4x the raw
notifier's, against 1.8-2.0x without it (README, Performance).

A watch that ends (the server's ``timeoutSeconds``) is opened again from the last version seen,
bookmarks included; a version the server no longer has (410 Gone) lists again; any other failure
is retried with a doubling delay, said in a warning with the API server's answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol

from herald.kube import ApiError, ApiGone, Page

__all__ = ["NOTHING", "ListWatch", "Seen", "WatchApi"]

logger = logging.getLogger("herald.listwatch")

# A selector no object matches: its empty page still carries the collection's version.
NOTHING = "herald.dev/listwatch=none"
MOST_DELAY = 60.0  # seconds between tries of a failing list or watch, at most

Seen = Callable[[str, Mapping[str, Any]], None]  # (ADDED | MODIFIED | DELETED, the object)


class WatchApi(Protocol):
    """The calls a ListWatch makes (``kube.KubeClient``)."""

    def pages(
        self,
        plural: str,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        metadata_only: bool = False,
        cached: bool = False,
    ) -> AsyncIterator[Page]: ...

    def watch(
        self,
        plural: str,
        namespace: str | None,
        *,
        resource_version: str | None,
        metadata_only: bool = False,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]: ...


class ListWatch:
    """Hands every version of every object of ``plural`` in ``namespace`` (None: all) to ``seen``.

    ``listing`` False: the objects that exist are not handed on; changes are followed from now
    (a missed one is for the caller's own scan to find). ``seen`` must not block: it is called
    in the watch's loop.
    """

    def __init__(
        self,
        api: WatchApi,
        plural: str,
        namespace: str | None,
        *,
        seen: Seen,
        timeout_seconds: int,
        listing: bool = True,
        metadata_only: bool = False,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._api = api
        self._plural = plural
        self._namespace = namespace
        self._seen = seen
        self._timeout = timeout_seconds
        self._listing = listing
        self._metadata_only = metadata_only
        self._sleep = sleep
        self.listed = False  # the first list is complete: everything that existed was handed on

    @property
    def what(self) -> str:
        return f"{self._plural} in {self._namespace or 'every namespace'}"

    async def _list(self) -> str | None:
        """The version to watch from; with ``listing``, every object is handed on as ADDED first."""
        version: str | None = None
        async for page in self._api.pages(
            self._plural,
            self._namespace,
            label_selector=None if self._listing else NOTHING,
            metadata_only=self._metadata_only,
        ):
            version = page.resource_version or version
            for item in page if self._listing else ():
                self._seen("ADDED", item)
        self.listed = True
        return version

    async def run(self) -> None:
        version: str | None = None
        stale = True  # list (again) before watching
        failures = 0
        while True:
            try:
                if stale:
                    version, stale = await self._list(), False
                async for kind, obj in self._api.watch(
                    self._plural,
                    self._namespace,
                    resource_version=version,
                    metadata_only=self._metadata_only,
                    timeout_seconds=self._timeout,
                ):
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    if kind != "BOOKMARK":
                        self._seen(kind, obj)
                failures = 0
            except ApiGone:
                stale = True  # the version is too old for the server: list again from now
                logger.info("%s: the watch's version expired; listing again", self.what)
            except Exception as exc:  # the API's failure, or a bug in ``seen``: neither ends it for good
                failures += 1
                delay = min(MOST_DELAY, 2.0**failures)
                if isinstance(exc, ApiError):
                    logger.warning("watching %s failed (%s); again in %.0fs", self.what, exc, delay)
                else:
                    logger.exception("watching %s failed; again in %.0fs", self.what, delay)
                await self._sleep(delay)
