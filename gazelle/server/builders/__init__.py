"""Builders turn a stored bundle into something a target can run: ``Builder.build(...) -> artifact``.

A builder knows nothing of targets or registries; ``server/wiring.py`` pairs them. What each returns
is a value from ``gazelle.server.artifacts`` (or ``gazelle.server.oci``), never a string to parse:

- ``VenvBuilder`` (local target): a ``LocalEnv``, an interpreter on this host that satisfies the
  bundle's pins (the server's own, or a virtualenv cached by the hash of the pins).
- ``AppendBuilder``: an OCI ``Image`` value (base image + dependency, runtime and model layers) for
  the push stage to publish.
- ``DockerBuilder``: an ``EngineImage`` built by a Docker engine, which the push stage has the engine
  push.

Builders raise ``BuildError`` (or ``ConfigError`` for a setting that cannot work), naming the cause.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

Log = Callable[[str], None]


class Builder(Protocol):
    def build(self, bundle_path: Path, manifest: Mapping[str, Any], log: Log, *, version: int = 0) -> Any:
        """Make the bundle runnable; stream progress lines to ``log``; return the artifact.

        ``version`` is the model version being built (image builders label the image with it).

        The artifact is a ``LocalEnv``, an ``oci.Image`` or an ``EngineImage`` (see the module
        docstring). Raises ``BuildError`` or ``ConfigError`` naming the cause.
        """
        ...

    def close(self) -> None:
        """Release what the builder holds (connections, clients); it is not used afterwards."""
        ...
