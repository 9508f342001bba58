"""Registries publish images: ``Registry.push(image, repository, tags, log) -> ImageRef`` (digest-pinned).

- ``client.RegistryClient``: the OCI distribution protocol (auth challenges, retries, ``RegistryError``).
- ``push.OCIRegistry``: the ``Registry`` that pushes an ``oci.Image`` (HEAD, cross-repository mount,
  upload, manifest under each tag) and resolves base images by tag to a digest.
- ``keychain``: where credentials come from (docker's ``config.json``, then settings).

``repository`` is ``host[:port]/path``; the returned ``ImageRef`` names the manifest digest, which is
what a target deploys. Tags follow ``{name}:v{version}-{unix time}`` (``image_tag``).
"""
from __future__ import annotations

import time
from typing import Callable, Iterable, Protocol, Sequence

from gazelle.server.artifacts import ImageRef
from gazelle.server.oci import Image
from gazelle.server.registry.push import OCIRegistry, PushReport

Log = Callable[[str], None]


class Registry(Protocol):
    def push(self, image: Image, repository: str, tags: Sequence[str], log: Log) -> ImageRef:
        """Push ``image`` to ``repository`` under ``tags``; return its digest reference.

        Raises ``gazelle.errors.RegistryError`` naming the registry and the cause, never a secret.
        """
        ...

    def close(self) -> None:
        ...


def image_tag(version: int, unix_time: int) -> str:
    """The tag of one model version: ``v{version}-{unix time}``."""
    return f"v{version}-{unix_time}"


def image_publisher(registry: OCIRegistry, prefix: str, *, clock: Callable[[], float] = time.time
                    ) -> Callable[[Image, str, int, Log], ImageRef]:
    """What the push stage runs for an ``oci.Image``: push it to ``{prefix}/{name}`` (``prefix`` is
    ``HOST[:PORT]/PREFIX``) tagged ``v{version}-{unix time}``, and return the digest reference."""
    def publish(image: Image, name: str, version: int, log: Log) -> ImageRef:
        return registry.push(image, f"{prefix.rstrip('/')}/{name}", [image_tag(version, int(clock()))], log)

    return publish


def open_registry(keychain_registry: str | None, username: str | None, password: str | None, *,
                  insecure: Iterable[str] = ()) -> "OCIRegistry":
    """The ``OCIRegistry`` with the default keychain: docker's config, then ``username``/``password``
    for the host of ``keychain_registry``. Does no I/O."""
    from gazelle.server.registry.client import RegistryClient
    from gazelle.server.registry.keychain import default_keychain

    return OCIRegistry(RegistryClient(default_keychain(keychain_registry, username, password), insecure=insecure))

__all__ = ["Registry", "OCIRegistry", "PushReport", "image_publisher", "image_tag", "open_registry"]
