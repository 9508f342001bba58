"""The schema as ``create_all`` made it before migrations existed (models, versions, jobs, events, tokens).

Written out, not taken from ``store.metadata``: a revision is frozen, while the live tables change.

Revision ID: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("public", sa.Boolean, nullable=False),
        sa.Column("live_version", sa.Integer, nullable=True),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("updated", sa.Double, nullable=False),
    )
    op.create_table(
        "versions",
        sa.Column("model", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("digest", sa.String(80), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("ref", sa.Text, nullable=True),
        sa.Column("url", sa.Text, nullable=True),
        sa.Column("manifest", sa.Text, nullable=False),
        sa.Column("public", sa.Boolean, nullable=False),
        sa.Column("replicas", sa.Integer, nullable=False),
        sa.Column("resources", sa.Text, nullable=True),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("updated", sa.Double, nullable=False),
        sa.UniqueConstraint("model", "digest", name="versions_model_digest"),
    )
    op.create_table(
        "jobs",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(32), nullable=False, unique=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("stage", sa.String(16), nullable=True),
        sa.Column("stages", sa.Text, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("started", sa.Double, nullable=True),
        sa.Column("finished", sa.Double, nullable=True),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_jobs_model", "jobs", ["model"])
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_table(
        "job_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("created", sa.Double, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_job_events_job_id", "job_events", ["job_id"])
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created", sa.Double, nullable=False),
        sa.Column("last_used", sa.Double, nullable=True),
        sa.Column("revoked", sa.Double, nullable=True),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    for table in ("tokens", "job_events", "jobs", "versions", "models"):
        op.drop_table(table)
