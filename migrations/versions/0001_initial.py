"""Initial schema: links, field_state, cursors, inbox, jobs, runs, dead_letters,
skipped_records, oauth_tokens, leases.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the model types: a migration never imports application code.
BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "links",
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
        sa.Column("object_type", sa.String(), nullable=False),
        sa.Column("hubspot_id", sa.String(), nullable=True),
        sa.Column("brevo_id", sa.String(), nullable=True),
        sa.Column("identity_key", sa.String(), nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_links"),
        sa.UniqueConstraint("object_type", "hubspot_id", name="uq_links_object_type_hubspot_id"),
        sa.UniqueConstraint("object_type", "brevo_id", name="uq_links_object_type_brevo_id"),
    )
    op.create_index(
        "ix_links_object_type_identity_key", "links", ["object_type", "identity_key"]
    )

    op.create_table(
        "field_state",
        sa.Column("link_id", BigIntPK, nullable=False),
        sa.Column("field", sa.String(), nullable=False),
        sa.Column("value_hash", sa.String(), nullable=False),
        sa.Column("origin", sa.String(), nullable=False),
        sa.Column("written_to", sa.String(), nullable=True),
        _ts("synced_at"),
        sa.ForeignKeyConstraint(
            ["link_id"],
            ["links.id"],
            name="fk_field_state_link_id_links",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("link_id", "field", name="pk_field_state"),
    )

    op.create_table(
        "cursors",
        sa.Column("system", sa.String(), nullable=False),
        sa.Column("object_type", sa.String(), nullable=False),
        _ts("last_value", nullable=True),
        sa.Column("last_id", sa.String(), nullable=True),
        sa.Column("boundary_ids", sa.JSON(), nullable=False),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("system", "object_type", name="pk_cursors"),
    )

    op.create_table(
        "inbox",
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("dedup_key", sa.String(), nullable=False),
        sa.Column("object_type", sa.String(), nullable=False),
        sa.Column("object_id", sa.String(), nullable=False),
        sa.Column("event_type", sa.String(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        _ts("next_attempt_at"),
        sa.Column("claimed_by", sa.String(), nullable=True),
        _ts("claimed_until", nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        _ts("received_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_inbox"),
        sa.UniqueConstraint("dedup_key", name="uq_inbox_dedup_key"),
    )
    op.create_index("ix_inbox_status_next_attempt_at", "inbox", ["status", "next_attempt_at"])

    op.create_table(
        "jobs",
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
        sa.Column("idempotency_key", sa.String(), nullable=False),
        sa.Column("hook", sa.String(), nullable=False),
        sa.Column("step", sa.String(), nullable=False),
        sa.Column("subject", sa.String(), nullable=False),
        sa.Column("status", sa.String(), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        _ts("next_attempt_at"),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sa.UniqueConstraint("idempotency_key", name="uq_jobs_idempotency_key"),
    )
    op.create_index("ix_jobs_status_next_attempt_at", "jobs", ["status", "next_attempt_at"])

    op.create_table(
        "runs",
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("system", sa.String(), nullable=True),
        sa.Column("object_type", sa.String(), nullable=True),
        _ts("started_at"),
        _ts("finished_at", nullable=True),
        sa.Column("status", sa.String(), server_default="running", nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
    )
    op.create_index(
        "ix_runs_kind_system_object_type_started_at",
        "runs",
        ["kind", "system", "object_type", "started_at"],
    )

    op.create_table(
        "dead_letters",
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
        sa.Column("system", sa.String(), nullable=False),
        sa.Column("object_type", sa.String(), nullable=False),
        sa.Column("object_id", sa.String(), nullable=True),
        sa.Column("identity_key", sa.String(), nullable=True),
        sa.Column("operation", sa.String(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        _ts("created_at"),
        _ts("resolved_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_dead_letters"),
    )

    op.create_table(
        "skipped_records",
        sa.Column("system", sa.String(), nullable=False),
        sa.Column("object_type", sa.String(), nullable=False),
        sa.Column("object_id", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        _ts("first_seen"),
        _ts("last_seen"),
        sa.PrimaryKeyConstraint("system", "object_type", "object_id", name="pk_skipped_records"),
    )

    op.create_table(
        "oauth_tokens",
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("refresh_token", sa.Text(), nullable=False),
        sa.Column("access_token", sa.Text(), nullable=True),
        _ts("expires_at", nullable=True),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("provider", name="pk_oauth_tokens"),
    )

    op.create_table(
        "leases",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("holder", sa.String(), nullable=False),
        _ts("expires_at"),
        sa.PrimaryKeyConstraint("name", name="pk_leases"),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_table("oauth_tokens")
    op.drop_table("skipped_records")
    op.drop_table("dead_letters")
    op.drop_index("ix_runs_kind_system_object_type_started_at", table_name="runs")
    op.drop_table("runs")
    op.drop_index("ix_jobs_status_next_attempt_at", table_name="jobs")
    op.drop_table("jobs")
    op.drop_index("ix_inbox_status_next_attempt_at", table_name="inbox")
    op.drop_table("inbox")
    op.drop_table("cursors")
    op.drop_table("field_state")
    op.drop_index("ix_links_object_type_identity_key", table_name="links")
    op.drop_table("links")
