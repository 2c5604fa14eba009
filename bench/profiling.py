"""cProfile output, summarised so that it says what bounds a figure.

A benchmark process holds the operator, the emulator, the receivers and the driver, so time is
first split by package. The top functions by own time are then traced up their heaviest callers
to the first frame outside the standard library, because "deepcopy" or "find_spec" alone says
nothing; "find_spec, via httpcore's current_async_library" says what to fix.
"""

from __future__ import annotations

import collections
import pstats
from typing import Any

__all__ = ["summarise"]

Key = tuple[str, int, str]
Entry = tuple[int, int, float, float, dict[Key, Any]]

_PACKAGES = (
    ("/herald/", "herald"),
    ("/kopf/", "kopf"),
    ("/kmock/", "kmock (the emulator)"),
    ("/aiohttp/", "aiohttp (emulator, receivers, kopf's client)"),
    ("/httpx/", "httpx"),
    ("/httpcore/", "httpcore"),
    ("/anyio/", "anyio"),
    ("/pydantic", "pydantic"),
    ("/yarl/", "yarl/multidict"),
    ("/multidict/", "yarl/multidict"),
    ("/bench/", "bench (driver, receivers)"),
)


def _package(filename: str) -> str:
    for marker, name in _PACKAGES:
        if marker in filename:
            return name
    if filename == "~":
        return "builtins"
    if filename.startswith("<frozen "):
        return "stdlib " + filename[len("<frozen ") :].split(".", maxsplit=1)[0].rstrip(">")
    if "/lib/python3" in filename and "site-packages" not in filename:
        tail = filename.split("/lib/python3", 1)[1].split("/", 2)
        module = tail[1] if len(tail) > 1 else filename
        return "stdlib " + module.removesuffix(".py")
    return "other"


def _library(key: Key) -> bool:
    name = _package(key[0])
    return name == "builtins" or name.startswith("stdlib")


def _where(key: Key) -> str:
    filename, line, func = key
    if filename == "~":
        return func
    for marker in ("site-packages/", "/operator/", "/lib/python3.11/", "/work/main/"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
            break
    return f"{filename}:{line}({func})"


def _origin(raw: dict[Key, Entry], key: Key) -> str:
    """The first caller outside the standard library, following the heaviest callers."""
    current, seen = key, {key}
    for _ in range(12):
        if not _library(current):
            return _where(current) if current != key else ""
        callers = raw.get(current, (0, 0, 0.0, 0.0, {}))[4]
        fresh = [k for k in callers if k not in seen]  # recursion (deepcopy) would loop
        if not fresh:
            return ""
        current = max(fresh, key=lambda k: callers[k][3])
        seen.add(current)
    return ""


def summarise(stats: pstats.Stats, *, events: int | None, top: int = 15) -> str:
    """Own time by package, the top functions by own time (with where they are called from),
    and Herald's functions by cumulative time. ``events`` divides the totals, when given."""
    raw: dict[Key, Entry] = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw.values()) or 1e-9
    by_package: dict[str, float] = collections.defaultdict(float)
    for key, entry in raw.items():
        by_package[_package(key[0])] += entry[2]
    head = f"CPU in the profiled run: {total * 1000:.0f} ms"
    if events:
        head += f", {total / events * 1000:.2f} ms per event"
    lines = [head, "", "own CPU time by package (the whole process: operator, emulator, receivers, driver)"]
    for name, tt in sorted(by_package.items(), key=lambda kv: -kv[1])[:14]:
        each = f"  {tt / events * 1000:8.3f} ms/event" if events else ""
        lines.append(f"  {tt / total * 100:5.1f}%{each}  {name}")
    lines += [
        "",
        f"top {top} functions by own CPU time",
        f"  {'calls':>9}  {'own ms':>8}  {'cum ms':>8}  function",
    ]
    for key, entry in sorted(raw.items(), key=lambda kv: -kv[1][2])[:top]:
        via = _origin(raw, key)
        lines.append(f"  {entry[1]:>9}  {entry[2] * 1000:8.1f}  {entry[3] * 1000:8.1f}  {_where(key)}")
        if via:
            lines.append(f"  {'':>9}  {'':>8}  {'':>8}    via {via}")
    herald = [(key, entry) for key, entry in raw.items() if _package(key[0]) == "herald"]
    lines += ["", f"top {top} Herald functions by cumulative time (a coroutine's counts every resumption)"]
    for key, entry in sorted(herald, key=lambda kv: -kv[1][3])[:top]:
        lines.append(f"  {entry[1]:>9}  {entry[2] * 1000:8.1f}  {entry[3] * 1000:8.1f}  {_where(key)}")
    return "\n".join(lines)
