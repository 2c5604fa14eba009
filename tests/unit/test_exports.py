"""Each module's ``__all__`` is its public surface: it exists, names only what the module defines,
and names everything other Herald modules, the bench and the tests import from it."""

from __future__ import annotations

import ast
import collections
import functools
import importlib
import pathlib
import pkgutil
import types

import pytest

import herald

ROOT = pathlib.Path(herald.__file__).resolve().parent
PROJECT = ROOT.parents[1]
MODULES = sorted(
    m.name for m in pkgutil.walk_packages([str(ROOT)], prefix="herald.") if not m.name.endswith("__main__")
)


@functools.cache
def imports() -> dict[str, set[str]]:
    """Module -> the names Herald, the bench and the tests import from it (``from m import n``)."""
    found: dict[str, set[str]] = collections.defaultdict(set)
    for folder in (ROOT, PROJECT / "bench", PROJECT / "tests"):
        for path in folder.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module:
                    found[node.module] |= {a.name for a in node.names}
    return found


def imported_from(module: str) -> set[str]:
    return imports().get(module, set())


@pytest.mark.parametrize("name", [m for m in MODULES if m != "herald"])
def test_all_names_what_the_module_defines_and_others_use(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} declares no __all__"
    assert len(set(exported)) == len(exported), f"{name}: __all__ repeats a name"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}: __all__ names what it does not define: {missing}"
    undeclared = sorted(
        n
        for n in imported_from(name)
        if not n.startswith("_")
        and n not in exported
        and not isinstance(getattr(module, n, None), types.ModuleType)
    )
    assert not undeclared, f"{name}: imported elsewhere but not in __all__: {undeclared}"
