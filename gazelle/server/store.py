"""The build server's state: models, versions, jobs, job events and tokens, in SQL (SQLAlchemy Core).

SQLite (the default, one file in the data directory) and PostgreSQL (``postgresql://...``) run the same
statements. SQLite is opened in WAL mode with a busy timeout, and write transactions start with
``BEGIN IMMEDIATE``: a deferred transaction that reads and then writes can fail with "database is
locked" when another connection wrote in between, whatever the timeout; an immediate one waits its turn.

The store holds rows and the few invariants that must be atomic (version numbers per model, one live
version per model, claiming a queued job); what a job's stages mean lives in ``jobs.py``.
Times are unix seconds (floats). JSON columns are text, so both databases read them the same way.
"""
from __future__ import annotations

import json
import time
from typing import Any, Iterator, Mapping, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from gazelle.errors import ConfigError, Conflict
from gazelle.server.rows import (EventRow, JobRow, ModelRow, TokenRow, VersionRow, job_row as _job,
                                 model_row as _model, token_row as _token, version_row as _version)

ACTIVE = ("queued", "running")

metadata = sa.MetaData()

models_t = sa.Table(
    "models", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("public", sa.Boolean, nullable=False, default=False),
    sa.Column("live_version", sa.Integer, nullable=True),
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("updated", sa.Double, nullable=False),
)

versions_t = sa.Table(
    "versions", metadata,
    sa.Column("model", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("digest", sa.String(80), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("ref", sa.Text, nullable=True),
    sa.Column("url", sa.Text, nullable=True),
    sa.Column("manifest", sa.Text, nullable=False),
    sa.Column("public", sa.Boolean, nullable=False, default=False),
    sa.Column("replicas", sa.Integer, nullable=False, default=1),
    sa.Column("resources", sa.Text, nullable=True),   # deploy(resources=...), as JSON
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("updated", sa.Double, nullable=False),
    sa.UniqueConstraint("model", "digest", name="versions_model_digest"),
)

jobs_t = sa.Table(
    "jobs", metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(32), nullable=False, unique=True),
    sa.Column("model", sa.String(64), nullable=False, index=True),
    sa.Column("version", sa.Integer, nullable=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("stage", sa.String(16), nullable=True),
    sa.Column("stages", sa.Text, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("started", sa.Double, nullable=True),
    sa.Column("finished", sa.Double, nullable=True),
    sa.Column("lease_owner", sa.String(64), nullable=True),    # the replica running it (PostgreSQL)
    sa.Column("lease_expires", sa.Double, nullable=True),      # renewed by that replica's heartbeat
    sa.Index("jobs_one_running_per_model", "model", unique=True,
             postgresql_where=sa.text("status = 'running'"), sqlite_where=sa.text("status = 'running'")),
    sqlite_autoincrement=True,
)

events_t = sa.Table(
    "job_events", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(32), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("created", sa.Double, nullable=False),
    sqlite_autoincrement=True,
)

tokens_t = sa.Table(
    "tokens", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created", sa.Double, nullable=False),
    sa.Column("last_used", sa.Double, nullable=True),
    sa.Column("revoked", sa.Double, nullable=True),
    sqlite_autoincrement=True,
)

bundle_chunks_t = sa.Table(
    "bundle_chunks", metadata,       # DatabaseBundles (bundlestore.py): a bundle's bytes, in order
    sa.Column("digest", sa.String(80), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
)

# How stale ``last_used`` may get: refreshing it on every request would make each one a write.
LAST_USED_RESOLUTION = 60.0


class Store:
    """All SQL of the build server. Safe to share between threads; every method is one transaction."""

    def __init__(self, url: str) -> None:
        try:
            self.engine: Engine = _engine(url)
        except (sa.exc.ArgumentError, ImportError) as err:
            raise ConfigError(f"cannot use database URL: {err}") from None
        self._writer = self.engine.execution_options(gazelle_write=True)

    def create_schema(self) -> None:
        """Migrate the database to this release's schema (once, under a lock; see ``migrations``)."""
        from gazelle.server import migrations

        migrations.upgrade(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        with self.engine.connect() as c:
            c.execute(sa.text("SELECT 1"))

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._writer.begin() as c:
            yield c

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as c:
            yield c

    # -- models and versions -------------------------------------------------------------------

    def models(self) -> list[ModelRow]:
        with self._read() as c:
            return [_model(r) for r in c.execute(sa.select(models_t).order_by(models_t.c.name))]

    def model(self, name: str) -> ModelRow | None:
        with self._read() as c:
            row = c.execute(sa.select(models_t).where(models_t.c.name == name)).first()
        return _model(row) if row else None

    def versions(self, name: str) -> list[VersionRow]:
        with self._read() as c:
            rows = c.execute(sa.select(versions_t).where(versions_t.c.model == name)
                             .order_by(versions_t.c.version))
            return [_version(r) for r in rows]

    def version(self, name: str, version: int) -> VersionRow | None:
        with self._read() as c:
            row = c.execute(sa.select(versions_t).where(
                versions_t.c.model == name, versions_t.c.version == version)).first()
        return _version(row) if row else None

    def version_by_digest(self, name: str, digest: str) -> VersionRow | None:
        with self._read() as c:
            row = c.execute(sa.select(versions_t).where(
                versions_t.c.model == name, versions_t.c.digest == digest)).first()
        return _version(row) if row else None

    def live_versions(self) -> list[VersionRow]:
        """Every model's live version (what a restarted server must bring back)."""
        j = versions_t.join(models_t, sa.and_(models_t.c.name == versions_t.c.model,
                                              models_t.c.live_version == versions_t.c.version))
        with self._read() as c:
            return [_version(r) for r in c.execute(sa.select(versions_t).select_from(j)
                                                   .order_by(versions_t.c.model))]

    def versions_with_status(self, *statuses: str) -> list[VersionRow]:
        with self._read() as c:
            rows = c.execute(sa.select(versions_t).where(versions_t.c.status.in_(statuses)))
            return [_version(r) for r in rows]

    def add_version(self, name: str, digest: str, manifest: Mapping[str, Any], *, public: bool,
                    replicas: int, resources: Mapping[str, Any] | None = None) -> tuple[VersionRow, bool]:
        """The version holding ``digest`` for model ``name``: ``(row, True)`` if new, numbered from 1.

        Two uploads racing for the same model both retry on the unique constraints, so numbers stay
        dense and one digest never gets two versions.
        """
        for _ in range(10):
            existing = self.version_by_digest(name, digest)
            if existing is not None:
                return existing, False
            now = time.time()
            try:
                with self._write() as c:
                    if c.execute(sa.select(models_t.c.name).where(models_t.c.name == name)).first() is None:
                        c.execute(models_t.insert().values(name=name, public=public, live_version=None,
                                                           created=now, updated=now))
                    top = c.execute(sa.select(sa.func.max(versions_t.c.version))
                                    .where(versions_t.c.model == name)).scalar()
                    number = (top or 0) + 1
                    c.execute(versions_t.insert().values(
                        model=name, version=number, digest=digest, status="deploying", ref=None, url=None,
                        manifest=json.dumps(manifest, sort_keys=True), public=public, replicas=replicas,
                        resources=json.dumps(resources, sort_keys=True) if resources else None,
                        created=now, updated=now))
            except sa.exc.IntegrityError:
                continue
            row = self.version(name, number)
            assert row is not None
            return row, True
        raise Conflict(f"model {name}: too many concurrent uploads; try again")

    def update_version(self, name: str, version: int, **values: Any) -> None:
        """Set ``status``, ``artifact``, ``url``, ``public``, ``replicas`` or ``resources`` of one version."""
        allowed = {"status", "artifact", "url", "public", "replicas", "resources"}
        unknown = set(values) - allowed
        if unknown:
            raise TypeError(f"cannot update version fields {sorted(unknown)}")
        if "resources" in values:
            values["resources"] = json.dumps(values["resources"], sort_keys=True) if values["resources"] else None
        if "artifact" in values:
            artifact = values.pop("artifact")
            values["ref"] = json.dumps(artifact.to_json()) if artifact is not None else None
        with self._write() as c:
            c.execute(versions_t.update().where(versions_t.c.model == name, versions_t.c.version == version)
                      .values(updated=time.time(), **values))

    def switch_live(self, name: str, version: int) -> int | None:
        """Make ``version`` the live one, in one transaction; return the version it replaced.

        The replaced version becomes ``ready`` (still running, draining) until it is stopped.
        """
        now = time.time()
        with self._write() as c:
            row = c.execute(sa.select(models_t.c.live_version).where(models_t.c.name == name)).first()
            if row is None:
                raise LookupError(f"model {name} does not exist")
            previous = row.live_version
            public = c.execute(sa.select(versions_t.c.public).where(
                versions_t.c.model == name, versions_t.c.version == version)).scalar()
            if previous is not None and previous != version:
                c.execute(versions_t.update().where(versions_t.c.model == name, versions_t.c.version == previous)
                          .values(status="ready", updated=now))
            c.execute(versions_t.update().where(versions_t.c.model == name, versions_t.c.version == version)
                      .values(status="live", updated=now))
            c.execute(models_t.update().where(models_t.c.name == name)
                      .values(live_version=version, public=bool(public), updated=now))
        return previous if previous != version else None

    def set_public(self, name: str, version: int, public: bool) -> None:
        """Change who may call a version (and the model, when that version is live)."""
        now = time.time()
        with self._write() as c:
            c.execute(versions_t.update().where(versions_t.c.model == name, versions_t.c.version == version)
                      .values(public=public, updated=now))
            c.execute(models_t.update().where(models_t.c.name == name, models_t.c.live_version == version)
                      .values(public=public, updated=now))

    def delete_model(self, name: str) -> list[str]:
        """Forget a model and its versions; return the digests no other version uses any more."""
        with self._write() as c:
            digests = {r.digest for r in c.execute(sa.select(versions_t.c.digest)
                                                   .where(versions_t.c.model == name))}
            c.execute(versions_t.delete().where(versions_t.c.model == name))
            c.execute(models_t.delete().where(models_t.c.name == name))
            still_used = {r.digest for r in c.execute(sa.select(versions_t.c.digest)
                                                      .where(versions_t.c.digest.in_(digests)))}
        return sorted(digests - still_used)

    # -- jobs ------------------------------------------------------------------------------------

    def create_job(self, job_id: str, model: str, version: int | None, kind: str,
                   stages: Sequence[Mapping[str, Any]], *, status: str = "queued") -> JobRow:
        now = time.time()
        with self._write() as c:
            c.execute(jobs_t.insert().values(
                id=job_id, model=model, version=version, kind=kind, status=status, stage=None,
                stages=json.dumps(list(stages)), error=None, created=now, started=None,
                finished=now if status not in ACTIVE else None))
        row = self.job(job_id)
        assert row is not None
        return row

    def job(self, job_id: str) -> JobRow | None:
        with self._read() as c:
            row = c.execute(sa.select(jobs_t).where(jobs_t.c.id == job_id)).first()
        return _job(row) if row else None

    def jobs(self, *, model: str | None = None, statuses: Sequence[str] = (), limit: int = 100) -> list[JobRow]:
        """Jobs, oldest first, optionally of one model and in some statuses."""
        q = sa.select(jobs_t).order_by(jobs_t.c.seq)
        if model is not None:
            q = q.where(jobs_t.c.model == model)
        if statuses:
            q = q.where(jobs_t.c.status.in_(list(statuses)))
        with self._read() as c:
            return [_job(r) for r in c.execute(q.limit(limit))]

    def claim_job(self, job_id: str, owner: str | None = None, lease: float = 0.0) -> bool:
        """queued -> running, only if still queued and the oldest queued job of its model, and no other
        job of that model runs (a partial unique index): the one runner that claims it runs it.

        ``owner`` and ``lease``: the claiming replica and how long its claim holds without a heartbeat.
        On PostgreSQL the row is taken ``FOR UPDATE SKIP LOCKED``: a replica never waits on a row another
        one is claiming.
        """
        now = time.time()
        older = sa.select(sa.literal(1)).select_from(jobs_t.alias("older")).where(
            sa.text("older.model = jobs.model AND older.status = 'queued' AND older.seq < jobs.seq"))
        pick = sa.select(jobs_t.c.id).where(jobs_t.c.id == job_id, jobs_t.c.status == "queued", ~older.exists())
        if self.engine.dialect.name == "postgresql":
            pick = pick.with_for_update(skip_locked=True)
        try:
            with self._write() as c:
                if c.execute(pick).first() is None:
                    return False
                result = c.execute(jobs_t.update().where(jobs_t.c.id == job_id, jobs_t.c.status == "queued")
                                   .values(status="running", started=now, lease_owner=owner,
                                           lease_expires=now + lease if owner else None))
        except sa.exc.IntegrityError:
            return False        # another job of this model is running
        return result.rowcount == 1

    def renew_leases(self, owner: str, job_ids: Sequence[str], lease: float) -> set[str]:
        """Extend ``owner``'s lease on those running jobs; the ids whose lease it still held."""
        held: set[str] = set()
        if not job_ids:
            return held
        now = time.time()
        with self._write() as c:
            for job_id in job_ids:
                result = c.execute(jobs_t.update().where(
                    jobs_t.c.id == job_id, jobs_t.c.status == "running", jobs_t.c.lease_owner == owner)
                    .values(lease_expires=now + lease))
                if result.rowcount == 1:
                    held.add(job_id)
        return held

    def expired_jobs(self) -> list[JobRow]:
        """Running jobs whose lease ran out: their replica stopped (or lost the database)."""
        with self._read() as c:
            rows = c.execute(sa.select(jobs_t).where(
                jobs_t.c.status == "running", jobs_t.c.lease_expires.is_not(None),
                jobs_t.c.lease_expires < time.time()).order_by(jobs_t.c.seq))
            return [_job(r) for r in rows]

    def take_over(self, job_id: str, owner: str, lease: float) -> bool:
        """Take an expired lease, so that exactly one replica records what happened to the job."""
        now = time.time()
        with self._write() as c:
            result = c.execute(jobs_t.update().where(
                jobs_t.c.id == job_id, jobs_t.c.status == "running", jobs_t.c.lease_expires < now)
                .values(lease_owner=owner, lease_expires=now + lease))
        return result.rowcount == 1

    def lease_owner(self, job_id: str) -> str | None:
        with self._read() as c:
            return c.execute(sa.select(jobs_t.c.lease_owner).where(jobs_t.c.id == job_id)).scalar()

    def update_job(self, job_id: str, **values: Any) -> None:
        """Set ``status``, ``stage``, ``stages`` (list), ``error`` (dict) or ``finished``."""
        for key in ("stages", "error"):
            if key in values and values[key] is not None:
                values[key] = json.dumps(values[key])
        with self._write() as c:
            c.execute(jobs_t.update().where(jobs_t.c.id == job_id).values(**values))

    def job_counts(self) -> dict[str, int]:
        with self._read() as c:
            rows = c.execute(sa.select(jobs_t.c.status, sa.func.count()).group_by(jobs_t.c.status))
            return {r[0]: int(r[1]) for r in rows}

    def add_event(self, job_id: str, kind: str, data: Mapping[str, Any]) -> int:
        with self._write() as c:
            result = c.execute(events_t.insert().values(job_id=job_id, kind=kind, data=json.dumps(data),
                                                        created=time.time()))
            key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    def events(self, job_id: str, after: int = 0) -> list[EventRow]:
        with self._read() as c:
            rows = c.execute(sa.select(events_t).where(events_t.c.job_id == job_id, events_t.c.id > after)
                             .order_by(events_t.c.id))
            return [EventRow(r.id, r.job_id, r.kind, json.loads(r.data), r.created) for r in rows]

    # -- tokens ----------------------------------------------------------------------------------

    def add_token(self, name: str, scope: str, token_hash: str) -> TokenRow:
        now = time.time()
        with self._write() as c:
            result = c.execute(tokens_t.insert().values(name=name, scope=scope, hash=token_hash, created=now))
            key = result.inserted_primary_key
        assert key is not None
        return TokenRow(int(key[0]), name, scope, now)

    def token_by_hash(self, token_hash: str) -> TokenRow | None:
        """The token with that hash, unless it was revoked."""
        with self._read() as c:
            row = c.execute(sa.select(tokens_t).where(tokens_t.c.hash == token_hash,
                                                      tokens_t.c.revoked.is_(None))).first()
        return _token(row) if row else None

    def token_revoked(self, token_hash: str) -> bool:
        with self._read() as c:
            row = c.execute(sa.select(tokens_t.c.revoked).where(tokens_t.c.hash == token_hash)).first()
        return row is not None and row.revoked is not None

    def tokens(self) -> list[TokenRow]:
        """Every token not revoked, oldest first."""
        with self._read() as c:
            rows = c.execute(sa.select(tokens_t).where(tokens_t.c.revoked.is_(None)).order_by(tokens_t.c.id))
            return [_token(r) for r in rows]

    def token_hashes(self) -> dict[str, str]:
        """The hash and scope of every token not revoked: what runtimes check tokens against."""
        with self._read() as c:
            rows = c.execute(sa.select(tokens_t.c.hash, tokens_t.c.scope).where(tokens_t.c.revoked.is_(None)))
            return {r.hash: r.scope for r in rows}

    def revoke_token(self, token_id: int) -> TokenRow | None:
        """Revoke a token for good (its row stays, so a token file holding it is never re-registered);
        the row as it was, or None if there is no such token or it was already revoked."""
        with self._write() as c:
            row = c.execute(sa.select(tokens_t).where(tokens_t.c.id == token_id,
                                                      tokens_t.c.revoked.is_(None))).first()
            if row is None:
                return None
            c.execute(tokens_t.update().where(tokens_t.c.id == token_id).values(revoked=time.time()))
        return _token(row)

    def touch_token(self, token: TokenRow) -> None:
        """Record that ``token`` was used now, at most once per ``LAST_USED_RESOLUTION`` seconds."""
        now = time.time()
        if token.last_used is not None and now - token.last_used < LAST_USED_RESOLUTION:
            return
        with self._write() as c:
            c.execute(tokens_t.update().where(tokens_t.c.id == token.id).values(last_used=now))


def _engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                              pool_size=10, max_overflow=20)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        # Autocommit at the driver level: SQLAlchemy's "begin" hook below issues BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("gazelle_write") else "BEGIN")

    return engine
