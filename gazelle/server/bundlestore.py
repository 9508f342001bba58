"""Where uploaded bundles are kept so that the replica running a job can read them.

The data directory (``{data_dir}/bundles``) is always the working copy: uploads are checked there
and builders read files from it. A ``BundleStore`` is what stands behind it:

- ``DataDirBundles`` (one machine): nothing more, the data directory is the store.
- ``DatabaseBundles`` (several replicas on PostgreSQL): the bundle's bytes also go to the database,
  as rows of ``bundle_chunks`` keyed by the bundle's digest, 1 MiB each, written and read one chunk
  at a time (never the whole bundle in memory). A replica that lacks a bundle fetches it into its own
  data directory before the job reads it.

``wiring.bundle_store`` picks one.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol

import sqlalchemy as sa

from gazelle.server.store import Store, bundle_chunks_t

CHUNK = 1 << 20


class BundleStore(Protocol):
    def put(self, digest: str, path: Path) -> None:
        """Keep the checked bundle at ``path`` (already named by ``digest``) for every replica."""

    def fetch(self, digest: str, path: Path) -> bool:
        """Make ``path`` hold the bundle ``digest``, if it is kept anywhere; whether it now does."""

    def delete(self, digest: str) -> None:
        """Forget the bundle (its model was deleted)."""


class DataDirBundles:
    """The data directory is the store (one machine)."""

    def put(self, digest: str, path: Path) -> None:
        return None

    def fetch(self, digest: str, path: Path) -> bool:
        return path.is_file()

    def delete(self, digest: str) -> None:
        return None


class DatabaseBundles:
    """Bundles as chunked ``bytea`` rows in the shared database."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def put(self, digest: str, path: Path) -> None:
        table = bundle_chunks_t
        with self.store.engine.begin() as c:
            if c.execute(sa.select(table.c.seq).where(table.c.digest == digest).limit(1)).first() is not None:
                return      # content-addressed: the same digest is the same bytes
            with open(path, "rb") as f:
                for seq, chunk in enumerate(iter(lambda: f.read(CHUNK), b"")):
                    c.execute(table.insert().values(digest=digest, seq=seq, data=chunk))

    def fetch(self, digest: str, path: Path) -> bool:
        if path.is_file():
            return True
        table = bundle_chunks_t
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".fetch-")
        found = False
        try:
            with os.fdopen(fd, "wb") as f, self.store.engine.connect() as c:
                # One chunk per query: the driver never holds more than one chunk.
                seqs = [r.seq for r in c.execute(sa.select(table.c.seq).where(table.c.digest == digest)
                                                 .order_by(table.c.seq))]
                for seq in seqs:
                    f.write(c.execute(sa.select(table.c.data).where(
                        table.c.digest == digest, table.c.seq == seq)).scalar_one())
                found = bool(seqs)
            if found:
                os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return found

    def delete(self, digest: str) -> None:
        with self.store.engine.begin() as c:
            c.execute(bundle_chunks_t.delete().where(bundle_chunks_t.c.digest == digest))
