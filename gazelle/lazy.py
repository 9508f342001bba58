"""Package attributes imported on first use (PEP 562 module ``__getattr__``).

A package lists which module holds each name; the first access imports that module and keeps the
value in the package's namespace, so later accesses cost nothing. It keeps ``import gazelle`` and
``import gazelle.runtime`` free of the client's and Flask's dependencies until they are used.
It imports nothing from the rest of Gazelle.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def lazy_attributes(package: str, modules: Mapping[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__``: ``modules[name]`` is imported on first use, the value kept in ``namespace``."""

    def attribute(name: str) -> Any:
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return attribute
