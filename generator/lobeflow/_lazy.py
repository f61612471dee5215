"""Lazy package attributes: heavy submodules load on first use, so the CLI starts fast."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_attributes(namespace: dict[str, Any], sources: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` that imports `sources[name]` (a module path) on first access.

    Args:
        namespace: the package's `globals()`; a loaded attribute is cached there.
        sources: attribute name -> module that defines it.
    """
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        module = sources.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
