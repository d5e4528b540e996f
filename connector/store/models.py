"""SQLAlchemy models of the state database (DESIGN §4).

Alembic owns the schema: a change here needs a new revision under ``migrations/versions/``
(``tests/test_store_migrations.py`` fails while the two disagree).

Conventions:

- every timestamp is a timezone-aware UTC ``datetime`` (:class:`UTCDateTime` refuses naive
  values and turns SQLite's naive strings back into aware ones);
- JSON columns are replaced, not mutated in place (in-place changes are not tracked);
- string enums are plain ``VARCHAR`` in the database and ``Literal`` types in Python, so a new
  value needs no migration but mypy still checks the spelling.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

System = Literal["hubspot", "brevo"]
InboxSource = Literal["hubspot", "brevo", "pull"]
InboxStatus = Literal["pending", "processing", "done", "failed", "dead"]
JobStatus = Literal["pending", "running", "succeeded", "failed", "dead"]
EnrollmentSource = Literal["new", "existing"]
EnrollmentStatus = Literal["active", "done", "skipped", "dead", "cancelled"]
RunKind = Literal["pull", "resync", "worker", "reconcile", "test"]
RunStatus = Literal["running", "ok", "failed", "interrupted"]
HistoryDirection = Literal["to_brevo", "to_hubspot"]

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (the default of every timestamp column)."""
    return datetime.now(UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that only accepts and only returns aware UTC datetimes.

    SQLite has no time zones: values are stored as UTC wall-clock strings, so ``<`` / ``>``
    comparisons in SQL stay correct, and are read back with ``tzinfo=UTC``.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is UTC:  # the usual case (utcnow, parsed API times): no conversion
            return value.replace(tzinfo=None) if dialect.name == "sqlite" else value
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; use an aware UTC time")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


#: Autoincrement primary key: BIGINT (BIGSERIAL) on PostgreSQL, INTEGER (the rowid) on SQLite.
BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class Base(DeclarativeBase):
    """Declarative base: shared metadata with a fixed constraint naming convention."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - read once by SQLAlchemy at class creation
        datetime: UTCDateTime(),
        str: sa.String(),
        int: sa.Integer(),
    }


class Link(Base):
    """One synced record pair: the HubSpot id and the Brevo id of the same contact (etc.)."""

    __tablename__ = "links"
    __table_args__ = (
        sa.UniqueConstraint("object_type", "hubspot_id"),
        sa.UniqueConstraint("object_type", "brevo_id"),
        sa.Index(None, "object_type", "identity_key"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    object_type: Mapped[str]
    hubspot_id: Mapped[str | None]
    brevo_id: Mapped[str | None]
    #: Normalised email (trimmed, lower-case).
    identity_key: Mapped[str | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    field_states: Mapped[list[FieldState]] = relationship(
        back_populates="link",
        cascade="all, delete-orphan",
        passive_deletes=True,
        lazy="raise",
    )


class FieldState(Base):
    """Sync-origin ledger: per link and field, the hash of the last synced value (merge base)."""

    __tablename__ = "field_state"

    link_id: Mapped[int] = mapped_column(
        BigIntPK, sa.ForeignKey("links.id", ondelete="CASCADE"), primary_key=True
    )
    field: Mapped[str] = mapped_column(primary_key=True)
    #: Hex SHA-256 of the normalised value (indexed: who holds a phone number, see
    #: :func:`connector.store.links.holders_of_values`).
    value_hash: Mapped[str] = mapped_column(index=True)
    #: The side the value came from.
    origin: Mapped[System] = mapped_column(sa.String())
    #: The side the engine wrote it to (its echo will carry this hash), if any.
    written_to: Mapped[System | None] = mapped_column(sa.String())
    synced_at: Mapped[datetime] = mapped_column(default=utcnow)

    link: Mapped[Link] = relationship(back_populates="field_states", lazy="raise")


class PendingWrite(Base):
    """Write-ahead ledger: a value the engine is about to write to a linked record's field.

    Recorded before the write and deleted with the ledger commit after it. A row that is still
    there means the outcome of that write is unknown (the process died, or the answer was
    lost): if the target side now holds exactly this value, the write landed and the value is
    the merge base, not a person's change — so a later edit on the source side still wins.
    """

    __tablename__ = "pending_writes"

    link_id: Mapped[int] = mapped_column(
        BigIntPK, sa.ForeignKey("links.id", ondelete="CASCADE"), primary_key=True
    )
    field: Mapped[str] = mapped_column(primary_key=True)
    #: The side the value is written to.
    target: Mapped[System] = mapped_column(sa.String())
    #: Hex SHA-256 of the canonical value written (as in :class:`FieldState`).
    value_hash: Mapped[str]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SyncHistory(Base):
    """One field value that travelled: which way, the rule that decided it, when (no values)."""

    __tablename__ = "sync_history"
    __table_args__ = (sa.Index(None, "link_id", "synced_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    object_type: Mapped[str]
    link_id: Mapped[int] = mapped_column(BigIntPK, sa.ForeignKey("links.id", ondelete="CASCADE"))
    #: The mapping's field key.
    field: Mapped[str]
    direction: Mapped[HistoryDirection] = mapped_column(sa.String())
    #: The plan's ``rule_used`` (``hubspot_changed``, ``latest_wins``, ``create``, …).
    decided_by: Mapped[str]
    #: When the source side last modified the record, if known.
    origin_modified_at: Mapped[datetime | None]
    synced_at: Mapped[datetime] = mapped_column(default=utcnow)


class Cursor(Base):
    """Incremental-pull position per system and object type (committed after its records)."""

    __tablename__ = "cursors"

    system: Mapped[System] = mapped_column(sa.String(), primary_key=True)
    object_type: Mapped[str] = mapped_column(primary_key=True)
    last_value: Mapped[datetime | None]
    #: ``hs_object_id`` tie-breaker inside one ``last_value``.
    last_id: Mapped[str | None]
    #: Ids already processed whose modification time equals ``last_value``.
    boundary_ids: Mapped[list[str]] = mapped_column(sa.JSON(), default=list)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class InboxItem(Base):
    """A webhook event or dirty key waiting to be processed."""

    __tablename__ = "inbox"
    __table_args__ = (sa.Index(None, "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    source: Mapped[InboxSource] = mapped_column(sa.String())
    dedup_key: Mapped[str] = mapped_column(unique=True)
    object_type: Mapped[str]
    object_id: Mapped[str]
    event_type: Mapped[str]
    payload: Mapped[dict[str, Any]] = mapped_column(sa.JSON(), default=dict)
    status: Mapped[InboxStatus] = mapped_column(
        sa.String(), default="pending", server_default="pending"
    )
    attempts: Mapped[int] = mapped_column(default=0, server_default=sa.text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_by: Mapped[str | None]
    claimed_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(sa.Text())
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Job(Base):
    """One durable, idempotent post-sync hook step; a succeeded step never runs again.

    ``idempotency_key`` (``hook:contact:step``) is also the key the step hands to the outside
    world (the e-mail's ``IdempotencyKey``, the booking's key, the note's marker), so a step
    repeated after a crash is recognised there. ``state`` holds what a step decided before its
    external call (the owner picked, the slot chosen, "calling"), so a repeat decides the same.
    Claims (``claimed_by``/``claimed_until``) let several daemons share the table.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        sa.Index(None, "status", "next_attempt_at"),
        sa.Index(None, "hook", "hubspot_id"),
        sa.Index(None, "enrollment_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(unique=True)
    hook: Mapped[str]
    step: Mapped[str]
    subject: Mapped[str]
    status: Mapped[JobStatus] = mapped_column(
        sa.String(), default="pending", server_default="pending"
    )
    attempts: Mapped[int] = mapped_column(default=0, server_default=sa.text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    result: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON(none_as_null=True))
    last_error: Mapped[str | None] = mapped_column(sa.Text())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    #: The contact's HubSpot id (the subject of every hook today).
    hubspot_id: Mapped[str | None]
    enrollment_id: Mapped[int | None] = mapped_column(
        BigIntPK, sa.ForeignKey("enrollments.id", ondelete="CASCADE")
    )
    #: The step's input (e.g. a lifecycle change's old and new stage).
    payload: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON(none_as_null=True))
    #: What the step decided before its external call (kept across attempts).
    state: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON(none_as_null=True))
    claimed_by: Mapped[str | None]
    claimed_until: Mapped[datetime | None]


class Enrollment(Base):
    """A contact enrolled in a hook (onboarding): at most once per hook and HubSpot id.

    ``identity_hash`` (SHA-256 of the normalised e-mail, never the address) recognises the
    same person under a new HubSpot id (``onboarding.reenroll``, ``max_emails_per_contact``).
    """

    __tablename__ = "enrollments"
    __table_args__ = (
        sa.UniqueConstraint("hook", "hubspot_id"),
        sa.Index(None, "hook", "identity_hash"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    hook: Mapped[str]
    hubspot_id: Mapped[str]
    brevo_id: Mapped[str | None]
    identity_hash: Mapped[str | None]
    #: ``new`` (a contact created after the hook was enabled) or ``existing`` (enrolled by
    #: ``connector hooks enroll``).
    source: Mapped[EnrollmentSource] = mapped_column(sa.String())
    status: Mapped[EnrollmentStatus] = mapped_column(
        sa.String(), default="active", server_default="active"
    )
    reason: Mapped[str | None] = mapped_column(sa.Text())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class PurgedIdentity(Base):
    """A privacy tombstone: the SHA-256 of one id or e-mail of a person purged for GDPR.

    Webhooks about the person can still arrive after the purge (our own deletion of the Brevo
    contact fires one): the worker deletes such inbox rows on sight instead of keeping them
    until retention. Only hashes are kept, never the address; they expire with
    ``sync.retention_days``.
    """

    __tablename__ = "purged_identities"
    __table_args__ = (sa.Index("ix_purged_identities_purged_at", "purged_at"),)

    hash: Mapped[str] = mapped_column(primary_key=True)
    purged_at: Mapped[datetime] = mapped_column(default=utcnow)


class EmailEventEntry(Base):
    """One Brevo e-mail event kind of one campaign on one HubSpot contact: its counts, its
    timeline note, whether the contact's e-mail properties wait to be written.

    ``note_state``: ``none`` (no note yet) → ``creating`` (recorded BEFORE the create call:
    after a crash, the note is looked for by its marker before another is made) → ``created``
    (``note_id``); ``off`` when no note is wanted. ``note_count`` is the count the note shows.
    """

    __tablename__ = "email_event_entries"
    __table_args__ = (
        sa.UniqueConstraint("hubspot_id", "kind", "campaign"),
        sa.Index(None, "note_state"),
        sa.Index(None, "props_pending"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    hubspot_id: Mapped[str]
    kind: Mapped[str]
    campaign: Mapped[str]
    campaign_name: Mapped[str | None]
    count: Mapped[int] = mapped_column(default=0, server_default=sa.text("0"))
    uniques: Mapped[int] = mapped_column(default=0, server_default=sa.text("0"))
    first_at: Mapped[datetime]
    last_at: Mapped[datetime]
    detail: Mapped[str | None] = mapped_column(sa.Text())
    note_state: Mapped[str] = mapped_column(default="none", server_default="none")
    note_id: Mapped[str | None]
    note_count: Mapped[int] = mapped_column(default=0, server_default=sa.text("0"))
    note_attempts: Mapped[int] = mapped_column(default=0, server_default=sa.text("0"))
    props_pending: Mapped[bool] = mapped_column(default=True, server_default=sa.true())
    #: when events were last added (the properties read before then are out of date)
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class EmailEventSeen(Base):
    """The dedup key of a Brevo e-mail event already counted (a retried inbox item is not
    counted twice); expires with ``sync.retention_days``."""

    __tablename__ = "email_event_seen"
    __table_args__ = (sa.Index(None, "seen_at"),)

    key: Mapped[str] = mapped_column(primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class HookState(Base):
    """Per hook: when it was enabled (only contacts created later enroll) and the
    round-robin position (how many owners it assigned)."""

    __tablename__ = "hook_state"

    hook: Mapped[str] = mapped_column(primary_key=True)
    enabled_at: Mapped[datetime | None]
    sequence: Mapped[int] = mapped_column(default=0, server_default=sa.text("0"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Run(Base):
    """One pull / resync / worker / reconcile pass: what ``status`` and the dashboard show."""

    __tablename__ = "runs"
    __table_args__ = (sa.Index(None, "kind", "system", "object_type", "started_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    kind: Mapped[RunKind] = mapped_column(sa.String())
    system: Mapped[System | None] = mapped_column(sa.String())
    object_type: Mapped[str | None]
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    status: Mapped[RunStatus] = mapped_column(
        sa.String(), default="running", server_default="running"
    )
    counts: Mapped[dict[str, int]] = mapped_column(sa.JSON(), default=dict)
    error: Mapped[str | None] = mapped_column(sa.Text())


class DeadLetter(Base):
    """A record that kept failing (``connector dlq list|retry``); it never blocks the others."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    system: Mapped[System] = mapped_column(sa.String())
    object_type: Mapped[str]
    object_id: Mapped[str | None]
    identity_key: Mapped[str | None]
    operation: Mapped[str]
    payload: Mapped[dict[str, Any]] = mapped_column(sa.JSON(), default=dict)
    error: Mapped[str] = mapped_column(sa.Text())
    attempts: Mapped[int] = mapped_column(default=0, server_default=sa.text("0"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None]


class SkippedRecord(Base):
    """A record deliberately not synced (e.g. a HubSpot contact without email), with why."""

    __tablename__ = "skipped_records"

    system: Mapped[System] = mapped_column(sa.String(), primary_key=True)
    object_type: Mapped[str] = mapped_column(primary_key=True)
    object_id: Mapped[str] = mapped_column(primary_key=True)
    reason: Mapped[str]
    first_seen: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)


class OAuthToken(Base):
    """The stored OAuth tokens of one provider (the refresh token survives restarts)."""

    __tablename__ = "oauth_tokens"

    provider: Mapped[str] = mapped_column(primary_key=True)
    refresh_token: Mapped[str] = mapped_column(sa.Text())
    access_token: Mapped[str | None] = mapped_column(sa.Text())
    expires_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Lease(Base):
    """A named, expiring lock shared by the daemons of one database (see ``leases.py``)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(primary_key=True)
    holder: Mapped[str]
    expires_at: Mapped[datetime]


class ResyncStage(Base):
    """A resync's copy of one Brevo contact, kept only while that resync runs.

    Brevo cannot read contacts by email in batches, so a resync streams Brevo once into this
    table and pairs HubSpot's pages against it with SQL: memory stays flat however large the
    account. The rows are deleted when the resync ends.
    """

    __tablename__ = "resync_stage"
    __table_args__ = (
        sa.Index(None, "object_type", "identity_key"),
        sa.Index(None, "object_type", "brevo_id"),
        sa.Index(None, "object_type", "matched", "id"),
        sa.Index(None, "object_type", "sms"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    object_type: Mapped[str]
    brevo_id: Mapped[str]
    identity_key: Mapped[str | None]
    payload: Mapped[dict[str, Any]] = mapped_column(sa.JSON())
    #: The contact's SMS number, digits only (a phone written to Brevo must not be another
    #: contact's: Brevo would match the write to that contact).
    sms: Mapped[str | None]
    matched: Mapped[bool] = mapped_column(default=False, server_default=sa.false())


class ResyncCheckpoint(Base):
    """Where a running resync of one object type stands, so an interrupted one resumes."""

    __tablename__ = "resync_checkpoints"

    object_type: Mapped[str] = mapped_column(primary_key=True)
    mode: Mapped[str]
    phase: Mapped[str]
    after: Mapped[str | None]
    last_stage_id: Mapped[int] = mapped_column(sa.BigInteger(), default=0, server_default="0")
    counts: Mapped[dict[str, int]] = mapped_column(sa.JSON(), default=dict)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AssociationState(Base):
    """The association set last synced for one record and one associated type.

    Keyed by the record's HubSpot id; ``to_hubspot_ids`` holds the HubSpot ids of the
    associated records (sorted) as both sides agreed at the last sync: the base of the 3-way
    merge of associations, so a link removed on one side is removed on the other too rather
    than added back. Ids only, never values.
    """

    __tablename__ = "association_state"

    object_type: Mapped[str] = mapped_column(primary_key=True)
    hubspot_id: Mapped[str] = mapped_column(primary_key=True)
    to_type: Mapped[str] = mapped_column(primary_key=True)
    to_hubspot_ids: Mapped[list[str]] = mapped_column(sa.JSON(), default=list)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class RollupValue(Base):
    """Roll-ups (:mod:`connector.objects.rollups`): per HubSpot contact and Brevo attribute, the
    hash of the value last written to the linked Brevo contact (only changes are written)."""

    __tablename__ = "rollup_values"

    hubspot_id: Mapped[str] = mapped_column(primary_key=True)
    attribute: Mapped[str] = mapped_column(primary_key=True)
    #: Hex SHA-256 of the canonical value (never the value).
    value_hash: Mapped[str]
    written_at: Mapped[datetime] = mapped_column(default=utcnow)


class RollupMember(Base):
    """Roll-ups: which HubSpot records counted for which contact at the last refresh, so the
    deletion of a ticket or a meeting still names the contacts to refresh."""

    __tablename__ = "rollup_members"
    __table_args__ = (sa.Index(None, "object_type", "contact_id"),)

    object_type: Mapped[str] = mapped_column(primary_key=True)
    record_id: Mapped[str] = mapped_column(primary_key=True)
    contact_id: Mapped[str] = mapped_column(primary_key=True)


__all__ = [
    "NAMING_CONVENTION",
    "AssociationState",
    "Base",
    "BigIntPK",
    "Cursor",
    "DeadLetter",
    "EmailEventEntry",
    "EmailEventSeen",
    "Enrollment",
    "EnrollmentSource",
    "EnrollmentStatus",
    "FieldState",
    "HistoryDirection",
    "HookState",
    "InboxItem",
    "InboxSource",
    "InboxStatus",
    "Job",
    "JobStatus",
    "Lease",
    "Link",
    "OAuthToken",
    "PendingWrite",
    "PurgedIdentity",
    "ResyncCheckpoint",
    "ResyncStage",
    "RollupMember",
    "RollupValue",
    "Run",
    "RunKind",
    "RunStatus",
    "SkippedRecord",
    "SyncHistory",
    "System",
    "UTCDateTime",
    "utcnow",
]
