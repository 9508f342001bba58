"""Alembic's environment for the build server's store: run on the connection ``migrate.upgrade`` holds.

There is no ``alembic.ini`` and no URL here: ``gazelle.server.migrations.upgrade`` builds the config
and hands over a connection that already holds the migration lock.
"""
from __future__ import annotations

from alembic import context
from alembic.config import Config
from sqlalchemy.engine import Connection

from gazelle.server.store import metadata



def run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


try:
    config: Config | None = context.config
except AttributeError:      # imported on its own, not run by alembic: nothing to migrate
    config = None
if config is not None:
    run(config.attributes["connection"])
