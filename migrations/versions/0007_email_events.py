"""Brevo e-mail events on HubSpot: email_event_entries (per contact, kind and campaign: counts
and the timeline note) and email_event_seen (events already counted).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 17:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of the model type: a migration never imports application code.
BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "email_event_entries",
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
        sa.Column("hubspot_id", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("campaign", sa.String(), nullable=False),
        sa.Column("campaign_name", sa.String(), nullable=True),
        sa.Column("count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("uniques", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("note_state", sa.String(), server_default="none", nullable=False),
        sa.Column("note_id", sa.String(), nullable=True),
        sa.Column("note_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("note_attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("props_pending", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_email_event_entries"),
        sa.UniqueConstraint(
            "hubspot_id",
            "kind",
            "campaign",
            name="uq_email_event_entries_hubspot_id_kind_campaign",
        ),
    )
    op.create_index(
        "ix_email_event_entries_note_state", "email_event_entries", ["note_state"]
    )
    op.create_index(
        "ix_email_event_entries_props_pending", "email_event_entries", ["props_pending"]
    )
    op.create_table(
        "email_event_seen",
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_email_event_seen"),
    )
    op.create_index("ix_email_event_seen_seen_at", "email_event_seen", ["seen_at"])


def downgrade() -> None:
    op.drop_index("ix_email_event_seen_seen_at", table_name="email_event_seen")
    op.drop_table("email_event_seen")
    op.drop_index("ix_email_event_entries_props_pending", table_name="email_event_entries")
    op.drop_index("ix_email_event_entries_note_state", table_name="email_event_entries")
    op.drop_table("email_event_entries")
