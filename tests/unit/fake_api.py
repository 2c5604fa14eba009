"""An in-memory stand-in for the API calls the Delivery store makes, with the semantics that matter
to it: 409 on a taken name, 404 on a missing object, merge patches, label selectors, pages."""

from __future__ import annotations

import copy
import itertools
from collections.abc import AsyncIterator, Mapping
from typing import Any

from herald.kube import DEFAULT_BACKOFF, ApiConflict, ApiError, ApiNotFound, Backoff, Page
from herald.testing import label_selector

Key = tuple[str, str | None, str]  # plural, namespace, name


def merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """RFC 7386: null removes, objects merge, anything else replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class FakeApi:
    def __init__(self, page_size: int = 500) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.writes: list[tuple[str, str]] = []  # (verb, name)
        self.failure: ApiError | None = None  # raised by every write while set
        self.refused = 0  # writes that raised it
        self.page_size = page_size
        self.listed: list[tuple[str | None, bool]] = []  # (label selector, from the watch cache)
        self._versions = itertools.count(1)

    def add(self, obj: Mapping[str, Any], plural: str = "deliveries") -> None:
        meta = obj["metadata"]
        self.objects[(plural, meta.get("namespace"), meta["name"])] = copy.deepcopy(dict(obj))

    def of(self, plural: str = "deliveries") -> list[dict[str, Any]]:
        return [o for (p, _, _), o in self.objects.items() if p == plural]

    def _write(self, verb: str, name: str) -> None:
        if self.failure is not None:
            self.refused += 1
            raise self.failure
        self.writes.append((verb, name))

    async def create(
        self,
        plural: str,
        namespace: str | None,
        body: Mapping[str, Any],
        *,
        backoff: Backoff = DEFAULT_BACKOFF,
    ) -> None:
        name = body["metadata"]["name"]
        self._write("create", name)
        if (plural, namespace, name) in self.objects:
            raise ApiConflict("AlreadyExists", status=409)
        obj = copy.deepcopy(dict(body))
        obj["metadata"].setdefault("creationTimestamp", "2026-11-29T12:00:00Z")
        obj["metadata"]["resourceVersion"] = str(next(self._versions))
        self.objects[(plural, namespace, name)] = obj

    async def get(
        self, plural: str, namespace: str | None, name: str, *, backoff: Backoff = DEFAULT_BACKOFF
    ) -> dict[str, Any] | None:
        found = self.objects.get((plural, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    async def patch(
        self,
        plural: str,
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any],
        *,
        backoff: Backoff = DEFAULT_BACKOFF,
    ) -> None:
        self._write("patch", name)
        found = self.objects.get((plural, namespace, name))
        if found is None:
            raise ApiNotFound("not found", status=404)
        merge(found, patch)

    async def delete(
        self, plural: str, namespace: str | None, name: str, *, backoff: Backoff = DEFAULT_BACKOFF
    ) -> bool:
        self._write("delete", name)
        return self.objects.pop((plural, namespace, name), None) is not None

    async def pages(
        self,
        plural: str,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        metadata_only: bool = False,
        cached: bool = False,
    ) -> AsyncIterator[Page]:
        self.listed.append((label_selector, cached))
        wanted = _selector(label_selector)
        items = [
            copy.deepcopy({"metadata": o["metadata"]} if metadata_only else o)
            for (p, ns, _), o in sorted(self.objects.items(), key=lambda kv: str(kv[0]))
            if p == plural and namespace in (None, ns) and wanted(o["metadata"].get("labels") or {})
        ]
        for start in range(0, max(len(items), 1), self.page_size):
            yield Page(items[start : start + self.page_size], resource_version="1")

    async def watch(
        self,
        plural: str,
        namespace: str | None,
        *,
        resource_version: str | None,
        metadata_only: bool = False,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        for _ in ():
            yield ("", {})


def _selector(text: str | None) -> Any:
    return label_selector(text) if text else (lambda _labels: True)
