"""ListWatch against a scripted API: what it hands on, and from which version it lists or watches
again after a stream ends, a 410 Gone, an unreachable server and a bug of its caller."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from herald.kube import ApiForbidden, ApiGone, ApiUnreachable, Page
from herald.listwatch import NOTHING, ListWatch


class Done(BaseException):
    """The script is over: ends ListWatch.run (which retries every Exception)."""


def obj(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": version}}


class ScriptedApi:
    """Lists answer the objects at the list's version; each watch plays the next script (events,
    then maybe an exception); when the scripts are over the watch raises Done."""

    def __init__(
        self, objects: list[dict[str, Any]], *, versions: list[str], scripts: list[list[Any]]
    ) -> None:
        self.objects = objects
        self._versions = iter(versions)
        self._scripts = scripts
        self.calls: list[tuple[str, str | None]] = []  # ("list", selector) | ("watch", version)
        self.metadata_only: list[bool] = []

    async def pages(
        self,
        plural: str,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        metadata_only: bool = False,
        cached: bool = False,
    ) -> AsyncIterator[Page]:
        self.calls.append(("list", label_selector))
        self.metadata_only.append(metadata_only)
        version = next(self._versions)
        items = [] if label_selector == NOTHING else self.objects
        for start in range(0, max(len(items), 1), 2):  # pages of two
            yield Page(items[start : start + 2], resource_version=version)

    async def watch(
        self,
        plural: str,
        namespace: str | None,
        *,
        resource_version: str | None,
        metadata_only: bool = False,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        self.calls.append(("watch", resource_version))
        self.metadata_only.append(metadata_only)
        if not self._scripts:
            raise Done
        for step in self._scripts.pop(0):
            if isinstance(step, BaseException):
                raise step
            yield step


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.slept: list[float] = []

    def __call__(self, kind: str, body: Mapping[str, Any]) -> None:
        self.seen.append((kind, body["metadata"]["name"]))

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


async def follow(api: ScriptedApi, recorder: Recorder, **options: Any) -> ListWatch:
    watch = ListWatch(
        api, "environments", None, seen=recorder, timeout_seconds=60, sleep=recorder.sleep, **options
    )
    with pytest.raises(Done):
        await watch.run()
    return watch


async def test_lists_everything_then_watches_from_the_lists_version_and_goes_on_from_the_last_seen() -> None:
    api = ScriptedApi(
        [obj("a", "5"), obj("b", "6"), obj("c", "7")],
        versions=["10"],
        scripts=[
            [("MODIFIED", obj("a", "11")), ("BOOKMARK", {"metadata": {"resourceVersion": "15"}})],
            [("DELETED", obj("b", "16"))],  # the server ended the first stream (timeoutSeconds)
        ],
    )
    recorder = Recorder()
    watch = await follow(api, recorder)
    assert recorder.seen == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("ADDED", "c"),
        ("MODIFIED", "a"),
        ("DELETED", "b"),
    ]
    # One list, then each watch from the newest version seen, a bookmark's included.
    assert api.calls == [("list", None), ("watch", "10"), ("watch", "15"), ("watch", "16")]
    assert watch.listed
    assert recorder.slept == []


async def test_a_version_the_server_no_longer_has_lists_again() -> None:
    api = ScriptedApi(
        [obj("a", "5")],
        versions=["10", "40"],
        scripts=[[("MODIFIED", obj("a", "11")), ApiGone("too old", status=410)], []],
    )
    recorder = Recorder()
    await follow(api, recorder)
    assert recorder.seen == [("ADDED", "a"), ("MODIFIED", "a"), ("ADDED", "a")]
    assert api.calls == [("list", None), ("watch", "10"), ("list", None), ("watch", "40"), ("watch", "40")]
    assert recorder.slept == []  # nothing failed: the server only forgot the version


async def test_failures_are_retried_with_a_doubling_delay_from_the_same_version(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = ScriptedApi(
        [],
        versions=["10"],
        scripts=[
            [ApiUnreachable("connection refused")],
            [ApiForbidden("environments is forbidden: User cannot watch", status=403)],
            [("ADDED", obj("new", "12"))],
            [ApiUnreachable("reset")],
        ],
    )
    recorder = Recorder()
    with caplog.at_level(logging.WARNING, logger="herald.listwatch"):
        await follow(api, recorder)
    assert api.calls == [("list", None)] + [("watch", "10")] * 3 + [("watch", "12")] * 2
    assert recorder.slept == [2.0, 4.0, 2.0]  # a watch that worked starts the count again
    assert recorder.seen == [("ADDED", "new")]
    assert "User cannot watch" in caplog.text  # the server's answer, for whoever reads the log


async def test_a_failing_list_is_retried_before_anything_is_watched() -> None:
    class FailingOnce(ScriptedApi):
        failed = False

        async def pages(self, plural: str, namespace: str | None, **kwargs: Any) -> AsyncIterator[Page]:
            if not self.failed:
                self.failed = True
                self.calls.append(("list", "refused"))
                raise ApiUnreachable("connection refused")
            async for page in super().pages(plural, namespace, **kwargs):
                yield page

    api = FailingOnce([obj("a", "5")], versions=["10"], scripts=[])
    recorder = Recorder()
    watch = ListWatch(api, "environments", "shop", seen=recorder, timeout_seconds=60, sleep=recorder.sleep)
    assert not watch.listed
    with pytest.raises(Done):
        await watch.run()
    assert api.calls == [("list", "refused"), ("list", None), ("watch", "10")]
    assert recorder.seen == [("ADDED", "a")]
    assert watch.listed


async def test_not_listing_follows_changes_from_now() -> None:
    api = ScriptedApi([obj("old", "5")], versions=["10"], scripts=[[("MODIFIED", obj("x", "11"))]])
    recorder = Recorder()
    await follow(api, recorder, listing=False, metadata_only=True)
    assert api.calls == [("list", NOTHING), ("watch", "10"), ("watch", "11")]
    assert recorder.seen == [("MODIFIED", "x")]  # what existed before is not handed on
    assert all(api.metadata_only)


async def test_a_bug_in_the_caller_is_logged_and_the_watch_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    api = ScriptedApi(
        [],
        versions=["10"],
        scripts=[[("ADDED", obj("bad", "11")), ("ADDED", obj("lost", "12"))], [("ADDED", obj("good", "13"))]],
    )
    handed: list[str] = []

    def seen(kind: str, body: Mapping[str, Any]) -> None:
        if body["metadata"]["name"] == "bad":
            raise KeyError("a bug")
        handed.append(body["metadata"]["name"])

    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    watch = ListWatch(api, "environments", None, seen=seen, timeout_seconds=60, sleep=sleep)
    with caplog.at_level(logging.ERROR, logger="herald.listwatch"), pytest.raises(Done):
        await watch.run()
    assert handed == ["good"]
    assert api.calls[-2:] == [("watch", "11"), ("watch", "13")]  # on from the version after the bad one
    assert slept == [2.0]
    assert "a bug" in caplog.text
