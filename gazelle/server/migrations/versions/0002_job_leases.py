"""Jobs carry a lease (owner, expiry) and at most one job per model runs, enforced by a partial index.

Revision ID: 0002
Revises: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(64), nullable=True))
        batch.add_column(sa.Column("lease_expires", sa.Double, nullable=True))
    # Before this index one runner ran everything, so two running jobs of one model are leftovers of a
    # crash: keep the newest and fail the rest, or the index cannot be made.
    op.execute(sa.text(
        "UPDATE jobs SET status = 'failed' WHERE status = 'running' AND seq < "
        "(SELECT MAX(j2.seq) FROM jobs j2 WHERE j2.model = jobs.model AND j2.status = 'running')"))
    op.create_index("jobs_one_running_per_model", "jobs", ["model"], unique=True,
                    postgresql_where=sa.text("status = 'running'"), sqlite_where=sa.text("status = 'running'"))


def downgrade() -> None:
    op.drop_index("jobs_one_running_per_model", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("lease_expires")
        batch.drop_column("lease_owner")
