"""Builders turn a stored bundle into something a target can run: ``Builder.build(...) -> str`` (a reference).

A builder knows nothing of targets. What the reference means is agreed between a builder and the
target that ``server/wiring.py`` pairs it with:

- ``VenvBuilder`` (local target): an environment on this host that satisfies the bundle's pins (the
  server's own, or a virtualenv cached by the hash of the pins), as ``venv:<python>|<bundle path>``.
- ``AppendBuilder`` / ``DockerBuilder`` (later): a digest-pinned image reference in a registry.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

Log = Callable[[str], None]


class Builder(Protocol):
    def build(self, bundle_path: Path, manifest: Mapping[str, Any], log: Log) -> str:
        """Make the bundle runnable; stream progress lines to ``log``; return the reference to run.

        Raises ``gazelle.errors.GazelleError`` (a ``TargetError`` or ``ConfigError``) naming the cause.
        """
        ...
