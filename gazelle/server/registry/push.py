"""Pushing an ``oci.Image`` and resolving a base image: the registry side of ``AppendBuilder``.

Push order: every layer, then the config, then the manifest (a registry refuses a manifest whose
blobs it lacks). A blob the registry already has (HEAD) is skipped; a base layer (a descriptor only)
is mounted from its repository when it is in the same registry, and copied through this process
otherwise or when the registry answers a mount with an upload session instead (202). The manifest
is stored under each tag, or under its digest when there are none. ``PushReport`` says what went up.

Image names follow docker's rules: ``python:3.11-slim`` is Docker Hub's ``library/python``; a
first path component with a dot or a colon, or ``localhost``, is a registry host.
"""
from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from gazelle.errors import RegistryError
from gazelle.server import oci
from gazelle.server.artifacts import ImageRef
from gazelle.server.registry.client import RegistryClient, pull_scope, push_scope

Log = Callable[[str], None]
DOCKER_HUB = "registry-1.docker.io"
DEFAULT_CHUNK = 32 << 20
_MACHINE_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def host_architecture() -> str:
    """This machine's architecture in OCI terms (``amd64``, ``arm64``): what an index is narrowed to."""
    return _MACHINE_ARCH.get(platform.machine().lower(), "amd64")


@dataclass(frozen=True)
class ImageName:
    """``registry/repository`` plus a tag or a digest (``reference``)."""

    registry: str
    repository: str
    reference: str = "latest"

    @classmethod
    def parse(cls, text: str) -> "ImageName":
        name, at, digest = text.partition("@")
        head, slash, rest = name.partition("/")
        if slash and ("." in head or ":" in head or head == "localhost"):
            registry, path = head, rest
        else:
            registry, path = DOCKER_HUB, name if slash else f"library/{name}"
        tag = "latest"
        last = path.rsplit("/", 1)[-1]
        if ":" in last:
            path, tag = path.rsplit(":", 1)
        if not path or not registry:
            raise ValueError(f"not an image name: {text!r}")
        return cls(registry, path, digest if at else tag)

    @property
    def repository_name(self) -> str:
        return f"{self.registry}/{self.repository}"


@dataclass(frozen=True)
class PushReport:
    """What one push sent: ``uploaded_bytes`` counts blob, config and manifest bodies."""

    ref: ImageRef
    tags: tuple[str, ...]
    uploaded_bytes: int
    uploaded: tuple[str, ...]   # digests of blobs sent
    mounted: tuple[str, ...]
    present: tuple[str, ...]

    def summary(self) -> str:
        return (f"pushed {self.ref}: {self.uploaded_bytes} bytes uploaded ({len(self.uploaded)} blobs), "
                f"{len(self.mounted)} mounted, {len(self.present)} already there")


def resolve(client: RegistryClient, name: str, *, architecture: str | None = None) -> tuple[ImageName, oci.Image]:
    """The image ``name`` (tag or digest) pinned to its manifest digest, read as a base: manifest and
    config only. An index (multi-platform) is narrowed to linux/``architecture`` (default: this machine's)."""
    image = ImageName.parse(name)
    host, repo = image.registry, image.repository
    architecture = architecture or host_architecture()
    body, media_type, digest = client.manifest(host, repo, image.reference, [*oci.MANIFEST_TYPES, *oci.INDEX_TYPES])
    if media_type in oci.INDEX_TYPES:
        digest = _platform_entry(body, name, host, architecture)
        body, media_type, digest = client.manifest(host, repo, digest, oci.MANIFEST_TYPES)
    if media_type not in oci.MANIFEST_TYPES:
        raise RegistryError(f"registry {host} answered {name} with a {media_type or 'untyped'} document, "
                            "not an image manifest", status=200)
    config = client.blob(host, repo, str(json.loads(body)["config"]["digest"]))
    return ImageName(host, repo, digest), oci.from_registry(body, config, oci.Origin(host, repo))


def _platform_entry(index: bytes, name: str, host: str, architecture: str) -> str:
    for entry in json.loads(index).get("manifests") or []:
        platform = entry.get("platform") or {}
        if platform.get("os") == "linux" and platform.get("architecture") == architecture:
            return str(entry["digest"])
    raise RegistryError(f"registry {host} has no linux/{architecture} image for {name}", status=200)


def push_image(client: RegistryClient, image: oci.Image, repository: str, tags: Sequence[str], log: Log, *,
               chunk_size: int = DEFAULT_CHUNK) -> PushReport:
    """Push ``image`` to ``repository`` (``host[:port]/path``) under ``tags``; see the module docstring."""
    host, _, repo = repository.partition("/")
    if not repo:
        raise RegistryError(f"the repository {repository!r} names no registry host", status=None)
    sources = sorted({layer.origin.repository for layer in image.layers
                      if layer.origin is not None and not layer.local and layer.origin.registry == host
                      and layer.origin.repository != repo})
    scopes = [push_scope(repo), *(pull_scope(s) for s in sources)]
    uploaded: list[str] = []
    mounted: list[str] = []
    present: list[str] = []
    sent = 0
    blobs: list[tuple[oci.Layer | None, str, int]] = [(layer, layer.digest, layer.size) for layer in image.layers]
    blobs.append((None, image.config_digest, len(image.config_bytes)))
    for layer, digest, size in blobs:
        if client.has_blob(host, repo, digest, scopes):
            present.append(digest)
            continue
        if layer is not None and not layer.local and layer.origin is not None:
            if _mount_or_copy(client, layer, host, repo, scopes, chunk_size):
                mounted.append(digest)
                continue
            sent += size
        else:
            data = image.config_bytes if layer is None else layer.path or layer.read()
            _upload(client, host, repo, digest, data, scopes, chunk_size)
            sent += size
        uploaded.append(digest)
    references = list(tags) or [image.digest]
    for reference in references:
        got = client.put_manifest(host, repo, reference, image.manifest_bytes, image.media_type)
        sent += len(image.manifest_bytes)
        if got != image.digest:
            raise RegistryError(f"registry {host} stored the manifest of {repository} as {got}, "
                                f"not {image.digest}", status=201)
    report = PushReport(ImageRef(host, repo, image.digest), tuple(tags), sent, tuple(uploaded), tuple(mounted),
                        tuple(present))
    log(report.summary())
    return report


def _mount_or_copy(client: RegistryClient, layer: oci.Layer, host: str, repo: str, scopes: Sequence[str],
                   chunk_size: int) -> bool:
    """True if the registry mounted the base layer; False after copying its bytes from its origin."""
    origin = layer.origin
    assert origin is not None
    location = None
    if origin.registry == host:
        location = client.start_upload(host, repo, scopes, mount=layer.digest, source=origin.repository)
        if location is None:
            return True
    data = client.blob(origin.registry, origin.repository, layer.digest)
    _upload(client, host, repo, layer.digest, data, scopes, chunk_size, location=location)
    return False


def _upload(client: RegistryClient, host: str, repo: str, digest: str, data: bytes | Path, scopes: Sequence[str],
            chunk_size: int, *, location: str | None = None) -> None:
    """One blob, restarted from a new session when a retryable failure cuts it (bounded)."""
    for attempt in range(client.retries + 1):
        try:
            session = location or client.start_upload(host, repo, scopes)
            assert session is not None
            client.finish_upload(host, repo, session, digest, data, scopes, chunk_size)
            return
        except RegistryError as err:
            if not err.retryable or attempt == client.retries:
                raise
            location = None
            client.pause(attempt)


class OCIRegistry:
    """``Registry`` over the OCI distribution protocol (``RegistryClient``); the constructor does no I/O."""

    def __init__(self, client: RegistryClient, *, chunk_size: int = DEFAULT_CHUNK) -> None:
        self.client = client
        self.chunk_size = chunk_size

    def push(self, image: oci.Image, repository: str, tags: Sequence[str], log: Log) -> ImageRef:
        return self.push_image(image, repository, tags, log).ref

    def push_image(self, image: oci.Image, repository: str, tags: Sequence[str], log: Log) -> PushReport:
        return push_image(self.client, image, repository, tags, log, chunk_size=self.chunk_size)

    def resolve(self, name: str, *, architecture: str | None = None) -> tuple[ImageName, oci.Image]:
        return resolve(self.client, name, architecture=architecture)

    def close(self) -> None:
        self.client.close()
