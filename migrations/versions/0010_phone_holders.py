"""Who holds a phone number: the ledger's value hashes and the resync stage's SMS, indexed.

Brevo keeps an SMS number on one contact only, and its imports (and ``updateEnabled``
creates) match a row to the contact holding the row's SMS. Before a phone is written to
Brevo the engine looks up who holds it: a linked pair (``field_state.value_hash``) or, during
a resync, a staged Brevo contact (``resync_stage.sms``).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 21:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_field_state_value_hash", "field_state", ["value_hash"])
    with op.batch_alter_table("resync_stage") as batch:
        batch.add_column(sa.Column("sms", sa.String(), nullable=True))
    op.create_index("ix_resync_stage_object_type_sms", "resync_stage", ["object_type", "sms"])


def downgrade() -> None:
    op.drop_index("ix_resync_stage_object_type_sms", table_name="resync_stage")
    with op.batch_alter_table("resync_stage") as batch:
        batch.drop_column("sms")
    op.drop_index("ix_field_state_value_hash", table_name="field_state")
