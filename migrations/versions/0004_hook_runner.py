"""Post-sync hook runner: enrollments, hook_state, and claims/inputs/state on jobs.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the model types: a migration never imports application code.
BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "enrollments",
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
        sa.Column("hook", sa.String(), nullable=False),
        sa.Column("hubspot_id", sa.String(), nullable=False),
        sa.Column("brevo_id", sa.String(), nullable=True),
        sa.Column("identity_hash", sa.String(), nullable=True),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("status", sa.String(), server_default="active", nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_enrollments"),
        sa.UniqueConstraint("hook", "hubspot_id", name="uq_enrollments_hook_hubspot_id"),
    )
    op.create_index("ix_enrollments_hook_identity_hash", "enrollments", ["hook", "identity_hash"])
    op.create_table(
        "hook_state",
        sa.Column("hook", sa.String(), nullable=False),
        _ts("enabled_at", nullable=True),
        sa.Column("sequence", sa.Integer(), server_default=sa.text("0"), nullable=False),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("hook", name="pk_hook_state"),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("hubspot_id", sa.String(), nullable=True))
        batch.add_column(sa.Column("enrollment_id", BigIntPK, nullable=True))
        batch.add_column(sa.Column("payload", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("state", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("claimed_by", sa.String(), nullable=True))
        batch.add_column(sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True))
        batch.create_foreign_key(
            "fk_jobs_enrollment_id_enrollments",
            "enrollments",
            ["enrollment_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch.create_index("ix_jobs_hook_hubspot_id", ["hook", "hubspot_id"])
        batch.create_index("ix_jobs_enrollment_id", ["enrollment_id"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_enrollment_id")
        batch.drop_index("ix_jobs_hook_hubspot_id")
        batch.drop_constraint("fk_jobs_enrollment_id_enrollments", type_="foreignkey")
        batch.drop_column("claimed_until")
        batch.drop_column("claimed_by")
        batch.drop_column("state")
        batch.drop_column("payload")
        batch.drop_column("enrollment_id")
        batch.drop_column("hubspot_id")
    op.drop_table("hook_state")
    op.drop_index("ix_enrollments_hook_identity_hash", table_name="enrollments")
    op.drop_table("enrollments")
