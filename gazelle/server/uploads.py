"""Receiving a bundle upload: streamed to disk while hashed, checked there, never held whole in memory.

``receive(request, bundles_dir, limit, model, keep=...)`` checks the Content-Type and the declared
length, hands the body stream to ``pipeline.save_bundle`` (chunks of 1 MiB, hashed as they are
written), checks the written file before it takes its place under the bundle's digest, and then hands
it to the ``BundleStore`` (``keep``) that makes it readable by every replica. The checks are those of
``gazelle.bundle.read`` (members, manifest, the sha256 of ``model.pkl``), with ``model.pkl`` hashed
in chunks too. So the memory an upload takes is bounded by the chunk size and the manifest's limit
(``MAX_MANIFEST_BYTES``), whatever the bundle's size.
"""
from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path
from typing import Any

from flask import Request

from gazelle import bundle as bundles
from gazelle.errors import BadRequest, BundleError, PayloadTooLarge, UnsupportedMediaType
from gazelle.server.bundlestore import BundleStore, DataDirBundles
from gazelle.server.pipeline import UPLOAD_CHUNK, save_bundle

TAR_TYPES = ("application/x-tar", "application/tar", "application/octet-stream")


def receive(request: Request, bundles_dir: Path, limit: int, model: str,
            keep: BundleStore | None = None) -> tuple[str, dict[str, Any]]:
    """Store the request's bundle for ``model``: ``(digest, manifest)``."""
    if request.mimetype not in TAR_TYPES:
        raise UnsupportedMediaType(f"the body must be a bundle tar (Content-Type: application/x-tar), "
                                   f"got {request.mimetype or 'no content type'}")
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the bundle is larger than this server accepts ({limit} bytes)",
                              hint="raise GAZELLE_MAX_BUNDLE_BYTES on the server")
    found: dict[str, Any] = {}

    def check(path: Path) -> None:
        manifest = manifest_of(path)
        if manifest["name"] != model:
            raise BadRequest(f"the bundle is for model {manifest['name']!r}, but was sent to model {model!r}")
        found.update(manifest)

    digest, path = save_bundle(bundles_dir, request.stream, limit=limit, check=check)
    (keep or DataDirBundles()).put(digest, path)
    return digest, found


def manifest_of(path: Path) -> dict[str, Any]:
    """The checked manifest of the bundle file at ``path``, reading it in chunks; never unpickles."""
    try:
        tar = tarfile.open(path, mode="r:")
    except tarfile.TarError as exc:
        raise BundleError(f"the bundle is not a tar archive ({exc})") from None
    with tar:
        members = bundles._members(tar)
        manifest = bundles._parse_manifest(
            bundles._member_bytes(tar, members[bundles.MANIFEST], limit=bundles.MAX_MANIFEST_BYTES))
        got = _member_sha256(tar, members[bundles.MODEL])
    want = manifest.get("model_sha256")
    if got != want:
        raise BundleError(f"{bundles.MODEL} does not match the model_sha256 in {bundles.MANIFEST} "
                          f"(expected {str(want)[:12]}..., got {got[:12]}...): the bundle was altered or damaged")
    return manifest


def _member_sha256(tar: tarfile.TarFile, info: tarfile.TarInfo) -> str:
    hasher, size = hashlib.sha256(), 0
    try:
        stream = tar.extractfile(info)
        if stream is None:
            raise BundleError(f"the bundle's {info.name} cannot be read")
        for chunk in iter(lambda: stream.read(UPLOAD_CHUNK), b""):
            size += len(chunk)
            hasher.update(chunk)
    except (tarfile.TarError, OSError) as exc:
        raise BundleError(f"the bundle's {info.name} cannot be read ({exc})") from None
    if size != info.size:
        raise BundleError(f"the bundle's {info.name} is truncated")
    return hasher.hexdigest()
