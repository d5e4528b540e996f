"""Roll-ups: rollup_values (hash of each attribute last written) and rollup_members.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 17:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rollup_values",
        sa.Column("hubspot_id", sa.String(), nullable=False),
        sa.Column("attribute", sa.String(), nullable=False),
        sa.Column("value_hash", sa.String(), nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("hubspot_id", "attribute", name="pk_rollup_values"),
    )
    op.create_table(
        "rollup_members",
        sa.Column("object_type", sa.String(), nullable=False),
        sa.Column("record_id", sa.String(), nullable=False),
        sa.Column("contact_id", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint(
            "object_type", "record_id", "contact_id", name="pk_rollup_members"
        ),
    )
    op.create_index(
        "ix_rollup_members_object_type_contact_id",
        "rollup_members",
        ["object_type", "contact_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_rollup_members_object_type_contact_id", table_name="rollup_members")
    op.drop_table("rollup_members")
    op.drop_table("rollup_values")
