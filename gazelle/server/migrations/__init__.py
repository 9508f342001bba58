"""Schema migrations of the build server's store (alembic), run once at start under a lock.

``upgrade(engine)`` brings the database to the newest revision shipped in ``versions/``. It holds a
lock for the whole run, so several server processes starting together migrate once and the others
find the work done: ``pg_advisory_lock`` on PostgreSQL (keyed by the current schema), a file lock next
to the database file on SQLite (an in-memory database has one process anyway).

A database made before migrations existed (tables made by ``create_all``, no ``alembic_version``
table) is adopted: the columns later releases added by hand are added, the database is stamped with
the first revision (equal to that schema), and the later revisions run as for any other database.
A new revision must extend ``_revision_of_unversioned``, which says which revision an adopted database
is at.
"""
from __future__ import annotations

import fcntl
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection, Engine

from gazelle.server.store import metadata

log = logging.getLogger("gazelle.server")

HERE = Path(__file__).resolve().parent
INITIAL = "0001"
HEAD = "head"
# The tables of revision 0001, which an adopted database gets if an old release had not made them.
INITIAL_TABLES = ("models", "versions", "jobs", "job_events", "tokens")
# Columns releases before migrations added with ALTER TABLE at start; a database from before them
# lacks them and gets them on adoption, so that it then equals revision 0001.
_PRE_MIGRATION_COLUMNS: dict[str, dict[str, sa.types.TypeEngine[Any]]] = {
    "tokens": {"last_used": sa.Double(), "revoked": sa.Double()}, "versions": {"resources": sa.Text()}}


def config(connection: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: Engine, revision: str = HEAD) -> None:
    """Migrate the database behind ``engine`` to ``revision`` (default: the newest), under the lock."""
    with _locked(engine) as connection:
        tables = set(sa.inspect(connection).get_table_names())
        cfg = config(connection)
        if "alembic_version" not in tables and tables & set(INITIAL_TABLES):
            _add_pre_migration_columns(connection, tables)
            # Tables an old release had not made yet are made as revision 0001 has them (jobs as it
            # is now: only 0002 changes it, and the check below sees that).
            metadata.create_all(connection, tables=[metadata.tables[n] for n in INITIAL_TABLES if n not in tables])
            found = _revision_of_unversioned(connection)
            log.info("adopting a database made before migrations: stamping revision %s", found)
            command.stamp(cfg, found)
            connection.commit()
        command.upgrade(cfg, revision)
        connection.commit()


def _revision_of_unversioned(connection: Connection) -> str:
    """Which revision a schema without ``alembic_version`` (made before migrations, or having lost that
    table) already equals: what each later revision made is looked for, newest first."""
    inspector = sa.inspect(connection)
    if "bundle_chunks" in inspector.get_table_names():
        return "0003"
    if "lease_owner" in {c["name"] for c in inspector.get_columns("jobs")}:
        return "0002"
    return INITIAL


def current(engine: Engine) -> str | None:
    """The revision the database is at (None: not under migrations)."""
    with engine.connect() as c:
        if "alembic_version" not in sa.inspect(c).get_table_names():
            return None
        return c.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def _add_pre_migration_columns(connection: Connection, tables: set[str]) -> None:
    for table, columns in _PRE_MIGRATION_COLUMNS.items():
        if table not in tables:
            continue
        present = {c["name"] for c in sa.inspect(connection).get_columns(table)}
        for column, kind in columns.items():
            if column not in present:
                compiled = kind.compile(dialect=connection.dialect)
                connection.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {column} {compiled}"))
    connection.commit()


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            # A session lock (not a transaction one): the migrations commit as they go.
            connection.execute(sa.text("SELECT pg_advisory_lock(hashtext('gazelle-migrate:' || current_schema()))"))
            connection.commit()
            try:
                yield connection
            finally:
                connection.rollback()
                connection.execute(sa.text(
                    "SELECT pg_advisory_unlock(hashtext('gazelle-migrate:' || current_schema()))"))
                connection.commit()
        return
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        with engine.connect() as connection:
            yield connection
        return
    lock_path = Path(database).with_name(Path(database).name + ".migrate.lock")
    with open(lock_path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            with engine.connect() as connection:
                yield connection
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
