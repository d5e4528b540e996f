"""Write-ahead ledger: values about to be written to linked records (pending_writes).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 17:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pending_writes",
        sa.Column("link_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("field", sa.String(), nullable=False),
        sa.Column("target", sa.String(), nullable=False),
        sa.Column("value_hash", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["link_id"],
            ["links.id"],
            name="fk_pending_writes_link_id_links",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("link_id", "field", name="pk_pending_writes"),
    )


def downgrade() -> None:
    op.drop_table("pending_writes")
