"""Resync staging: resync_stage (a resync's copy of Brevo contacts) and resync_checkpoints.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 19:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "resync_stage",
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
        sa.Column("object_type", sa.String(), nullable=False),
        sa.Column("brevo_id", sa.String(), nullable=False),
        sa.Column("identity_key", sa.String(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("matched", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_resync_stage"),
    )
    op.create_index(
        "ix_resync_stage_object_type_identity_key", "resync_stage", ["object_type", "identity_key"]
    )
    op.create_index(
        "ix_resync_stage_object_type_brevo_id", "resync_stage", ["object_type", "brevo_id"]
    )
    op.create_index(
        "ix_resync_stage_object_type_matched_id", "resync_stage", ["object_type", "matched", "id"]
    )
    op.create_table(
        "resync_checkpoints",
        sa.Column("object_type", sa.String(), nullable=False),
        sa.Column("mode", sa.String(), nullable=False),
        sa.Column("phase", sa.String(), nullable=False),
        sa.Column("after", sa.String(), nullable=True),
        sa.Column("last_stage_id", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("object_type", name="pk_resync_checkpoints"),
    )


def downgrade() -> None:
    op.drop_table("resync_checkpoints")
    op.drop_index("ix_resync_stage_object_type_matched_id", table_name="resync_stage")
    op.drop_index("ix_resync_stage_object_type_brevo_id", table_name="resync_stage")
    op.drop_index("ix_resync_stage_object_type_identity_key", table_name="resync_stage")
    op.drop_table("resync_stage")
