"""The kopf shell's registry: what Herald's replacement of kopf's diff base relies on."""

from __future__ import annotations

import kopf

from herald.handlers import NoDiffBase, build_registry
from herald.settings import Settings


def test_no_handler_reads_a_diff_base() -> None:
    """kopf reads the diff base for change handlers (and daemons' idle resets) only: with every
    source registered, Herald has neither, so an empty diff base changes no behaviour."""
    registry = build_registry(Settings(sources=("deployments", "argocd", "flux")))
    assert registry._watching.get_all_handlers()  # the event handlers are there
    assert not registry._changing.get_all_handlers()
    assert not registry._spawning.get_all_handlers()


def test_the_diff_base_is_empty_whatever_the_object() -> None:
    body = kopf.Body(
        {"metadata": {"name": "web", "labels": {"a": "b"}}, "spec": {"x": 1}, "status": {"y": 2}}
    )
    storage = NoDiffBase()
    assert storage.build(body=body) == {}
    assert storage.fetch(body=body) is None
