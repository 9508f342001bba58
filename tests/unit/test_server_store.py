"""The store's behaviour on SQLite. ``tests/integration/test_server_store_postgres.py`` runs these same
tests against PostgreSQL by providing its own ``store`` fixture."""
from __future__ import annotations

import threading
from pathlib import Path

from gazelle.server.store import Store
from tests.unit._server import store  # noqa: F401  (fixture)

MANIFEST = {"name": "lens", "python": "3.11.7", "sample": ["a"]}


def test_versions_are_numbered_per_model_from_1(store: Store) -> None:
    assert [store.add_version("lens", f"sha256:{i}", MANIFEST, public=False, replicas=1)[0].version
            for i in range(3)] == [1, 2, 3]
    assert store.add_version("other", "sha256:0", MANIFEST, public=False, replicas=1)[0].version == 1


def test_the_same_digest_is_the_same_version(store: Store) -> None:
    first, created = store.add_version("lens", "sha256:aa", MANIFEST, public=False, replicas=1)
    again, created_again = store.add_version("lens", "sha256:aa", MANIFEST, public=True, replicas=2)
    assert created and not created_again
    assert again.version == first.version == 1
    assert again.manifest == MANIFEST


def test_concurrent_uploads_get_distinct_dense_numbers(store: Store) -> None:
    numbers: list[int] = []
    lock = threading.Lock()

    def upload(i: int) -> None:
        row, _ = store.add_version("lens", f"sha256:{i}", MANIFEST, public=False, replicas=1)
        with lock:
            numbers.append(row.version)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(numbers) == list(range(1, 9))


def test_switch_live_replaces_the_previous_version_atomically(store: Store) -> None:
    for i in range(2):
        store.add_version("lens", f"sha256:{i}", MANIFEST, public=i == 1, replicas=1)
    assert store.switch_live("lens", 1) is None
    assert store.model("lens").live_version == 1  # type: ignore[union-attr]
    assert store.switch_live("lens", 2) == 1
    model = store.model("lens")
    assert model is not None and model.live_version == 2 and model.public is True
    statuses = {v.version: v.status for v in store.versions("lens")}
    assert statuses == {1: "ready", 2: "live"}
    assert [v.version for v in store.live_versions()] == [2]


def test_a_queued_job_is_claimed_once(store: Store) -> None:
    store.create_job("j1", "lens", 1, "deploy", [{"name": "check"}])
    assert store.claim_job("j1") is True
    assert store.claim_job("j1") is False
    job = store.job("j1")
    assert job is not None and job.status == "running" and job.started is not None


def test_jobs_come_back_in_the_order_they_were_queued(store: Store) -> None:
    for i in range(5):
        store.create_job(f"j{i}", "lens" if i % 2 else "other", i, "deploy", [])
    assert [j.id for j in store.jobs(statuses=["queued"])] == ["j0", "j1", "j2", "j3", "j4"]
    assert [j.id for j in store.jobs(model="lens")] == ["j1", "j3"]


def test_job_updates_round_trip_json_fields(store: Store) -> None:
    store.create_job("j1", "lens", 1, "deploy", [{"name": "check", "status": "pending"}])
    store.update_job("j1", status="failed", stage="check", stages=[{"name": "check", "status": "failed"}],
                     error={"stage": "check", "message": "bad", "logs": ["a", "b"]}, finished=2.0)
    job = store.job("j1")
    assert job is not None
    assert job.error == {"stage": "check", "message": "bad", "logs": ["a", "b"]}
    assert job.stages == [{"name": "check", "status": "failed"}] and job.finished == 2.0
    assert store.job_counts() == {"failed": 1}


def test_events_replay_in_order_after_an_id(store: Store) -> None:
    ids = [store.add_event("j1", "log", {"line": str(i)}) for i in range(4)]
    store.add_event("j2", "log", {"line": "other job"})
    assert [e.data["line"] for e in store.events("j1")] == ["0", "1", "2", "3"]
    assert [e.data["line"] for e in store.events("j1", after=ids[1])] == ["2", "3"]


def test_delete_model_forgets_versions_and_returns_unused_digests(store: Store) -> None:
    store.add_version("lens", "sha256:aa", MANIFEST, public=False, replicas=1)
    store.add_version("lens", "sha256:bb", MANIFEST, public=False, replicas=1)
    store.switch_live("lens", 2)
    assert store.delete_model("lens") == ["sha256:aa", "sha256:bb"]
    assert store.model("lens") is None and store.versions("lens") == []
    assert store.add_version("lens", "sha256:aa", MANIFEST, public=False, replicas=1)[0].version == 1


def test_tokens_are_found_by_hash(store: Store) -> None:
    row = store.add_token("ci", "deploy", "ab" * 32)
    found = store.token_by_hash("ab" * 32)
    assert found is not None and found.id == row.id and found.scope == "deploy" and found.name == "ci"
    assert store.token_by_hash("cd" * 32) is None


def test_set_public_changes_the_live_model_too(store: Store) -> None:
    store.add_version("lens", "sha256:aa", MANIFEST, public=False, replicas=1)
    store.switch_live("lens", 1)
    store.set_public("lens", 1, True)
    assert store.model("lens").public is True  # type: ignore[union-attr]
    assert store.version("lens", 1).public is True  # type: ignore[union-attr]


def test_a_revoked_token_is_neither_found_nor_listed_and_stays_revoked(store: Store) -> None:
    kept = store.add_token("kept", "predict", "a" * 64)
    gone = store.add_token("gone", "deploy", "b" * 64)
    assert store.revoke_token(gone.id) == gone
    assert store.token_by_hash("b" * 64) is None and store.token_revoked("b" * 64)
    assert not store.token_revoked("a" * 64) and not store.token_revoked("c" * 64)
    assert [t.name for t in store.tokens()] == ["kept"]
    assert store.revoke_token(gone.id) is None and store.revoke_token(kept.id + 100) is None


def test_last_used_is_recorded_at_most_once_a_minute(store: Store) -> None:
    row = store.add_token("ci", "deploy", "d" * 64)
    assert row.last_used is None
    store.touch_token(row)
    first = store.token_by_hash("d" * 64)
    assert first is not None and first.last_used is not None
    store.touch_token(first)   # within the resolution: no write
    again = store.token_by_hash("d" * 64)
    assert again is not None and again.last_used == first.last_used


def test_a_tokens_table_from_before_revocation_gains_the_new_columns(store: Store) -> None:
    """A database of a release from before migrations: no alembic_version, a tokens table without the
    columns added later. Starting adopts it."""
    import sqlalchemy as sa

    old = sa.MetaData()
    sa.Table("tokens", old, sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String(200)),
             sa.Column("scope", sa.String(16)), sa.Column("hash", sa.String(64), unique=True),
             sa.Column("created", sa.Double))
    with store.engine.begin() as c:
        c.execute(sa.text("DROP TABLE tokens"))
        c.execute(sa.text("DROP TABLE alembic_version"))
    old.create_all(store.engine)
    store.create_schema()
    columns = {c["name"] for c in sa.inspect(store.engine).get_columns("tokens")}
    assert {"last_used", "revoked"} <= columns
    row = store.add_token("after", "admin", "e" * 64)
    assert store.revoke_token(row.id) is not None and store.tokens() == []


def test_resources_are_kept_as_given_and_can_be_changed(store: Store) -> None:
    row, _ = store.add_version("lens", "sha256:res", MANIFEST, public=False, replicas=1,
                               resources={"cpu": "500m", "memory": "1Gi"})
    assert store.version("lens", row.version).resources == {"cpu": "500m", "memory": "1Gi"}  # type: ignore[union-attr]
    store.update_version("lens", row.version, resources=None)
    assert store.version("lens", row.version).resources is None  # type: ignore[union-attr]


def test_a_versions_table_from_before_resources_gains_the_column(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE versions (model VARCHAR(64) NOT NULL, version INTEGER NOT NULL, "
                   "digest VARCHAR(80) NOT NULL, status VARCHAR(16) NOT NULL, ref TEXT, url TEXT, "
                   "manifest TEXT NOT NULL, public BOOLEAN NOT NULL, replicas INTEGER NOT NULL, "
                   "created FLOAT NOT NULL, updated FLOAT NOT NULL, PRIMARY KEY (model, version))")
        db.execute("INSERT INTO versions VALUES ('lens', 1, 'sha256:old', 'live', NULL, NULL, '{}', 0, 1, 1.0, 1.0)")
    old = Store(f"sqlite:///{path}")
    try:
        old.create_schema()
        row = old.version("lens", 1)
        assert row is not None and row.resources is None and row.digest == "sha256:old"
    finally:
        old.close()
