"""Sync history: per link, each field that travelled, which way, the deciding rule and when.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-15 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of the model type: a migration never imports application code.
BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "sync_history",
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
        sa.Column("object_type", sa.String(), nullable=False),
        sa.Column("link_id", BigIntPK, nullable=False),
        sa.Column("field", sa.String(), nullable=False),
        sa.Column("direction", sa.String(), nullable=False),
        sa.Column("decided_by", sa.String(), nullable=False),
        sa.Column("origin_modified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["link_id"],
            ["links.id"],
            name="fk_sync_history_link_id_links",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_sync_history"),
    )
    op.create_index(
        "ix_sync_history_link_id_synced_at", "sync_history", ["link_id", "synced_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_sync_history_link_id_synced_at", table_name="sync_history")
    op.drop_table("sync_history")
