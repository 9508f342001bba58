"""Bundles kept in PostgreSQL: an upload on one replica is readable by another with its own data dir."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
import pytest

from gazelle.server.bundlestore import CHUNK, DatabaseBundles
from gazelle.server.pipeline import bundle_path, save_bundle
from gazelle.server.store import Store
from tests.integration.test_server_store_postgres import schema_url, store  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration


def test_a_bundle_kept_by_one_replica_is_fetched_by_another_chunk_by_chunk(store: Store, tmp_path: Path) -> None:  # noqa: E501,F811
    data = os.urandom(2 * CHUNK + 12345)                 # three chunks, the last one short
    digest, path = save_bundle(tmp_path / "a", data)
    kept = DatabaseBundles(store)
    kept.put(digest, path)
    kept.put(digest, path)                               # the same digest twice is one bundle
    elsewhere = bundle_path(tmp_path / "b", digest)
    assert DatabaseBundles(store).fetch(digest, elsewhere)
    assert hashlib.sha256(elsewhere.read_bytes()).hexdigest() == digest.split(":")[1]
    assert not list((tmp_path / "b").glob(".fetch-*"))


def test_a_deleted_bundle_is_not_fetched(store: Store, tmp_path: Path) -> None:  # noqa: F811
    digest, path = save_bundle(tmp_path / "a", b"not really a tar, but bytes")
    kept = DatabaseBundles(store)
    kept.put(digest, path)
    kept.delete(digest)
    target = bundle_path(tmp_path / "b", digest)
    assert not kept.fetch(digest, target) and not target.exists()
    assert not list((tmp_path / "b").glob(".fetch-*"))
