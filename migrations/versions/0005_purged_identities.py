"""Privacy tombstones: purged_identities (hashes of a purged person's ids and e-mails).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 15:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "purged_identities",
        sa.Column("hash", sa.String(), nullable=False),
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("hash"),
    )
    op.create_index("ix_purged_identities_purged_at", "purged_identities", ["purged_at"])


def downgrade() -> None:
    op.drop_index("ix_purged_identities_purged_at", table_name="purged_identities")
    op.drop_table("purged_identities")
