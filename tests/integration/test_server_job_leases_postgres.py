"""Jobs claimed in PostgreSQL with leases, and migrations under a lock, each test in a fresh schema."""
from __future__ import annotations

import multiprocessing
import threading
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa

from gazelle.server import migrations
from gazelle.server.jobs import pending_stages
from gazelle.server.store import Store
from tests.integration.test_server_store_postgres import schema_url  # noqa: F401 (a fixture)

pytestmark = pytest.mark.integration


@pytest.fixture
def stores(schema_url: str) -> Iterator[tuple[Store, Store]]:  # noqa: F811
    """Two stores on one database, as two replicas have."""
    a, b = Store(schema_url), Store(schema_url)
    a.create_schema()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def _job(store: Store, model: str = "lens") -> str:
    job_id = uuid.uuid4().hex[:16]
    store.create_job(job_id, model, 1, "deploy", pending_stages(["check"]))
    return job_id


def test_two_replicas_claiming_one_job_at_once_exactly_one_wins(stores: tuple[Store, Store]) -> None:
    a, b = stores
    for _ in range(5):
        job_id = _job(a, f"m{uuid.uuid4().hex[:6]}")
        barrier = threading.Barrier(2)
        wins: list[bool] = []

        def claim(store: Store, owner: str) -> None:
            barrier.wait()
            wins.append(store.claim_job(job_id, owner, 30.0))

        threads = [threading.Thread(target=claim, args=(s, o)) for s, o in ((a, "a"), (b, "b"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(wins) == [False, True]
        assert a.lease_owner(job_id) in ("a", "b")


def test_the_database_lets_one_job_per_model_run(stores: tuple[Store, Store]) -> None:
    a, b = stores
    first, second = _job(a), _job(a)
    assert not b.claim_job(second, "b", 30.0)       # an older job of the model is still queued
    assert a.claim_job(first, "a", 30.0)
    assert not b.claim_job(second, "b", 30.0)       # the model's first job runs
    with pytest.raises(sa.exc.IntegrityError):
        b.update_job(second, status="running")     # the partial unique index, not the runner, says no
    a.update_job(first, status="succeeded")
    assert b.claim_job(second, "b", 30.0)


def test_an_expired_lease_is_taken_over_once_and_its_owner_loses_it(stores: tuple[Store, Store]) -> None:
    a, b = stores
    job_id = _job(a)
    assert a.claim_job(job_id, "a", 30.0)
    assert a.renew_leases("a", [job_id], 30.0) == {job_id}
    assert b.expired_jobs() == []
    a.renew_leases("a", [job_id], -1.0)              # as if "a" had stopped a lease ago
    assert [j.id for j in b.expired_jobs()] == [job_id]
    assert b.take_over(job_id, "b", 30.0)
    assert not a.take_over(job_id, "a", 30.0)
    assert a.renew_leases("a", [job_id], 30.0) == set()
    assert a.lease_owner(job_id) == "b"


def _revision(url: str, migrate_to: str | None = None) -> str | None:
    """The database's revision, after migrating it to ``migrate_to`` first if given."""
    engine = sa.create_engine(url)
    try:
        if migrate_to is not None:
            migrations.upgrade(engine, migrate_to)
        return migrations.current(engine)
    finally:
        engine.dispose()


def _migrate(url: str) -> None:
    store = Store(url)
    try:
        store.create_schema()
    finally:
        store.close()


def test_two_processes_migrating_at_once_both_end_at_the_newest_revision(schema_url: str) -> None:  # noqa: F811
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_migrate, args=(schema_url,)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert _revision(schema_url) == "0003"


def test_a_database_made_before_migrations_is_adopted_and_upgraded(schema_url: str) -> None:  # noqa: F811
    engine = sa.create_engine(schema_url)
    try:
        migrations.upgrade(engine, "0001")
        with engine.begin() as c:
            c.execute(sa.text("ALTER TABLE tokens DROP COLUMN revoked"))   # as the first release made it
            c.execute(sa.text("DROP TABLE alembic_version"))
            c.execute(sa.text("INSERT INTO models (name, public, live_version, created, updated) "
                              "VALUES ('kept', false, NULL, 1, 1)"))
    finally:
        engine.dispose()
    store = Store(schema_url)
    try:
        store.create_schema()
        assert migrations.current(store.engine) == "0003"
        assert [m.name for m in store.models()] == ["kept"]
        columns = {c["name"] for c in sa.inspect(store.engine).get_columns("jobs")}
        assert {"lease_owner", "lease_expires"} <= columns
        assert "revoked" in {c["name"] for c in sa.inspect(store.engine).get_columns("tokens")}
    finally:
        store.close()


def test_a_database_at_the_first_revision_is_migrated_at_start(schema_url: str) -> None:  # noqa: F811
    assert _revision(schema_url, migrate_to="0001") == "0001"
    _migrate(schema_url)
    assert _revision(schema_url) == "0003"


def test_a_newer_server_starting_on_an_older_servers_database_migrates_it(
        tmp_path: Path, schema_url: str) -> None:  # noqa: F811
    from tests.integration._server import start_server

    assert _revision(schema_url, migrate_to="0001") == "0001"
    engine = sa.create_engine(schema_url)
    try:
        with engine.begin() as c:
            c.execute(sa.text("INSERT INTO models (name, public, live_version, created, updated) "
                              "VALUES ('kept', false, NULL, 1, 1)"))
    finally:
        engine.dispose()
    server = start_server(tmp_path / "data", env={"GAZELLE_DATABASE_URL": schema_url})
    try:
        assert _revision(schema_url) == "0003"
        with server.client() as c:
            names = [m["name"] for m in c.get("/api/v1/models").json()["models"]]
        assert names == ["kept"]
    finally:
        server.terminate()
