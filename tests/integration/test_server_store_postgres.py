"""The store's behaviour on PostgreSQL: the same tests as tests/unit/test_server_store.py (SQLite),
each in a schema of its own, plus the API on a PostgreSQL-backed server."""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa

import tests.unit.test_server_store as behaviour
from gazelle.server.settings import Settings
from gazelle.server.store import Store
from tests.unit._server import bundle_bytes, start

pytestmark = pytest.mark.integration

# Every behaviour test of the SQLite module, collected here again with this module's `store` fixture.
globals().update({name: test for name, test in vars(behaviour).items() if name.startswith("test_")})


@pytest.fixture
def schema_url(postgres_url: str) -> Iterator[str]:
    """A URL whose connections use a fresh schema, dropped afterwards."""
    schema = f"gazelle_test_{uuid.uuid4().hex[:12]}"
    base = Settings(database_url=postgres_url).db_url
    admin = sa.create_engine(base)
    with admin.begin() as c:
        c.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in base else "?"
    try:
        yield f"{base}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as c:
            c.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture
def store(schema_url: str) -> Iterator[Store]:
    s = Store(schema_url)
    s.create_schema()
    try:
        yield s
    finally:
        s.close()


def test_tables_live_in_postgresql(store: Store) -> None:
    assert store.engine.dialect.name == "postgresql"
    assert {"models", "versions", "jobs", "job_events", "tokens"} <= set(sa.inspect(store.engine).get_table_names())


def test_the_api_runs_on_a_postgresql_store(tmp_path: Path, schema_url: str) -> None:
    server = start(tmp_path, database_url=schema_url)
    try:
        first = server.upload("lens", bundle_bytes("lens"))
        assert first.status_code == 202 and first.get_json()["version"] == 1
        again = server.upload("lens", bundle_bytes("lens"))
        assert again.get_json()["job"] == first.get_json()["job"]
        assert server.upload("lens", bundle_bytes("lens", 1)).get_json()["version"] == 2
        model = server.get("/api/v1/models/lens").get_json()
        assert [v["version"] for v in model["versions"]] == [1, 2]
        assert server.client.get("/readyz").status_code == 200
    finally:
        server.state.shutdown()
