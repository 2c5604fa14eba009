"""Tasks that outlive the code that starts them, created in an empty context.

A task copies the context it is created in, and keeps it for as long as the task object lives.
Started from a kopf handler, that context holds kopf's handler variables: the cause, and with it
the whole watched object. A webhook's worker lives as long as the webhook, so each webhook kept a
copy of its object's body and kopf's wrappers around it (24 MB with 5,000 Webhooks; README,
Performance). Herald's background work reads no context variable, so it starts with none.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["start"]

T = TypeVar("T")


def start(coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
    return asyncio.create_task(coro, name=name, context=contextvars.Context())
