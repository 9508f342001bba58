"""What the stages hand each other: builders make artifacts, registries publish them, targets run them.

Values, never strings to parse (STYLE: "Images are values"):

- ``LocalEnv``: an interpreter on this host that satisfies a bundle's pins, and the stored bundle it
  serves. ``VenvBuilder`` makes it; ``LocalTarget`` runs it. Nothing to push.
- ``ImageRef``: a digest-pinned image in a registry (``host[:port]/repository@sha256:<hex>``). What
  ``Registry.push`` returns and what the docker and kubernetes targets run: a target only ever deploys
  a digest, never a tag.
- ``EngineImage``: an image held by a Docker engine after ``DockerBuilder`` built it; the engine
  pushes it and the push stage turns it into an ``ImageRef``.

(The in-memory OCI image that ``AppendBuilder`` assembles, ``gazelle.server.oci.Image``, is pushed
by ``Registry.push`` and never stored.)

``Artifact`` is what a ``Release`` carries and what the store keeps, as JSON (``to_json`` /
``artifact_from_json``), so a restarted server can run it again without a rebuild.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Union

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class LocalEnv:
    """``python`` runs ``gazelle.cli runtime`` for the bundle at ``bundle``."""

    python: str
    bundle: Path

    def to_json(self) -> dict[str, Any]:
        return {"kind": "local", "python": self.python, "bundle": str(self.bundle)}

    def __str__(self) -> str:
        return f"{self.python} serving {self.bundle.name}"


@dataclass(frozen=True)
class ImageRef:
    """A digest-pinned image reference; ``str(ref)`` is what ``docker pull`` and a pod spec take."""

    registry: str       # host[:port]
    repository: str     # path inside the registry, e.g. "gazelle/accounts"
    digest: str         # sha256:<64 hex>

    def __post_init__(self) -> None:
        if not _DIGEST.match(self.digest):
            raise ValueError(f"not a sha256 digest: {self.digest!r}")

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}@{self.digest}"

    @classmethod
    def parse(cls, text: str) -> "ImageRef":
        """``host[:port]/repo/path@sha256:<hex>`` -> ImageRef; ValueError for anything else (tags too)."""
        name, sep, digest = text.partition("@")
        host, slash, repository = name.partition("/")
        if not (sep and slash and repository and ("." in host or ":" in host or host == "localhost")):
            raise ValueError(f"not a digest-pinned image reference with a registry host: {text!r}")
        return cls(host, repository, digest)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "image", "ref": str(self)}


@dataclass(frozen=True)
class EngineImage:
    """An image built into a Docker engine (``id`` is the engine's image id, ``sha256:...``)."""

    id: str
    tag: str            # the local tag it was built under (host[:port]/repo:tag), which the engine pushes

    def to_json(self) -> dict[str, Any]:
        return {"kind": "engine", "id": self.id, "tag": self.tag}


Artifact = Union[LocalEnv, ImageRef]


def artifact_from_json(value: Mapping[str, Any]) -> Artifact:
    """The inverse of ``to_json`` for what a target runs; ValueError for anything else."""
    kind = value.get("kind")
    if kind == "local":
        return LocalEnv(str(value["python"]), Path(str(value["bundle"])))
    if kind == "image":
        return ImageRef.parse(str(value["ref"]))
    raise ValueError(f"not a runnable artifact: {dict(value)!r}")
